"""The table's baselines.

- ``offline``: Whisper on the whole utterance (30 s padded features, greedy): the accuracy ceiling.
- ``local_agreement``: Whisper-Streaming's policy (Machacek et al. 2023) with the stock model: at
  every chunk re-encode all audio so far (padded to 30 s, as Whisper expects), decode greedily
  after the committed tokens, and commit the longest common prefix of this hypothesis and the
  previous one (LocalAgreement-2). Its cost grows with the audio: every chunk is a full encoder pass.
The untuned causal model (the block mask, no fine-tuning) is ``StreamingTranscriber`` with the base
model, and needs no code of its own.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .decode import Transcript, Vocabulary, base_model, model_device

MAX_SAMPLES = 30 * SAMPLE_RATE


def features(audio: np.ndarray) -> torch.Tensor:
    """Offline Whisper features of up to 30 s of audio: [1, 80, 3000] (transformers' extractor)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80)(audio[-MAX_SAMPLES:], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


@torch.no_grad()
def greedy(model, vocab: Vocabulary, encoded: torch.Tensor, prefix: list[int], max_new: int = 120) -> list[int]:
    """Greedy continuation of ``prefix`` (text tokens) until end-of-text, with a decoder KV cache."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    whisper = base_model(model)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    ids = torch.tensor([vocab.start + prefix], device=encoded.device)
    out: list[int] = []
    room = whisper.config.max_target_positions - len(vocab.start) - len(prefix) - 1
    for _ in range(min(max_new, room)):
        hidden = whisper.model.decoder(input_ids=ids, encoder_hidden_states=encoded, past_key_values=cache, use_cache=True).last_hidden_state
        logits = whisper.proj_out(hidden[0, -1])
        logits[vocab.first_special + 1 :] = -torch.inf
        logits[vocab.suppress] = -torch.inf
        if not prefix and not out:
            logits[vocab.suppress_begin] = -torch.inf
        token = int(logits.argmax())
        if token == vocab.eot:
            break
        out.append(token)
        ids = torch.tensor([[token]], device=encoded.device)
    return out


@torch.no_grad()
def offline(model, vocab: Vocabulary, audio: np.ndarray) -> Transcript:
    start = time.perf_counter()
    tokens = []
    for at in range(0, max(1, len(audio)), MAX_SAMPLES):  # longer than 30 s: consecutive windows
        encoded = base_model(model).model.encoder(features(audio[at : at + MAX_SAMPLES]).to(model_device(model))).last_hidden_state
        tokens += greedy(model, vocab, encoded, [])
    seconds = time.perf_counter() - start
    return Transcript(vocab.decode(tokens), tokens, [len(audio) / SAMPLE_RATE] * len(tokens), 1, [seconds], [])


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def local_agreement(model, vocab: Vocabulary, audio: np.ndarray, chunk_ms: int) -> Transcript:
    """LocalAgreement-2 over a growing buffer (kept to the last 30 s, the committed text as prefix)."""
    whisper = base_model(model)
    step = SAMPLE_RATE * chunk_ms // 1000
    committed: list[int] = []
    emitted: list[float] = []
    previous: list[int] | None = None
    enc_times, dec_times = [], []
    ends = list(range(step, len(audio), step)) + [len(audio)]
    for end in ends:
        t0 = time.perf_counter()
        encoded = whisper.model.encoder(features(audio[:end]).to(model_device(model))).last_hidden_state
        t1 = time.perf_counter()
        hypothesis = greedy(model, vocab, encoded, committed[-100:])
        dec_times.append(time.perf_counter() - t1)
        enc_times.append(t1 - t0)
        if end == len(audio):  # end of the stream: everything is final
            agreed = hypothesis
        else:
            agreed = [] if previous is None else hypothesis[: common_prefix(previous, hypothesis)]
        committed += agreed
        emitted += [end / SAMPLE_RATE] * len(agreed)
        previous = hypothesis[len(agreed) :]
    return Transcript(vocab.decode(committed), committed, emitted, len(ends), enc_times, dec_times)
