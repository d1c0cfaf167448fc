"""Decoder rules (brief test 8) on scripted logits."""

import torch

from experiments.careless_whisper.decode import first_unstable


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
    import json

    import numpy as np

    from experiments.careless_whisper.decode import StreamingTranscriber, Vocabulary
    from experiments.careless_whisper.encoder import Chunking
    from experiments.careless_whisper.weights import build_model, package_files

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
