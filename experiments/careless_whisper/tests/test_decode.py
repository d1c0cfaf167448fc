"""Decoder rules (brief test 8) on scripted logits."""

import pytest
import torch

from ..decode import first_unstable


def rows_with(values: dict[tuple[int, int], float], n: int, vocab: int = 6) -> torch.Tensor:
    rows = torch.zeros(n, vocab)
    for (i, t), v in values.items():
        rows[i, t] = v
    return rows


def test_a_tail_token_is_dropped_only_when_its_logit_fell_and_it_lost_the_argmax():
    tokens, previous = [1, 2, 3], [5.0, 5.0, 5.0]
    # token 3 (last): logit fell 5 -> 4 but is still the argmax: stable
    assert first_unstable(tokens, previous, rows_with({(0, 1): 9, (1, 2): 9, (2, 3): 4.0}, 3), 2) is None
    # token 3: logit fell and another token is now the argmax: dropped
    assert first_unstable(tokens, previous, rows_with({(0, 1): 9, (1, 2): 9, (2, 3): 4.0, (2, 4): 4.5}, 3), 2) == 2
    # token 2: logit rose although it is not the argmax: stable
    assert first_unstable(tokens, previous, rows_with({(1, 2): 6.0, (1, 5): 7.0, (2, 3): 9}, 3), 2) is None
    # the middle token breaks first: everything from it on goes
    assert first_unstable(tokens, previous, rows_with({(1, 2): 1.0, (1, 5): 7.0, (2, 4): 9}, 3), 2) == 1


def test_tokens_older_than_the_look_back_are_committed():
    tokens, previous = [1, 2, 3, 4], [5.0] * 4
    rows = rows_with({(0, 0): 9.0, (2, 3): 9, (3, 4): 9}, 4)  # token 1 collapsed completely
    assert first_unstable(tokens, previous, rows, 2) is None
    assert first_unstable(tokens, previous, rows, 4) == 0


def test_streams_longer_than_30_s_start_new_windows_and_stay_bounded(tmp_path):
    """A random tiny Whisper (fast) on 65 s of noise: no error, encoder cache <= 1500 frames,
    emission times monotone and inside the audio, the token prefix carried across windows."""

    import numpy as np

    from ..decode import StreamingTranscriber, Vocabulary
    from ..encoder import Chunking
    from ..weights import build_model, package_files
    from .test_weights import tiny_variables

    _, data_dir = package_files("tiny.en")
    vocab = Vocabulary(data_dir)
    rng = np.random.default_rng(0)
    v = tiny_variables(rng, d=16, heads=2, ffn=32, vocab=51864, layers=(1, 1), frames=1500, targets=448)
    model = build_model(v, {"sot": vocab.start[0], "eot": vocab.eot, "no_timestamps": vocab.start[-1]})
    stream = StreamingTranscriber(model, vocab, Chunking(1000), max_new=3)
    audio = (rng.normal(size=16000 * 65) * 0.1).astype(np.float32)
    longest = 0
    for i in range(0, len(audio), 16000):
        stream.push(audio[i : i + 16000])
        longest = max(longest, stream.encoder.done)
    result = stream.finish()
    assert longest <= 1500 and stream.window_mel > 0
    assert result.emitted_at == sorted(result.emitted_at) and max(result.emitted_at) <= 65.1
    assert len(result.tokens) == len(result.emitted_at) > 0


# ---- streaming decoders on a scripted model -----------------------------------------------------
class ScriptedWhisper(torch.nn.Module):
    """Stands in for WhisperForConditionalGeneration in the decoders: the "hidden state" at each
    position is the log-probability row ``script(prefix, frames)`` and ``proj_out`` is the identity,
    so a test decides exactly what the model prefers after every prefix at every chunk."""

    def __init__(self, script, vocab_size: int, n_start: int):
        super().__init__()
        from types import SimpleNamespace

        self.script, self.vocab_size, self.n_start = script, vocab_size, n_start
        self.config = SimpleNamespace(max_target_positions=448)
        self.model = SimpleNamespace(decoder=self._decoder, encoder=None)
        self.proj_out = torch.nn.Identity()
        self.calls = 0

    def _decoder(self, input_ids, encoder_hidden_states, past_key_values=None, use_cache=False):
        from types import SimpleNamespace

        self.calls += 1
        frames = encoder_hidden_states.shape[1]
        if past_key_values is not None:  # the greedy decoder's cache: remember the prefix ourselves
            prefix = getattr(past_key_values, "prefix", [])
            full = prefix + input_ids[0].tolist()
            past_key_values.prefix = full
            rows = [self._row(full[: len(prefix) + i + 1], frames) for i in range(input_ids.shape[1])]
            return SimpleNamespace(last_hidden_state=torch.stack(rows)[None])
        out = [torch.stack([self._row(ids[: i + 1], frames) for i in range(len(ids))]) for ids in input_ids.tolist()]
        return SimpleNamespace(last_hidden_state=torch.stack(out))

    def _row(self, ids: list[int], frames: int) -> torch.Tensor:
        probs = torch.full((self.vocab_size,), 1e-6)
        for token, p in self.script(tuple(ids[self.n_start :]), frames).items():
            probs[token] = p
        return (probs / probs.sum()).log()


class ScriptCache:
    def __init__(self):
        self.prefix = []

    def get_seq_length(self):
        return len(self.prefix)

    def crop(self, n):
        del self.prefix[n:]


def scripted_stream(script, beam_size, look_back=2, max_new=28, **kw):
    from types import SimpleNamespace

    from ..decode import streaming_transcriber
    from ..encoder import Chunking

    EOT = 7
    vocab = SimpleNamespace(eot=EOT, start=[8, 9], suppress=[], suppress_begin=[], first_special=EOT + 2)  # 8, 9: start tokens
    model = ScriptedWhisper(script, vocab_size=10, n_start=2)
    stream = streaming_transcriber(model, vocab, Chunking(300), beam_size=beam_size, look_back=look_back, max_new=max_new, **kw)
    stream._new_cache = ScriptCache

    def chunk(frames):
        stream.encoded = torch.zeros(1, frames, 4)
        stream._decode_chunk(now=frames * 0.02)
        return list(stream.tokens)

    return stream, chunk


EOT = 7


def test_beam_search_finds_what_greedy_misses():
    # after nothing: 1 (0.5) beats 2 (0.4); but 1 is followed by a flat, uncertain tail, 2 by a sure one
    def script(prefix, frames):
        table = {(): {1: 0.5, 2: 0.4, EOT: 0.1}, (1,): {3: 0.3, 4: 0.3, 5: 0.3, EOT: 0.1}, (2,): {6: 0.95, EOT: 0.05}}
        return table.get(prefix, {EOT: 1.0})

    _, greedy = scripted_stream(script, beam_size=1)
    _, beam = scripted_stream(script, beam_size=3)
    assert greedy(30) == [1, 3]  # argmax at each step (ties: the lowest id)
    assert beam(30) == [2, 6]  # log 0.4 + log 0.95 > log 0.5 + log 0.3


def test_beam_cuts_a_tail_token_that_left_the_top_k_and_never_touches_committed_ones():
    # chunk 1 (30 frames): 1 2 3 4; chunk 2 (45 frames): token 1 collapses (committed: kept),
    # the last token 4 leaves the top-2 at its position (cut and re-decoded as 5)
    def script(prefix, frames):
        late = frames > 30
        nxt = {(): 1, (1,): 2, (1, 2): 3, (1, 2, 3): 5 if late else 4}
        if prefix in nxt:
            row = {nxt[prefix]: 0.9, EOT: 0.05}
            if late and prefix == ():
                row = {6: 0.9, 0: 0.05, EOT: 0.04}  # token 1 is no longer even in the top 2
            return row
        return {EOT: 1.0}

    stream, chunk = scripted_stream(script, beam_size=2)
    assert chunk(30) == [1, 2, 3, 4] and stream.committed == 2
    assert chunk(45) == [1, 2, 3, 5]
    assert stream.emitted_at[:3] == [0.6] * 3 and stream.emitted_at[3] == 0.9


def test_at_most_max_new_tokens_per_chunk_and_eot_ends_the_chunk():
    def endless(prefix, frames):
        return {len(prefix) % 5: 0.9, EOT: 0.1}

    for beam_size in (1, 3):
        stream, chunk = scripted_stream(endless, beam_size=beam_size, max_new=4)
        assert len(chunk(30)) == 4
        assert len(chunk(45)) == 8 if beam_size == 1 else 4 < len(chunk(45)) <= 8  # beams of equal rank: any of them
        if beam_size > 1:
            assert all(len(b.tokens) <= 8 for b in stream.beams)

    def stops(prefix, frames):
        return {EOT: 0.9, 1: 0.1} if prefix else {1: 0.9, EOT: 0.1}

    for beam_size in (1, 3):
        _, chunk = scripted_stream(stops, beam_size=beam_size)
        assert chunk(30) == [1]


def end_of_text_ahead(prefix, frames):
    """After token 1: end-of-text 0.6, token 2 0.3 (log ratio 0.69); after 1 2: end-of-text for sure."""
    return {(): {1: 0.9, EOT: 0.1}, (1,): {EOT: 0.6, 2: 0.3, 3: 0.1}}.get(prefix, {EOT: 1.0})


def test_the_end_of_text_penalty_lets_a_token_through_only_within_the_penalty_of_end_of_text():
    for penalty, expected in ((0.0, [1]), (0.6, [1]), (0.8, [1, 2]), (5.0, [1, 2])):
        _, chunk = scripted_stream(end_of_text_ahead, beam_size=1, eot_penalty=penalty)
        assert chunk(30) == expected, penalty


def test_next_candidates_are_the_likeliest_tokens_after_the_hypothesis_end_of_text_included():
    import math

    stream, chunk = scripted_stream(end_of_text_ahead, beam_size=1)
    assert chunk(30) == [1]
    # logits 3 above the log-probabilities: next_candidates must normalise them again
    stream.whisper.proj_out = type("Shift", (torch.nn.Module,), {"forward": lambda self, hidden: hidden + 3.0})()
    (t1, lp1), (t2, lp2), (t3, lp3) = stream.next_candidates(3)
    assert (t1, t2, t3) == (EOT, 2, 3)  # after "1", not after nothing
    assert (lp1, lp2, lp3) == pytest.approx((math.log(0.6), math.log(0.3), math.log(0.1)), abs=1e-4)


def test_beam_rule_cuts_on_leaving_the_top_k_or_on_a_fall_with_a_lost_argmax():
    from ..decode import beam_unstable

    tokens, previous = [1, 2, 3], [-0.5, -0.5, -0.5]
    rows = torch.full((3, 6), -5.0)
    rows[0, 1] = rows[1, 2] = rows[2, 3] = -0.1
    assert beam_unstable(tokens, previous, rows, 1, 2) is None
    fell = rows.clone()
    fell[2, 3], fell[2, 4] = -0.9, -0.6  # token 3 fell and token 4 is now the argmax (still top 2)
    assert beam_unstable(tokens, previous, fell, 1, 2) == 2
    fell[2, 4] = -1.0  # fell, but still the argmax: kept
    assert beam_unstable(tokens, previous, fell, 1, 2) is None
    out = rows.clone()
    out[1, 2], out[1, 0], out[1, 5] = -0.2, -0.1, -0.15  # token 2 rose but is third: out of the top 2
    assert beam_unstable(tokens, [-9.0] * 3, out, 1, 2) == 1
    assert beam_unstable(tokens, [-9.0] * 3, out, 2, 2) is None  # committed positions are not examined


def test_each_chunk_is_decoded_12_5_ms_after_it_ends_not_one_chunk_later():
    """Pieces cut by ``chunk_pieces`` end where the convolutions' look-ahead is complete: after the
    first piece the first block is decoded, after each further piece one more chunk, and words are
    emitted 12.5 ms after their chunk's end. Cut at chunk ends, every chunk waited for the next piece."""
    import numpy as np

    from ..decode import LOOK_AHEAD_SAMPLES, StreamingTranscriber, Vocabulary, chunk_pieces
    from ..encoder import Chunking
    from ..weights import build_model, package_files
    from .test_weights import tiny_variables

    chunking = Chunking(300)
    rng = np.random.default_rng(0)
    audio = (rng.normal(size=16000 * 3 + 123) * 0.1).astype(np.float32)
    pieces = list(chunk_pieces(audio, chunking))
    assert LOOK_AHEAD_SAMPLES == 200 and len(pieces[0]) == 9600 + 200 and {len(p) for p in pieces[1:-1]} == {4800}
    assert np.array_equal(np.concatenate(pieces), audio)
    _, data_dir = package_files("tiny.en")
    vocab = Vocabulary(data_dir)
    v = tiny_variables(rng, d=16, heads=2, ffn=32, vocab=51864, layers=(1, 1), frames=1500, targets=448)
    model = build_model(v, {"sot": vocab.start[0], "eot": vocab.eot, "no_timestamps": vocab.start[-1]})
    stream, emitted = StreamingTranscriber(model, vocab, chunking, max_new=2), 0
    for k, piece in enumerate(pieces[:-1]):
        stream.push(piece)
        assert stream.step == k + 1 and stream.encoder.done == chunking.frames_after(k)
        assert all(abs(t - (0.6 + 0.3 * k + 0.0125)) < 1e-9 for t in stream.emitted_at[emitted:])  # the tokens of this step
        emitted = len(stream.emitted_at)
    assert emitted > 0
    late = StreamingTranscriber(model, vocab, chunking, max_new=2)
    late.push(audio[:9600])  # cut at the first block's end: not decodable yet
    assert late.step == 0


def test_the_end_of_a_stream_decodes_one_second_of_silence_and_emits_nothing_past_the_audio():
    """Training appends 1 s of silence to every utterance; finish() decodes the same second, so a
    word ending at the very end of a file can still be said. Its emission time is the audio's end."""
    import numpy as np

    from ..decode import END_SILENCE_SECONDS, StreamingTranscriber, Vocabulary, chunk_pieces
    from ..encoder import Chunking
    from ..train import TAIL_SECONDS
    from ..weights import build_model, package_files
    from .test_weights import tiny_variables

    assert END_SILENCE_SECONDS == TAIL_SECONDS == 1.0
    chunking = Chunking(300)
    rng = np.random.default_rng(3)
    audio = (rng.normal(size=16000 * 2) * 0.1).astype(np.float32)
    _, data_dir = package_files("tiny.en")
    vocab = Vocabulary(data_dir)
    v = tiny_variables(rng, d=16, heads=2, ffn=32, vocab=51864, layers=(1, 1), frames=1500, targets=448)
    model = build_model(v, {"sot": vocab.start[0], "eot": vocab.eot, "no_timestamps": vocab.start[-1]})
    stream = StreamingTranscriber(model, vocab, chunking, max_new=2)
    for piece in chunk_pieces(audio, chunking):
        stream.push(piece)
    before = stream.step
    result = stream.finish()
    assert result.chunks >= before + 4  # 1 s of silence at 300 ms chunks: at least 3 more, plus the last partial chunk
    assert max(result.emitted_at) <= 2.0 and all(s < e or e == 2.0 for s, e in zip(result.heard_from, result.emitted_at))
    assert all(s <= e for s, e in zip(result.heard_from, result.emitted_at))


def test_a_push_that_completes_several_chunks_gives_its_words_all_of_the_audio_it_added():
    """Everything pushed at once (a whole file): every word was recognised in audio from 0 s."""
    import numpy as np

    from ..decode import StreamingTranscriber, Vocabulary
    from ..encoder import Chunking
    from ..weights import build_model, package_files
    from .test_weights import tiny_variables

    rng = np.random.default_rng(4)
    _, data_dir = package_files("tiny.en")
    vocab = Vocabulary(data_dir)
    v = tiny_variables(rng, d=16, heads=2, ffn=32, vocab=51864, layers=(1, 1), frames=1500, targets=448)
    model = build_model(v, {"sot": vocab.start[0], "eot": vocab.eot, "no_timestamps": vocab.start[-1]})
    stream = StreamingTranscriber(model, vocab, Chunking(300), max_new=2)
    stream.push((rng.normal(size=16000 * 2) * 0.1).astype(np.float32))
    assert stream.step >= 4 and stream.emitted_at and set(stream.chunk_start.values()) == {0.0}
