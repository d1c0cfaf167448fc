"""Fine-tuning the causal model on weakly aligned chunk targets (brief 2.5-2.6).

For each utterance, a few chunk ends are sampled (``streaming_fraction`` of them); at each, the
encoder runs on the mel prefix under the block mask (the same features the stream sees), the
decoder is teacher-forced on the whole transcript, and the loss is cross-entropy on the labels
available at that chunk end (finished tokens, then end-of-text). One optimiser step per sample
point, as upstream. Only LoRA tensors train.

Two choices of ours, because 400 short prompts are far less than upstream's 960 hours (README):
every utterance is also prepared at the speeds in ``train.speeds`` (Kaldi-style speed perturbation:
resampled, so tempo and pitch change together; aligned times scale with it) and each epoch draws
one speed per utterance; the learning rate warms up over ``train.warmup`` steps and then follows a
cosine to zero over the whole run.

``train.distill`` (off by default) adds a second, transcript-free teacher: the offline encoder (the
same weights with the LoRA switched off, on the whole utterance as offline Whisper sees it). At every
trained chunk end the causal encoder's outputs for the frames heard so far are pulled toward the
offline encoder's outputs for the same frames (mean squared error, times the weight). The offline
encoder was trained on 680k hours of many voices; the aim is that the adapters learn to make the
causal encoder produce what the stock decoder already reads, rather than features fitted to the
one training speaker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.progress import progress

from .align import AlignmentError, Word, align
from .audio import SAMPLE_RATE, streamed_mel
from .decode import END_SILENCE_SECONDS, Vocabulary, base_model, model_device
from .encoder import FRAME_SECONDS, Chunking, complete_frames, encode_prefix
from .speech import load_audio
from .targets import IGNORE, TokenSequence, sample_chunk_steps

TAIL_SECONDS = END_SILENCE_SECONDS  # silence appended to every utterance, so the last chunks (and EOT) are trained


@dataclass
class Utterance:
    name: str
    mel: torch.Tensor  # [80, M] streamed features
    seq: TokenSequence
    duration: float
    speed: float = 1.0
    teacher: torch.Tensor | None = None  # [frames, d] the offline encoder's outputs (train.distill), float16


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play ``audio`` ``speed`` times faster by resampling (0.9: 10 % slower and lower)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    if speed == 1:
        return audio
    ratio = Fraction(speed).limit_denominator(100)
    return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at ``snr_db`` below the speech's mean power: it also fills the band above 4 kHz
    that the telephone prompts lack, so the adapters see wideband features too."""
    power = float(np.mean(np.square(audio, dtype=np.float64))) or 1e-10
    return (audio + rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def offline_encoder(model):
    """audio (16 kHz, at most 30 s) -> [frames, d] the offline encoder's outputs, float16 on the CPU:
    the stock model (a peft model's adapters switched off) on offline Whisper's padded features; the
    teacher of ``train.distill``. Only the frames of the audio itself are kept (20 ms each)."""
    from contextlib import nullcontext

    from .baselines import features

    whisper = base_model(model)

    @torch.no_grad()
    def teacher(audio: np.ndarray) -> torch.Tensor:
        with model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext():
            encoded = whisper.model.encoder(features(audio).to(model_device(model))).last_hidden_state[0]
        return encoded[: min(len(encoded), math.ceil(len(audio) / (FRAME_SECONDS * SAMPLE_RATE)))].to("cpu", torch.float16)

    return teacher


def prepare(prompts, vocab: Vocabulary, chunking: Chunking, speeds=(1.0,), log=print, noise=None, seed: int = 0,
            streams=None, teacher=None) -> list[list[Utterance]]:
    """Audio -> streamed mel, transcript -> aligned token targets, one variant per speed; prompts
    the aligner cannot align are skipped (and counted). ``noise`` ({p, snr_db: [lo, hi]}): each
    variant gets white noise with probability p, at an SNR drawn uniformly in [lo, hi] dB.
    ``streams`` ({count, max_prompts, max_seconds, gap_s: [lo, hi]}): also ``count`` training
    streams of 2 to ``max_prompts`` random prompts back to back (at most ``max_seconds``, pauses
    drawn in ``gap_s``, one speed per stream), so the model learns to go on after a finished
    sentence and to stay out of loops over tens of seconds, which single prompts never show it.
    ``teacher`` (``offline_encoder(model)``): each variant also keeps the offline encoder's outputs on
    the same audio, silence tail included (``train.distill``)."""
    rng = np.random.default_rng(seed)
    piece = SAMPLE_RATE * chunking.chunk_ms // 1000

    def utterance(name: str, audio: np.ndarray, words: list[Word], speed: float) -> Utterance:
        faster = change_speed(audio, speed)
        if noise and rng.random() < float(noise["p"]):
            faster = add_noise(faster, float(rng.uniform(*noise["snr_db"])), rng)
        padded = np.concatenate([faster, np.zeros(int(TAIL_SECONDS * SAMPLE_RATE), np.float32)])
        timed = [Word(w.text, w.start / speed, w.end / speed) for w in words]
        seq = TokenSequence.build(vocab.tokenizer, timed, vocab.start, vocab.eot)
        return Utterance(name, streamed_mel(padded, piece), seq, len(faster) / SAMPLE_RATE, speed,
                         teacher(padded) if teacher is not None else None)

    out, skipped, aligned = [], [], []
    for p in progress(prompts, desc="aligning training prompts"):
        audio = load_audio(p.path)
        try:
            words = align(audio, p.text)
        except AlignmentError as err:
            skipped.append(f"{p.name} ({err})")
            continue
        aligned.append((p.name, audio, words))
        out.append([utterance(p.name, audio, words, float(speed)) for speed in speeds])
    if skipped:
        log(f"careless_whisper: {len(skipped)} of {len(prompts)} prompts skipped (alignment): {skipped[0]} ...")
    for k in range(int(streams["count"]) if streams and aligned else 0):
        parts, audio, words, at = [], [], [], 0.0
        for i in rng.permutation(len(aligned))[: int(rng.integers(2, int(streams["max_prompts"]) + 1))]:
            name, a, ws = aligned[i]
            if parts and at + len(a) / SAMPLE_RATE > float(streams["max_seconds"]):
                break
            gap = np.zeros(int(rng.uniform(*streams["gap_s"]) * SAMPLE_RATE) if parts else 0, np.float32)
            at += len(gap) / SAMPLE_RATE
            audio += [gap, a]
            words += [Word(w.text, w.start + at, w.end + at) for w in ws]
            at += len(a) / SAMPLE_RATE
            parts.append(name)
        speed = float(speeds[int(rng.integers(len(speeds)))])
        out.append([utterance(f"stream{k}:" + "+".join(parts), np.concatenate(audio), words, speed)])
    return out


def chunk_loss(model, utt: Utterance, chunking: Chunking, n_frames: int, distill: float = 0.0) -> torch.Tensor:
    """Cross-entropy on the labels available at this chunk end; with ``distill`` > 0, plus that
    weight times the mean squared distance of the causal encoder's outputs to the offline
    encoder's (``utt.teacher``) over the frames heard so far."""
    whisper = base_model(model)
    device = model_device(model)  # utterances are prepared (and kept) on the CPU
    enc = encode_prefix(whisper.model.encoder, utt.mel[None, :, : 2 * n_frames + 1].to(device), n_frames, chunking)
    hidden = whisper.model.decoder(input_ids=utt.seq.input_ids[None].to(device), encoder_hidden_states=enc).last_hidden_state
    logits = whisper.proj_out(hidden)[0]
    labels = utt.seq.labels_at(n_frames * FRAME_SECONDS).to(device)
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    if distill:
        if utt.teacher is None:
            raise ValueError(f"train.distill={distill} needs the offline encoder's outputs: prepare(..., teacher=offline_encoder(model))")
        target = utt.teacher[:n_frames].to(device, enc.dtype)
        loss = loss + distill * F.mse_loss(enc[0, : len(target)], target)
    return loss


def candidate_frames(utt: Utterance, chunking: Chunking) -> list[int]:
    """Chunk ends (in encoder frames) up to 1 s after the last word, within the features and 30 s."""
    limit = min(complete_frames(utt.mel.shape[1]), 1500, int((float(utt.seq.label_end[-1]) + 0.5) / FRAME_SECONDS) + chunking.g)
    frames, step = [], 0
    while chunking.frames_after(step) <= limit:
        frames.append(chunking.frames_after(step))
        step += 1
    return frames


def warmup_cosine(warmup: int, total: int):
    """lr factor at optimiser step ``i``: linear warm-up over ``warmup`` steps, then a cosine to 0 at ``total``."""

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (i - warmup) / max(1, total - warmup))))

    return factor


def steps_per_epoch(utterances: list[list[Utterance]], chunking: Chunking, fraction: float) -> int:
    """Optimiser steps in one epoch at speed 1 (the schedule's length; other speeds differ by a few %)."""
    return sum(len(sample_chunk_steps(len(candidate_frames(v[0], chunking)), fraction, np.random.default_rng(0))) for v in utterances)


def fit_adapter(model, utterances: list[list[Utterance]], chunking: Chunking, cfg_train, fraction: float, directory, log=None, meta=None):
    """Train LoRA for ``cfg_train.epochs`` epochs; after every epoch the adapter, optimizer, schedule
    and epoch are saved to ``directory`` (atomically), so a killed run resumes at the last finished
    epoch. At the end the adapter is also written as a peft folder, ``directory/adapter`` (what
    ``transcribe --adapter`` loads), with ``meta`` (model name, chunk size) beside it."""
    from pathlib import Path

    from shared.io import atomic_torch_save, atomic_write_json, load_checkpoint

    directory = Path(directory)
    state_path = directory / "training.pt"
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg_train.lr, weight_decay=cfg_train.weight_decay, eps=cfg_train.eps)
    total = int(cfg_train.epochs) * steps_per_epoch(utterances, chunking, fraction)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(int(cfg_train.warmup), total))
    start = 0
    if state_path.is_file():
        state = load_checkpoint(state_path, model_device(model))
        for p, saved in zip(trainable, state["lora"]):
            p.data.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["epoch"])
    bar = progress(total=int(cfg_train.epochs) * len(utterances), initial=start * len(utterances), desc=f"LoRA {chunking.chunk_ms} ms")
    for epoch in range(start, int(cfg_train.epochs)):
        rng = np.random.default_rng([int(cfg_train.seed), epoch])
        losses = train_epoch(model, optimizer, schedule, utterances, chunking, fraction, rng, bar, float(cfg_train.get("distill") or 0))
        atomic_torch_save(state_path, {"lora": [p.detach().clone() for p in trainable], "optimizer": optimizer.state_dict(),
                                       "schedule": schedule.state_dict(), "epoch": epoch + 1})
        if log is not None:
            log({"loss": float(np.mean(losses)), "epoch": epoch + 1, "steps": len(losses), "lr": schedule.get_last_lr()[0]})
    bar.close()
    model.eval()
    model.save_pretrained(directory / "adapter")
    atomic_write_json(directory / "adapter" / "careless_whisper.json", {"chunk_ms": chunking.chunk_ms, "epochs": int(cfg_train.epochs), **(meta or {})})
    return model


def train_epoch(model, optimizer, schedule, utterances: list[list[Utterance]], chunking: Chunking, fraction: float,
                rng: np.random.Generator, progress=None, distill: float = 0.0) -> list[float]:
    """One pass over the utterances in random order, each at a randomly drawn speed."""
    losses = []
    model.train()
    for i in rng.permutation(len(utterances)):
        variants = utterances[i]
        utt = variants[rng.integers(len(variants))]
        frames = candidate_frames(utt, chunking)
        for k in sample_chunk_steps(len(frames), fraction, rng):
            loss = chunk_loss(model, utt, chunking, frames[k], distill)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    model.eval()
    return losses
