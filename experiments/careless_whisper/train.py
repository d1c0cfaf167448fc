"""Fine-tuning the causal model on weakly aligned chunk targets (brief 2.5-2.6).

For each utterance, a few chunk ends are sampled (``streaming_fraction`` of them); at each, the
encoder runs on the mel prefix under the block mask (the same features the stream sees), the
decoder is teacher-forced on the whole transcript, and the loss is cross-entropy on the labels
available at that chunk end (finished tokens, then end-of-text). One optimiser step per sample
point, as upstream. Only LoRA tensors train.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .align import AlignmentError, align
from .audio import SAMPLE_RATE, streamed_mel
from .decode import Vocabulary, base_model
from .encoder import FRAME_SECONDS, Chunking, complete_frames, encode_prefix
from .speech import load_audio
from .targets import IGNORE, TokenSequence, sample_chunk_steps

TAIL_SECONDS = 1.0  # silence appended to every utterance, so the last chunks (and EOT) are trained


@dataclass
class Utterance:
    name: str
    mel: torch.Tensor  # [80, M] streamed features
    seq: TokenSequence
    duration: float


def prepare(prompts, vocab: Vocabulary, chunking: Chunking, log=print) -> list[Utterance]:
    """Audio -> streamed mel, transcript -> aligned token targets; unalignable prompts are skipped (and counted)."""
    out, skipped = [], []
    for p in prompts:
        audio = load_audio(p.path)
        try:
            words = align(audio, p.text)
        except AlignmentError as err:
            skipped.append(f"{p.name} ({err})")
            continue
        padded = np.concatenate([audio, np.zeros(int(TAIL_SECONDS * SAMPLE_RATE), np.float32)])
        mel = streamed_mel(padded, SAMPLE_RATE * chunking.chunk_ms // 1000)
        out.append(Utterance(p.name, mel, TokenSequence.build(vocab.tokenizer, words, vocab.start, vocab.eot), len(audio) / SAMPLE_RATE))
    if skipped:
        log(f"careless_whisper: {len(skipped)} of {len(prompts)} prompts skipped (alignment): {skipped[0]} ...")
    return out


def chunk_loss(model, utt: Utterance, chunking: Chunking, n_frames: int) -> torch.Tensor:
    whisper = base_model(model)
    enc = encode_prefix(whisper.model.encoder, utt.mel[None, :, : 2 * n_frames + 1], n_frames, chunking)
    hidden = whisper.model.decoder(input_ids=utt.seq.input_ids[None], encoder_hidden_states=enc).last_hidden_state
    logits = whisper.proj_out(hidden)[0]
    labels = utt.seq.labels_at(n_frames * FRAME_SECONDS)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def candidate_frames(utt: Utterance, chunking: Chunking) -> list[int]:
    """Chunk ends (in encoder frames) up to 1 s after the last word, within the features and 30 s."""
    limit = min(complete_frames(utt.mel.shape[1]), 1500, int((float(utt.seq.label_end[-1]) + 0.5) / FRAME_SECONDS) + chunking.g)
    frames, step = [], 0
    while chunking.frames_after(step) <= limit:
        frames.append(chunking.frames_after(step))
        step += 1
    return frames


def fit_adapter(model, utterances: list[Utterance], chunking: Chunking, cfg_train, fraction: float, directory, log=None):
    """Train LoRA for ``cfg_train.epochs`` epochs; after every epoch the adapter, optimizer and epoch
    are saved to ``directory`` (atomically), so a killed run resumes at the last finished epoch."""
    from pathlib import Path

    from shared.io import atomic_torch_save
    from shared.progress import progress

    directory = Path(directory)
    state_path = directory / "training.pt"
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg_train.lr, weight_decay=cfg_train.weight_decay, eps=cfg_train.eps)
    start = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        for p, saved in zip(trainable, state["lora"]):
            p.data.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    bar = progress(total=int(cfg_train.epochs) * len(utterances), initial=start * len(utterances), desc=f"LoRA {chunking.chunk_ms} ms")
    for epoch in range(start, int(cfg_train.epochs)):
        losses = train_epoch(model, optimizer, utterances, chunking, fraction, np.random.default_rng([int(cfg_train.seed), epoch]), bar)
        atomic_torch_save(state_path, {"lora": [p.detach().clone() for p in trainable], "optimizer": optimizer.state_dict(), "epoch": epoch + 1})
        if log is not None:
            log({"loss": float(np.mean(losses)), "epoch": epoch + 1, "steps": len(losses)})
    bar.close()
    model.eval()
    return model


def train_epoch(model, optimizer, utterances: list[Utterance], chunking: Chunking, fraction: float, rng: np.random.Generator, progress=None) -> list[float]:
    losses = []
    model.train()
    for i in rng.permutation(len(utterances)):
        utt = utterances[i]
        frames = candidate_frames(utt, chunking)
        for k in sample_chunk_steps(len(frames), fraction, rng):
            loss = chunk_loss(model, utt, chunking, frames[k])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    model.eval()
    return losses
