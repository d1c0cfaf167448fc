"""The bundle a server ships beside the LR video: the models, the model config, the grid and the
per-frame chunk map (which model upscales each patch; the client cannot compute it, the labels need HR).

One file written by ``torch.save`` (tensors, numbers and strings only, so ``weights_only`` loading
works and a bundle cannot run code). Its size on disk is the row's "bytes to ship".
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from shared.errors import DataError
from shared.io import atomic_torch_save, load_checkpoint

from .method import Upscaler
from .model import ChunkView, build
from .patches import Grid

FORMAT = "streamlab-stdo-bundle/1"


def save_bundle(path: str | os.PathLike, upscaler: Upscaler, model_cfg, n_frames: int, source: str = "") -> int:
    """Write the bundle atomically; returns its size in bytes. A CaFM upscaler ships its one shared
    model once (with its width and chunk count), not once per chunk view."""
    chunk_map = upscaler.chunk_map(n_frames)
    models = upscaler.models or []
    modulated = None
    if models and isinstance(models[0], ChunkView):
        shared = models[0].model
        modulated = {"chunks": shared.chunks, "num_residual_units": shared.head.out_channels}
        models = [shared]
    atomic_torch_save(
        path,
        {
            "format": FORMAT,
            "method": upscaler.method,
            "grid": asdict(upscaler.grid),
            "n_frames": n_frames,
            "model": OmegaConf.to_container(model_cfg, resolve=True),
            "models": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in models],
            "modulated": modulated,
            "chunk_map": None if chunk_map is None else torch.from_numpy(chunk_map),
            "source": source,
        },
    )
    return Path(path).stat().st_size


def load_bundle(path: str | os.PathLike, device: str = "cpu") -> tuple[Upscaler, int]:
    """(upscaler, number of frames its chunk map covers); clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such bundle (make one with `python -m experiments.stdo fit VIDEO`)")
    try:
        state = load_checkpoint(path, from_user=True)  # a bundle may come from anyone: weights only
    except DataError as err:
        raise DataError(f"{err}; not a readable STDO bundle, re-run fit") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not an STDO bundle of format {FORMAT}")
    grid = Grid(**state["grid"])
    cfg = OmegaConf.create(state["model"])
    modulated = state.get("modulated")
    models = []
    for weights in state["models"]:
        model = build(cfg, grid.scale, **(modulated or {}))
        model.load_state_dict(weights)
        models.append(model.to(device).eval())
    if modulated:
        models = [ChunkView(models[0], j) for j in range(int(modulated["chunks"]))]
    chunk_map = state["chunk_map"]
    chunk = None if chunk_map is None else chunk_map.numpy().reshape(-1).astype(np.int64)
    return Upscaler(state["method"], grid, models or None, chunk), int(state["n_frames"])
