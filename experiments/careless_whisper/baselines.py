"""The table's baselines.

- ``offline``: Whisper on the whole utterance (30 s padded features, greedy): the accuracy ceiling.
- ``local_agreement``: Whisper-Streaming's policy (Machacek et al. 2023) with the stock model: at
  every chunk re-encode all audio so far (padded to 30 s, as Whisper expects), decode greedily
  after the committed tokens, and commit the longest common prefix of this hypothesis and the
  previous one (LocalAgreement-2). Its cost grows with the audio: every chunk is a full encoder pass.
- ``faster_whisper`` and ``faster_whisper_la2``: the peer a user would pick instead. faster-whisper
  (CTranslate2) reads the very ``model.bin`` the packages ship; offline it transcribes the whole
  file, and ``faster_whisper_la2`` is Whisper-Streaming's online processor (Machacek et al. 2023,
  ufal/whisper_streaming, re-implemented: its code is not a package) over it: word-timestamped
  hypotheses of the buffer since the last trim, LocalAgreement-2 over words, the committed text
  scrolled out of the buffer as the prompt, and the buffer trimmed after 15 s. Greedy (beam 1) like
  every other row here; Whisper-Streaming's default is a 5-beam search.
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


# ---- faster-whisper (CTranslate2) -------------------------------------------------------------------
def faster_whisper_model(data_dir, threads: int | None = None):
    """faster-whisper on the packaged ``model.bin`` (float16 weights run as float32 on a CPU)."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(data_dir), device="cpu", cpu_threads=threads or torch.get_num_threads())


def _fw_words(fw, audio: np.ndarray, prompt: str | None = None) -> list[tuple[float, float, str]]:
    """(start, end, text with its leading space) of every word faster-whisper hears in ``audio``."""
    segments, _ = fw.transcribe(audio, language="en", beam_size=1, word_timestamps=True, initial_prompt=prompt or None,
                                condition_on_previous_text=True, vad_filter=False)
    return [(w.start, w.end, w.word) for s in segments for w in s.words]


def _tokens(vocab: Vocabulary, words: list[str]) -> list[int]:
    return [t for w in words for t in vocab.tokenizer.encode(w, add_special_tokens=False).ids]


def faster_whisper_offline(fw, vocab: Vocabulary, audio: np.ndarray) -> Transcript:
    """The whole file, greedy, without word timestamps (what a user transcribing a file runs)."""
    start = time.perf_counter()
    segments, _ = fw.transcribe(audio, language="en", beam_size=1, vad_filter=False)
    tokens = [t for s in segments for t in s.tokens if t < vocab.eot]  # the same tokenizer: no timestamp tokens
    seconds = time.perf_counter() - start
    return Transcript(vocab.decode(tokens).strip(), tokens, [len(audio) / SAMPLE_RATE] * len(tokens), 1, [seconds], [0.0])


def _agreed(previous: list[str], new: list[str]) -> int:
    """How many leading words two hypotheses share (case and punctuation count, as in Whisper-Streaming)."""
    n = 0
    while n < min(len(previous), len(new)) and previous[n].strip() == new[n].strip():
        n += 1
    return n


def faster_whisper_la2(fw, vocab: Vocabulary, audio: np.ndarray, chunk_ms: int, trim_s: float = 15.0) -> Transcript:
    """Whisper-Streaming's LocalAgreement-2 over faster-whisper: every ``chunk_ms`` the buffer (audio
    since the last trim) is transcribed again; a word is committed once two consecutive hypotheses
    agree on it; words are emitted at the chunk end where that happens."""
    step = SAMPLE_RATE * chunk_ms // 1000
    committed: list[tuple[float, float, str]] = []
    emitted: list[float] = []
    pending: list[tuple[float, float, str]] = []  # the previous hypothesis after the committed words
    buffer_start, scrolled = 0, 0  # first buffered sample; committed words before it (the prompt)
    seconds = []
    ends = list(range(step, len(audio), step)) + [len(audio)]
    for end in ends:
        t0 = time.perf_counter()
        offset = buffer_start / SAMPLE_RATE
        prompt = "".join(w for _, _, w in committed[:scrolled])[-200:]
        heard = [(s + offset, e + offset, w) for s, e, w in _fw_words(fw, audio[buffer_start:end], prompt)]
        last_end = committed[-1][1] if committed else 0.0
        heard = [h for h in heard if h[0] > last_end - 0.1]  # words already committed are heard again
        for n in range(min(5, len(committed), len(heard)), 0, -1):  # drop an n-gram the commit already ends with
            if [w.strip() for *_, w in committed[-n:]] == [w.strip() for *_, w in heard[:n]]:
                heard = heard[n:]
                break
        agree = len(heard) if end == len(audio) else _agreed([w for *_, w in pending], [w for *_, w in heard])
        committed += heard[:agree]
        emitted += [end / SAMPLE_RATE] * agree
        pending = heard[agree:]
        if (end - buffer_start) / SAMPLE_RATE > trim_s and committed and committed[-1][1] > offset:
            buffer_start = int(committed[-1][1] * SAMPLE_RATE)  # trim at the last committed word's end
            scrolled = len(committed)
        seconds.append(time.perf_counter() - t0)
    words = [w for *_, w in committed]
    tokens, times = [], []
    for w, t in zip(words, emitted):
        ids = _tokens(vocab, [w])
        tokens += ids
        times += [t] * len(ids)
    return Transcript("".join(words).strip(), tokens, times, len(ends), seconds, [0.0] * len(seconds))
