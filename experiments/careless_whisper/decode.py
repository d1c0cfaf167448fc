"""Streaming greedy decoding with a 2-token look-back (brief 2.7): tokens older than the last two are
committed and never change; each chunk may revise only the tentative tail.

    stream = StreamingTranscriber(model, tokenizer_dir, Chunking(300))
    for piece in pieces: stream.push(piece)            # decodes at every chunk boundary
    result = stream.finish()                           # Transcript(text, tokens, emitted_at, ...)

Per chunk: encode only the new frames (``IncrementalEncoder``), run the decoder over the start
tokens and the current hypothesis, check the last ``look_back`` tokens (a token is stable if its
logit did not fall since the previous chunk or it is still the argmax; the first unstable one and
everything after it are dropped), then append argmax tokens until end-of-text (at most
``max_new`` per chunk). A token's emission time is the audio time when it was last appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import N_FFT, SAMPLE_RATE, StreamingMel
from .encoder import FRAME_SECONDS, Chunking, IncrementalEncoder, complete_frames
from .weights import special_ids

MAX_FRAMES = 1500  # Whisper's encoder positions: 30 s
# Silence after the end of every training utterance, and decoded after the end of every stream:
# the labels say end-of-text 0.5 s after the last word ends, so the model is trained to finish there.
END_SILENCE_SECONDS = 1.0


@dataclass
class Transcript:
    text: str
    tokens: list[int]
    emitted_at: list[float]  # seconds of audio consumed when each token was (last) appended
    chunks: int = 0
    encoder_seconds: list[float] = field(default_factory=list)
    decoder_seconds: list[float] = field(default_factory=list)
    heard_from: list[float] = field(default_factory=list)  # start of the audio that chunk added (its word interval's start)


def base_model(model):
    """The HF Whisper inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class Vocabulary:
    """Token ids and text from the packaged tokenizer.json and config.json (never hard-coded)."""

    def __init__(self, data_dir: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(data_dir) / "tokenizer.json"))
        ids = special_ids(Path(data_dir) / "tokenizer.json")
        self.eot = ids["eot"]
        # Multilingual or English-only is the model's own vocabulary size (OpenAI's rule: n_vocab >= 51865);
        # vocabulary.txt is the converted model's vocabulary, one token a line. The tokenizer's size is
        # no guide: base's tokenizer.json holds 50,364 entries and used to get tiny.en's 2-token start.
        n_vocab = len((Path(data_dir) / "vocabulary.txt").read_text(encoding="utf-8").splitlines())
        multilingual = n_vocab >= 51865
        if multilingual and not ("en" in ids and "transcribe" in ids):
            raise ValueError(f"{data_dir}: a multilingual vocabulary ({n_vocab} tokens) without the <|en|> and <|transcribe|> tokens")
        self.start = [ids["sot"], ids["en"], ids["transcribe"], ids["no_timestamps"]] if multilingual else [ids["sot"], ids["no_timestamps"]]
        config = json.loads((Path(data_dir) / "config.json").read_text())
        self.suppress = sorted(set(config.get("suppress_ids", [])))
        self.suppress_begin = sorted(set(config.get("suppress_ids_begin", [])))
        self.first_special = self.eot  # every id above end-of-text is a special or timestamp token

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode([t for t in tokens if t < self.eot])


def first_unstable(tokens: list[int], previous: list[float], rows: torch.Tensor, look_back: int) -> int | None:
    """Index of the first of the last ``look_back`` tokens that became unstable, or None.

    ``rows[i]`` are this chunk's logits at the position predicting ``tokens[i]``; ``previous[i]``
    is that token's logit at the previous chunk. A token is stable if its logit did not fall or it
    is still the argmax; tokens older than the last ``look_back`` are committed and never checked.
    """
    for i in range(max(0, len(tokens) - look_back), len(tokens)):
        value = float(rows[i, tokens[i]])
        if not (value >= previous[i] or int(rows[i].argmax()) == tokens[i]):
            return i
    return None


def model_device(model) -> torch.device:
    """The device the model's weights are on (``trainer.device`` in a run): inputs are moved there.
    A model without parameters (the tests' scripted decoders) runs on the CPU."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


# The speech gate: no chunk is decoded before a 25 ms frame of the stream reaches this RMS (-60 dBFS).
# Whisper normalises each log-mel to its own maximum, so digital or near-digital silence looks like
# speech to it and it says "you"; real speech, even quiet telephone speech, is 30 dB and more above
# this. Noise above the gate is left to the model (white noise at -50 and -30 dBFS gives no words).
SPEECH_RMS = 10 ** (-60 / 20)
GATE_FRAME = 400  # samples: 25 ms at 16 kHz


def heard_speech(audio: np.ndarray) -> bool:
    """Whether any 25 ms frame of ``audio`` (float32 at 16 kHz, full scale 1) passes the gate."""
    n = len(audio) // GATE_FRAME * GATE_FRAME
    frames = audio[:n].reshape(-1, GATE_FRAME) if n else audio[None, :]
    return bool(len(audio)) and bool((np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) >= SPEECH_RMS).any())


class StreamingTranscriber:
    def __init__(self, model, vocab: Vocabulary, chunking: Chunking, look_back: int = 2, max_new: int = 28, eot_penalty: float = 0.0):
        self.model, self.vocab, self.chunking = model, vocab, chunking
        self.look_back, self.max_new = look_back, max_new
        self.eot_penalty = eot_penalty
        self.whisper = base_model(model)
        self.device = model_device(model)  # the mel front end stays on the CPU; encoder and decoder run here
        self.mel = StreamingMel()
        self.mel_frames = torch.zeros(80, 0)
        self.encoder = IncrementalEncoder(self.whisper.model.encoder, chunking)
        self.encoded = None
        self.window_mel = 0  # absolute mel frame where the current 30 s window starts
        self.final_tokens: list[int] = []  # committed tokens of earlier windows
        self.final_emitted: list[float] = []
        self.tokens: list[int] = []
        self.logit: list[float] = []
        self.emitted_at: list[float] = []
        self.step = 0
        self.enc_times: list[float] = []
        self.dec_times: list[float] = []
        self.speech = False  # the gate opens at the first frame of speech and stays open
        self.heard_until = 0.0  # audio time up to which earlier chunks were decoded
        self.chunk_start: dict[float, float] = {}  # decode time -> start of the audio its chunk added

    # ---- decoder ----------------------------------------------------------------------------
    def _logits(self, tokens: list[int], cache=None) -> torch.Tensor:
        """Logits at every position of ``tokens`` (after the start tokens), or of the new tokens
        when ``cache`` already holds the earlier ones. The cache is per chunk: the encoder states
        (cross-attention keys) grow every chunk."""
        ids = torch.tensor([tokens if cache is not None and cache.get_seq_length() else self.vocab.start + tokens], device=self.device)
        out = self.whisper.model.decoder(input_ids=ids, encoder_hidden_states=self.encoded, past_key_values=cache, use_cache=cache is not None)
        return self.whisper.proj_out(out.last_hidden_state)[0]

    @staticmethod
    def _new_cache():
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        return EncoderDecoderCache(DynamicCache(), DynamicCache())

    def _mask(self, logits: torch.Tensor, first_text_position: bool) -> torch.Tensor:
        logits = logits.clone()
        logits[self.vocab.first_special + 1 :] = -torch.inf  # no timestamps or other special tokens
        logits[self.vocab.suppress] = -torch.inf
        if first_text_position:
            logits[self.vocab.suppress_begin] = -torch.inf
        return logits

    @torch.no_grad()
    def _decode_chunk(self, now: float) -> None:
        import time

        start = time.perf_counter()
        cache = self._new_cache()
        logits = self._logits(self.tokens, cache)  # one pass: logits at every position, for the look-back check
        n0 = len(self.vocab.start) - 1  # logits[n0 + i] predicts tokens[i]
        if self.step > 0 and self.tokens:
            rows = logits[n0 : n0 + len(self.tokens)]
            cut = first_unstable(self.tokens, self.logit, rows, self.look_back)
            if cut is not None:
                cache.crop(-(len(self.tokens) - cut))  # transformers 5: a negative count removes that many
                del self.tokens[cut:], self.logit[cut:], self.emitted_at[cut:]
            self.logit = [float(rows[i, t]) for i, t in enumerate(self.tokens)]
        row_logits = logits[n0 + len(self.tokens)]
        room = self.whisper.config.max_target_positions - len(self.vocab.start) - 1  # Whisper's 448 positions
        for _ in range(min(self.max_new, room - len(self.tokens))):
            row = self._mask(row_logits, first_text_position=not self.tokens)
            row[self.vocab.eot] -= self.eot_penalty
            token = int(row.argmax())
            if token == self.vocab.eot:
                break
            self.tokens.append(token)
            self.logit.append(float(row_logits[token]))
            self.emitted_at.append(now)
            row_logits = self._logits([token], cache)[-1]
        self.dec_times.append(time.perf_counter() - start)
        self.step += 1

    @torch.no_grad()
    def next_candidates(self, k: int = 4) -> list[tuple[int, float]]:
        """The ``k`` likeliest next tokens after the current hypothesis under the audio decoded so far,
        as (token, log-probability), end-of-text included (``transcribe --trace``: a stream that stalls
        shows end-of-text ahead of the next word chunk after chunk)."""
        row = self._logits(self.tokens)[len(self.vocab.start) - 1 + len(self.tokens)]
        top = self._mask(row, first_text_position=not self.tokens).log_softmax(-1).topk(k)
        return [(int(t), float(v)) for v, t in zip(top.values, top.indices)]

    # ---- audio ------------------------------------------------------------------------------
    def _next_window(self) -> None:
        """Whisper sees at most 1500 frames (30 s). At the limit, start a new window: its first block
        is the last first-block of audio already heard, and the last ``look_back + 1`` tokens stay
        as the decoder's prefix (they may still be revised); older tokens are final. Every cache is
        cleared, so memory and per-chunk cost stay bounded on streams of any length."""
        done = self.encoder.done
        keep_from = 2 * (done - self.chunking.first_frames)
        self.mel_frames = self.mel_frames[:, keep_from:]
        self.window_mel += keep_from
        carry = self.look_back + 1
        self.final_tokens += self.tokens[:-carry]
        self.final_emitted += self.emitted_at[:-carry]
        self.tokens, self.logit, self.emitted_at = self.tokens[-carry:], self.logit[-carry:], self.emitted_at[-carry:]
        self.encoder = IncrementalEncoder(self.whisper.model.encoder, self.chunking)
        self.encoded, self.step = None, 0

    @torch.no_grad()
    def push(self, audio: np.ndarray) -> None:
        """Feed audio (float32, 16 kHz); decode at every chunk boundary it completes."""
        import time

        self.mel_frames = torch.cat([self.mel_frames, self.mel.push(audio)], dim=1)
        self.speech = self.speech or heard_speech(audio)
        while True:
            target = self.chunking.frames_after(self.step)
            if target > MAX_FRAMES:
                self._next_window()
                continue
            if target > complete_frames(self.mel_frames.shape[1]):
                break
            start = time.perf_counter()
            new = self.encoder.step(self.mel_frames[None].to(self.device), target)
            self.encoded = new if self.encoded is None else torch.cat([self.encoded, new], dim=1)
            self.enc_times.append(time.perf_counter() - start)
            # the chunk is decoded when the audio reaches its end plus the convs' look-ahead
            if self.speech:
                self.chunk_start.setdefault(self.mel.seconds, self.heard_until)  # several chunks in one push: from the first
                self._decode_chunk(now=self.mel.seconds)
            else:  # nothing heard yet: nothing to say (the encoder still runs: its cache needs every frame)
                self.dec_times.append(0.0)
                self.step += 1
            self.heard_until = (self.window_mel // 2 + target) * FRAME_SECONDS

    def finish(self, flush_seconds: float = END_SILENCE_SECONDS) -> Transcript:
        """End of audio: decode ``flush_seconds`` of silence after it (training appends the same
        silence to every utterance, so the model says its last words and end-of-text there; a word
        ending right at the end of a file used to be lost), then pad to complete the last chunk."""
        end = self.mel.seconds  # the end of the audio: what the closing flush emits is known then
        decoded = self.heard_until  # words the flush adds were recognised in the audio after this
        if self.speech and flush_seconds > 0:
            self.push(np.zeros(int(flush_seconds * SAMPLE_RATE), np.float32))
        target = min(self.chunking.frames_after(self.step), MAX_FRAMES)
        needed = (self.window_mel + 2 * target + 1) * 160 + 240 - self.mel.samples  # samples to complete the frames' windows
        if self.step == 0 or needed > 0:
            self.push(np.zeros(max(needed, 0) + 1, np.float32))
        tokens = self.final_tokens + self.tokens
        heard_from = [min(self.chunk_start[t], decoded) if t > end else self.chunk_start[t] for t in self.final_emitted + self.emitted_at]
        emitted = [min(t, end) for t in self.final_emitted + self.emitted_at]  # the padding is not audio
        return Transcript(self.vocab.decode(tokens), tokens, emitted, self.step, self.enc_times, self.dec_times, heard_from)


def beam_unstable(tokens: list[int], previous: list[float], rows: torch.Tensor, first: int, k: int) -> int | None:
    """Beam rule: index of the first token at or after ``first`` that left the top ``k`` of its row
    (``rows[i]`` predicts ``tokens[i]``), or whose log-probability fell since ``previous`` while
    another token became the argmax (WhisperRT's extra condition, the greedy rule), or None.

    The top-k test alone almost never fires on punctuation, which stays plausible everywhere: a
    period tentatively written at a pause then stays, end-of-text follows it, and the rest of the
    utterance is lost (measured: 23 % WER with the top-k test alone, see the README)."""
    for i in range(first, len(tokens)):
        value = float(rows[i, tokens[i]])
        fell = value < previous[i] and int(rows[i].argmax()) != tokens[i]
        if fell or tokens[i] not in rows[i].topk(k).indices.tolist():
            return i
    return None


@dataclass
class Beam:
    tokens: list[int]
    emitted_at: list[float]
    logp: list[float]  # each token's log-probability at the last chunk that scored it
    score: float = 0.0  # sum of log-probabilities of ``tokens`` (and of end-of-text if ended) under the current audio
    ended: bool = False

    def rank(self) -> float:
        """Log-probability per scored token (end-of-text counts once the beam ended)."""
        return self.score / max(1, len(self.tokens) + self.ended)


class BeamStreamingTranscriber(StreamingTranscriber):
    """Streaming beam search (brief 2.7). Hypotheses persist across chunks. At a chunk's first step
    each beam is cut at the first of its last ``look_back`` tokens that left the top ``beam_size``
    at its position or whose log-probability fell while it lost the argmax (``beam_unstable``),
    and re-scored under the new audio. Then each beam proposes its top ``beam_size + 1`` tokens and
    the best ``beam_size`` candidates by summed log-probability survive (those ending in
    end-of-text as finished hypotheses); the chunk ends when the best candidate of a step is
    end-of-text, or after ``max_new`` tokens. The transcript, and the beams carried to the next
    chunk, are ranked by log-probability per token. Tokens older than the best beam's last
    ``look_back`` are committed: beams that disagree with them are dropped, so they never change.

    Three deliberate differences from upstream, each measured (README): the fell-and-lost-argmax
    revision (WhisperRT's), per-token ranking (by the sum, a beam that stopped early always wins
    and the stream stalls), and stopping when end-of-text is the *best* candidate rather than any
    survivor (in a stream end-of-text is likely after almost every word).

    No decoder KV cache here (as upstream): every step re-runs the decoder over the padded beams.
    """

    def __init__(self, model, vocab: Vocabulary, chunking: Chunking, beam_size: int = 5, look_back: int = 2, max_new: int = 28):
        super().__init__(model, vocab, chunking, look_back, max_new)
        self.beam_size = beam_size
        self.beams = [Beam([], [], [])]
        self.committed = 0  # len of the prefix every beam shares and never changes
        self._additive = None

    def _log_probs(self, beams: list[Beam], every_position: bool) -> list[torch.Tensor]:
        """Masked log-probabilities of each beam's next token ([1, V]), or at every position
        ([len + 1, V]: rows[i] predicts tokens[i]). One decoder pass over the right-padded beams."""
        lengths = [len(b.tokens) for b in beams]
        width = max(lengths)
        ids = torch.tensor([self.vocab.start + b.tokens + [self.vocab.eot] * (width - len(b.tokens)) for b in beams], device=self.device)
        encoded = self.encoded.expand(len(beams), -1, -1)
        hidden = self.whisper.model.decoder(input_ids=ids, encoder_hidden_states=encoded, use_cache=False).last_hidden_state
        logits = self.whisper.proj_out(hidden)  # causal: right padding changes nothing before it
        n0 = len(self.vocab.start) - 1
        additive, first = self._masks(logits.shape[-1])
        out = []
        for b, n in enumerate(lengths):
            rows = logits[b, n0 : n0 + n + 1] if every_position else logits[b, n0 + n : n0 + n + 1]
            rows = rows + additive
            if every_position or n == 0:
                rows[0] += first
            out.append(rows.log_softmax(-1))
        return out

    def _masks(self, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive masks: suppressed and special tokens everywhere; blank-start tokens at the first text position."""
        if self._additive is None:
            self._additive = self._mask(torch.zeros(vocab_size, device=self.device), first_text_position=False)
            self._first = self._mask(torch.zeros(vocab_size, device=self.device), first_text_position=True) - self._additive
            self._first[~torch.isfinite(self._first)] = -torch.inf
        return self._additive, self._first

    @torch.no_grad()
    def _decode_chunk(self, now: float) -> None:
        import time

        start = time.perf_counter()
        beams = self.beams
        rows = self._log_probs(beams, every_position=True)
        if self.step > 0:  # revise each beam's tentative tail, then merge beams cut back to one prefix
            unique: dict[tuple, tuple[Beam, torch.Tensor]] = {}
            for beam, r in zip(beams, rows):
                first = max(self.committed, len(beam.tokens) - self.look_back)
                cut = beam_unstable(beam.tokens, beam.logp, r, first, self.beam_size)
                if cut is not None:
                    beam, r = Beam(beam.tokens[:cut], beam.emitted_at[:cut], beam.logp[:cut]), r[: cut + 1]
                unique.setdefault(tuple(beam.tokens), (beam, r))
            beams, rows = [b for b, _ in unique.values()], [r for _, r in unique.values()]
        for b, r in zip(beams, rows):  # each prefix re-scored under the audio heard so far
            b.logp = r[torch.arange(len(b.tokens)), torch.tensor(b.tokens, dtype=torch.long)].tolist()
            b.score = float(sum(b.logp))
        rows = [r[-1:] for r in rows]
        room = self.whisper.config.max_target_positions - len(self.vocab.start) - 1
        finished: list[Beam] = []
        for _ in range(self.max_new):
            candidates = []
            for b, r in zip(beams, rows):
                values, tokens = r[-1].topk(self.beam_size + 1)
                for v, t in zip(values.tolist(), tokens.tolist()):
                    if v > -float("inf"):
                        ends = t == self.vocab.eot or len(b.tokens) >= room
                        candidates.append((b.score + v, b, None if ends else t))
            candidates.sort(key=lambda c: -c[0])
            survivors = candidates[: self.beam_size]
            finished += [Beam(b.tokens, b.emitted_at, b.logp, score, ended=True) for score, b, t in survivors if t is None]
            beams = [Beam(b.tokens + [t], b.emitted_at + [now], b.logp + [score - b.score], score) for score, b, t in survivors if t is not None]
            if survivors[0][2] is None or not beams:
                break  # end-of-text is the best continuation of every beam (or nothing is left to extend)
            rows = self._log_probs(beams, every_position=False)
        pool = sorted(finished + beams, key=Beam.rank, reverse=True)
        best = pool[0]
        beams = [Beam(b.tokens, b.emitted_at, b.logp) for b in pool[: self.beam_size]]  # re-scored at the next chunk
        self.committed = max(self.committed, len(best.tokens) - self.look_back)
        keep = {}
        for b in beams:  # drop beams that disagree with the committed prefix; merge duplicates
            if b.tokens[: self.committed] == best.tokens[: self.committed]:
                keep.setdefault(tuple(b.tokens), b)
        self.beams = list(keep.values())
        self.tokens, self.emitted_at = list(best.tokens), list(best.emitted_at)
        self.logit = [0.0] * len(self.tokens)
        self.dec_times.append(time.perf_counter() - start)
        self.step += 1

    def _next_window(self) -> None:
        super()._next_window()  # keeps the best beam's last look_back + 1 tokens as the prefix
        self.beams = [Beam(list(self.tokens), list(self.emitted_at), [-float("inf")] * len(self.tokens))]  # no earlier score: judged by the top-k test alone
        self.committed = 0


def streaming_transcriber(model, vocab: Vocabulary, chunking: Chunking, beam_size: int = 1, **kw) -> StreamingTranscriber:
    """Greedy (``beam_size`` 1) or beam streaming decoder."""
    if beam_size > 1:
        return BeamStreamingTranscriber(model, vocab, chunking, beam_size=beam_size, **kw)
    return StreamingTranscriber(model, vocab, chunking, **kw)


# Encoder frame n (its chunk ends at sample 320 n) reads mel frame 2 n, the 400-sample window centred
# on sample 320 n: the stream can encode a chunk 200 samples (12.5 ms) after the chunk's end.
LOOK_AHEAD_SAMPLES = N_FFT // 2


def chunk_pieces(audio: np.ndarray, chunking: Chunking):
    """``audio`` cut where each chunk becomes decodable: the first block plus the convolutions'
    12.5 ms look-ahead, then one chunk at a time (upstream's simulator cuts the same way). Cut at
    chunk ends instead, every chunk would wait for the next piece: one chunk of extra lag."""
    edge = SAMPLE_RATE * chunking.first_ms // 1000 + LOOK_AHEAD_SAMPLES
    step = SAMPLE_RATE * chunking.chunk_ms // 1000
    start = 0
    while start < len(audio):
        yield audio[start:edge]
        start, edge = edge, edge + step


def transcribe_stream(model, vocab: Vocabulary, audio: np.ndarray, chunking: Chunking, piece_ms: int | None = None, beam_size: int = 1, **kw) -> Transcript:
    """Stream ``audio`` as it becomes decodable (``chunk_pieces``), or in pieces of ``piece_ms``,
    and return the final transcript (``kw``: ``look_back``, ``max_new``)."""
    stream = streaming_transcriber(model, vocab, chunking, beam_size, **kw)
    if piece_ms is None:
        pieces = chunk_pieces(audio, chunking)
    else:
        piece = SAMPLE_RATE * piece_ms // 1000
        pieces = (audio[i : i + piece] for i in range(0, len(audio), piece))
    for part in pieces:
        stream.push(part)
    return stream.finish()
