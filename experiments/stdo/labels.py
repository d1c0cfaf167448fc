"""Per-patch difficulty labels: the PSNR a general SR model reaches on each patch (brief 2.1 step 2).

The authors label with a WDSR pretrained on DIV2K (Google Drive only). Offline we train a general
model of the same architecture on random crops of *other* videos (the bundled clips minus the one
being labelled) and of photographs shipped with matplotlib; ``labels.source=file labels.file=PATH``
labels with a general model trained elsewhere (the paper's DIV2K-trained WDSR, once converted to this
WDSR's parameter names, or the ``general_<clip>_x<scale>`` checkpoint of an earlier run);
``labels.source=bicubic`` labels with bicubic's PSNR instead (the fallback). The run's config
records which one was used.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from shared.errors import ConfigError, DataError
from shared.io import load_checkpoint

from .data import BUNDLED, load_video, photographs
from .evaluate import patch_mse
from .model import WDSR, bicubic_upsample, build
from .patches import to_float
from .train import train_general


@lru_cache(maxsize=4)
def general_images(exclude: str | None, frames_per_clip: int, with_photographs: bool = True) -> tuple[np.ndarray, ...]:
    """Training images for the general model: evenly spaced frames of every bundled clip except
    ``exclude``, plus the photographs."""
    images = []
    for name in BUNDLED:
        if name == exclude:
            continue
        frames = load_video(name).frames
        images.extend(frames[np.linspace(0, len(frames) - 1, frames_per_clip).round().astype(int)])
    if with_photographs:
        images.extend(photographs())
    return tuple(images)


def make_labels(cfg, lr_patches: torch.Tensor, hr_patches: torch.Tensor, scale: int, clip: str, *, device: str, checkpoint: Path | None = None) -> np.ndarray:
    """float64 PSNR label per patch, from ``cfg.labels.source`` (general | file | bicubic)."""
    source = cfg.labels.source
    shave = cfg.labels.shave if cfg.labels.shave is not None else scale + 4  # the official label shave
    if source == "bicubic":
        return label_patches(None, lr_patches, hr_patches, scale, shave, device=device)
    if source == "file":
        return label_patches(load_general(cfg, scale), lr_patches, hr_patches, scale, shave, device=device)
    if source != "general":
        raise ConfigError(f"labels.source={source!r}; valid: general, file, bicubic")
    g = cfg.labels.general
    torch.manual_seed(g.seed)
    model = build(cfg.model, scale)
    images = list(general_images(clip, int(g.frames_per_clip), bool(g.photographs)))
    model = train_general(images, scale, g, model, device=device, checkpoint=checkpoint)
    return label_patches(model, lr_patches, hr_patches, scale, shave, device=device)


def load_general(cfg, scale: int) -> WDSR:
    """The pretrained general model of ``labels.file``: a state dict of this experiment's WDSR (the
    ``model`` config at ``scale``), alone or under "model" (a run's checkpoint). Loaded with
    ``weights_only`` (a user's file cannot run code); a file for another scale or architecture is
    refused in one line."""
    if not cfg.labels.get("file"):
        raise ConfigError("labels.source=file needs labels.file=PATH (a general WDSR state dict; labels.source=general trains one)")
    path = Path(cfg.labels.file)
    if not path.is_file():
        raise DataError(f"labels.file={path}: no such file")
    state = load_checkpoint(path, from_user=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    model = build(cfg.model, scale)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else type(err).__name__)
        raise DataError(f"labels.file={path} is not a general model for this WDSR at x{scale} (model config {dict(cfg.model)}): {detail}") from None
    return model


@torch.no_grad()
def label_patches(model: WDSR | None, lr_patches: torch.Tensor, hr_patches: torch.Tensor, scale: int, shave: int, *, device: str, batch: int = 64) -> np.ndarray:
    """Per-patch PSNR (float64, dB) of ``model``'s output, or of bicubic when ``model`` is None,
    against the HR patch; quantised to 8 bits and shaved by ``shave`` pixels, as the official labels."""
    mse = []
    for start in range(0, len(lr_patches), batch):
        x = to_float(lr_patches[start : start + batch], device)
        sr = bicubic_upsample(x, scale) if model is None else model.to(device).eval()(x)
        mse.append(patch_mse(sr, hr_patches[start : start + batch].to(device), shave))
    mse = torch.cat(mse).cpu().numpy()
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)  # +inf for a perfect patch: sorts last, as in the official code
