"""Training: the per-chunk overfitting loop (brief 2.3), the joint (JSTDO) variant, and the general
SR model whose per-patch PSNR labels decide the chunks.

Recipe (official defaults): Adam lr 1e-3, L1 loss, batch 16 whole patches, no augmentation, cosine
annealing to 4e-8. The official trainer steps the cosine once per epoch over 50 epochs; we step it
per batch over the same span (identical at the end points, smoother in between) and keep the final
weights (the official code keeps the epoch with the lowest sampled training loss).

Batches are drawn without an RNG state to carry: epoch ``e`` visits the training patches in the
order ``default_rng([seed, e]).permutation``, so a run killed at any step resumes bit-identically
from its last checkpoint (model, optimizer, schedule, step).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.io import atomic_torch_save, load_checkpoint
from shared.progress import progress

from .model import WDSR
from .patches import to_float


def steps_for(cfg_train, n_train: int) -> int:
    """Steps of one model: ``train.steps``, or ``train.epochs`` passes over its ``n_train`` patches."""
    if cfg_train.get("epochs"):
        return int(cfg_train.epochs) * max(1, n_train // cfg_train.batch_size)
    return int(cfg_train.steps)


def total_steps_for(cfg_train, chunk_sizes: list[int]) -> int:
    """The compute of STDO's k chunk models together (what ``total_compute`` rows get, so that one
    model is compared with k at equal cost in every preset): k x ``train.steps``, or in epoch presets
    the sum of each model's passes over its own chunk (about ``epochs`` passes over every patch)."""
    return sum(steps_for(cfg_train, n) for n in chunk_sizes)


def overfit(
    model: WDSR,
    lr_patches: torch.Tensor,
    hr_patches: torch.Tensor,
    training_set: Callable[[int], np.ndarray],
    steps: int,
    cfg_train,
    *,
    seed: int,
    device: str,
    checkpoint: Path | None = None,
    desc: str = "overfit",
    log: Callable[[dict, int], None] | None = None,
    route: np.ndarray | None = None,
) -> WDSR:
    """Train ``model`` for ``steps`` L1 steps on the patches ``training_set(epoch)`` (indices into the
    uint8 patch tensors). Resumes from ``checkpoint`` when it exists; saves it every
    ``cfg_train.checkpoint_every`` steps and at the end. ``route`` (CaFM): each patch's chunk, which
    picks its modulation in the model."""
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg_train.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps), eta_min=cfg_train.lr_min)
    step = 0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step = int(state["step"])

    def save():
        if checkpoint is not None:
            atomic_torch_save(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step})

    first = training_set(0)
    batch = min(int(cfg_train.batch_size), len(first))
    per_epoch = max(1, len(first) // batch)  # drop_last, as the official loader; the size is the same every epoch
    epoch, order = None, None
    bar = progress(total=steps, initial=step, desc=desc)
    while step < steps:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = np.random.default_rng([seed, epoch]).permutation(training_set(epoch))
        at = (step % per_epoch) * batch
        idx = torch.from_numpy(order[at : at + batch])
        x, y = to_float(lr_patches[idx], device), to_float(hr_patches[idx], device)
        sr = model(x) if route is None else model(x, torch.from_numpy(route[idx.numpy()]).to(device))
        loss = F.l1_loss(sr, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        bar.update(1)
        if log is not None and (step % 50 == 0 or step == steps):
            log({"loss": loss.item(), "lr": schedule.get_last_lr()[0]}, step)
        if cfg_train.checkpoint_every and step % cfg_train.checkpoint_every == 0 and step < steps:
            save()
    bar.close()
    save()
    return model.eval()


# ---- the general model and the labels ----------------------------------------------------------


def random_crops(images: list[np.ndarray], scale: int, lr_size: int, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` aligned (LR, HR) crops, uint8, from whole HR images (LR made by Pillow bicubic), with flips."""
    from .data import downscale

    pairs = []
    for image in images:
        h, w = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
        if h // scale < lr_size or w // scale < lr_size:
            continue
        hr = image[:h, :w]
        pairs.append((downscale(hr[None], scale)[0], hr))
    if not pairs:
        raise ValueError(f"no training image is large enough for {lr_size}px LR crops at x{scale}")
    lr_out = np.empty((count, lr_size, lr_size, 3), np.uint8)
    hr_out = np.empty((count, lr_size * scale, lr_size * scale, 3), np.uint8)
    for n in range(count):
        lr, hr = pairs[rng.integers(len(pairs))]
        y, x = rng.integers(lr.shape[0] - lr_size + 1), rng.integers(lr.shape[1] - lr_size + 1)
        a = lr[y : y + lr_size, x : x + lr_size]
        b = hr[y * scale : (y + lr_size) * scale, x * scale : (x + lr_size) * scale]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        if rng.random() < 0.5:
            a, b = a[::-1], b[::-1]
        lr_out[n], hr_out[n] = a, b
    to_t = lambda arr: torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return to_t(lr_out), to_t(hr_out)


def train_general(images: list[np.ndarray], scale: int, cfg_general, model: WDSR, *, device: str, checkpoint: Path | None = None) -> WDSR:
    """A general SR model (the paper's pretrained WDSR, which is not available offline) trained on
    random crops of other videos' frames and of photographs; it only produces labels."""
    rng = np.random.default_rng(cfg_general.seed)
    lr, hr = random_crops(images, scale, cfg_general.lr_crop, cfg_general.crops, rng)
    everything = np.arange(len(lr))
    return overfit(
        model, lr, hr, lambda epoch: everything, int(cfg_general.steps), cfg_general.train,
        seed=cfg_general.seed, device=device, checkpoint=checkpoint, desc=f"general model x{scale}",
    )
