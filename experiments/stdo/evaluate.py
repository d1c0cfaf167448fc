"""Quality, size and speed of an upscaler: the paper's patch PSNR and the full-frame PSNR.

- Outputs are quantised as saved 8-bit images: ``round(255 * sr)`` clipped to [0, 255].
- Paper PSNR (``psnr``): ``-10 log10`` of the mean over patches of each patch's MSE, after shaving
  4 pixels from every patch border (the official final metric; RGB, not Y). Not the mean of PSNRs.
- Full-frame PSNR (``psnr_frame``): the stitched frames, no shave, seams included. With an exact
  tiling it equals the shave-0 mean-patch-MSE PSNR (tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from .model import WDSR, bicubic_upsample
from .patches import Grid, to_float, to_frames, to_patches

FINAL_SHAVE = 4  # official all-chunk metric; the per-chunk trainer logs shave scale + 4


def quantise(sr: torch.Tensor) -> torch.Tensor:
    """Float output -> uint8 as a saved image would hold it."""
    return sr.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def patch_mse(sr: torch.Tensor, hr_u8: torch.Tensor, shave: int) -> torch.Tensor:
    """Per-patch MSE (float64, in [0, 1] units) of the quantised ``sr`` against uint8 ``hr``."""
    if sr.shape != hr_u8.shape:
        raise ValueError(f"patch_mse: shapes differ, {tuple(sr.shape)} vs {tuple(hr_u8.shape)}")
    h, w = sr.shape[-2:]
    if 2 * shave >= min(h, w):
        raise ValueError(f"shave {shave} leaves no pixel of a {w}x{h} patch")
    a = quantise(sr) if sr.is_floating_point() else sr
    diff = (a.double() - hr_u8.double()) / 255.0
    if shave:
        diff = diff[..., shave:-shave, shave:-shave]
    return diff.pow(2).mean(dim=(1, 2, 3))


def psnr_from_mse(mse) -> float:
    mse = float(np.mean(mse))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


@torch.no_grad()
def upscale_patches(models: Sequence[WDSR] | None, chunk: np.ndarray | None, lr_patches: torch.Tensor, scale: int, *, device: str, batch: int = 64) -> torch.Tensor:
    """uint8 SR patches: patch ``n`` through ``models[chunk[n]]`` (one model: ``chunk`` None; bicubic: ``models`` None)."""
    n, c, h, w = lr_patches.shape
    out = torch.empty((n, c, h * scale, w * scale), dtype=torch.uint8)
    if models is None:
        routes = [(None, np.arange(n))]
    elif chunk is None:
        routes = [(models[0], np.arange(n))]
    else:
        routes = [(m, np.flatnonzero(chunk == j)) for j, m in enumerate(models)]
    for model, members in routes:
        for start in range(0, len(members), batch):
            idx = torch.from_numpy(members[start : start + batch])
            x = to_float(lr_patches[idx], device)
            sr = bicubic_upsample(x, scale) if model is None else model(x)
            out[idx] = quantise(sr).cpu()
    return out


def scores(sr_u8: torch.Tensor, hr_u8: torch.Tensor, grid: Grid, chunk: np.ndarray | None) -> dict:
    """Paper PSNR (shave 4), full-frame PSNR (shave 0), per-frame PSNR, and per-chunk PSNR."""
    mse4 = patch_mse(sr_u8, hr_u8, FINAL_SHAVE).numpy()
    mse0 = patch_mse(sr_u8, hr_u8, 0).numpy()
    per_frame = mse0.reshape(-1, grid.per_frame).mean(1)
    out = {"psnr": psnr_from_mse(mse4), "psnr_frame": psnr_from_mse(mse0), "per_frame_psnr": [psnr_from_mse(m) for m in per_frame], "patch_mse": mse4}
    if chunk is not None:
        out["per_chunk_psnr"] = [psnr_from_mse(mse4[chunk == j]) for j in range(int(chunk.max()) + 1)]
    return out


@torch.no_grad()
def upscale_frames(models: Sequence[WDSR] | None, chunk_map: np.ndarray | None, lr_frames: np.ndarray, grid: Grid, *, device: str) -> np.ndarray:
    """Whole LR frames [T, h, w, 3] uint8 -> SR frames [T, H, W, 3] uint8: slice, route, stitch."""
    patches = to_patches(lr_frames, grid.rows, grid.cols)
    chunk = None if chunk_map is None else np.asarray(chunk_map).reshape(-1)
    sr = upscale_patches(models, chunk, patches, grid.scale, device=device, batch=grid.per_frame)
    return to_frames(sr, grid.rows, grid.cols).numpy()


@torch.no_grad()
def upscaling_fps(models, chunk_map, lr_frames: np.ndarray, grid: Grid, *, device: str, frames: int = 4) -> float:
    """Frames per second of ``upscale_frames`` one frame at a time (slice, route, stitch, copy back),
    median over ``frames`` frames after one warm-up frame."""
    times = []
    for t in range(min(frames, len(lr_frames)) + 1):
        t_index = t % len(lr_frames)
        cm = None if chunk_map is None else chunk_map[t_index : t_index + 1]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        upscale_frames(models, cm, lr_frames[t_index : t_index + 1], grid, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1.0 / float(np.median(times[1:]))
