"""The rows of the table as one function: which patches train which model, then training.

    upscaler = fit_upscaler(cfg, clip, labels, seed=0, device="cpu", checkpoints=Path("ckpt"))
    sr = upscaler.upscale(lr_patches)              # uint8 SR patches, each routed to its chunk's model

``method.chunking`` (conf/experiment/stdo_<row>.yaml):
  bicubic   no model
  none      one model on every patch (``total_compute``: with the compute of STDO's k models together)
  temporal  k models on k consecutive time segments (NAS/CaFM-style)
  random    k models on k random equal-size chunks (same sizes as STDO's, no grouping)
  quantile  STDO: k models on the k quantile chunks of the per-patch labels
  quantile + ``joint``: JSTDO, one model on all of the hardest chunk, none of the easiest and a
            decreasing share in between (``jstdo.fractions``), evaluated on every patch
  ``modulated``: CaFM, one model on every patch with a channel-wise modulation per chunk (its
            own temporal chunks), as wide as STDO's k models' parameters allow, at their compute
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import chunking
from .evaluate import upscale_patches
from .model import WDSR, ChunkView, build, equal_parameter_width
from .patches import Grid
from .train import overfit, steps_for, total_steps_for

CHUNKINGS = ("bicubic", "none", "temporal", "random", "quantile")


@dataclass
class Upscaler:
    method: str
    grid: Grid
    models: list[WDSR] | None  # None: bicubic
    chunk: np.ndarray | None  # per patch, when there is more than one model

    @property
    def parameters(self) -> int:
        """Distinct parameters (CaFM's chunk views share one model)."""
        unique = {id(p): p for m in self.models or [] for p in m.parameters()}
        return sum(p.numel() for p in unique.values())

    def chunk_map(self, n_frames: int) -> np.ndarray | None:
        """[T, rows, cols] uint8: the side information shipped with the models."""
        if self.chunk is None:
            return None
        return self.chunk.astype(np.uint8).reshape(n_frames, self.grid.rows, self.grid.cols)

    def upscale(self, lr_patches: torch.Tensor, *, device: str) -> torch.Tensor:
        return upscale_patches(self.models, self.chunk, lr_patches, self.grid.scale, device=device)


def assign(method, labels: np.ndarray | None, n_frames: int, grid: Grid, k: int, seed: int) -> np.ndarray | None:
    """Chunk of every patch for the row, or None for rows with a single model (or none)."""
    n = n_frames * grid.per_frame
    kind = method.chunking
    if kind not in CHUNKINGS:
        raise ValueError(f"method.chunking={kind!r}; valid: {', '.join(CHUNKINGS)}")
    if kind in ("bicubic", "none"):
        return None
    if kind == "temporal":
        return chunking.temporal_chunks(n_frames, grid.per_frame, k)
    if kind == "random":
        return chunking.random_chunks(n, k, seed)
    return chunking.quantile_chunks(labels, k)[0]


def fit_upscaler(
    cfg,
    lr_patches: torch.Tensor,
    hr_patches: torch.Tensor,
    labels: np.ndarray | None,
    grid: Grid,
    n_frames: int,
    *,
    seed: int,
    device: str,
    checkpoints: Path | None = None,
    log=None,
) -> Upscaler:
    """Train the models of row ``cfg.method`` (resuming from ``checkpoints/`` when present)."""
    method, k = cfg.method, int(cfg.chunks)
    chunk = assign(method, labels, n_frames, grid, k, seed)
    if method.chunking == "bicubic":
        return Upscaler(method.name, grid, None, None)
    n = len(lr_patches)

    # total_compute rows get the steps of STDO's k models together (their chunks: k quantile chunks of the labels)
    stdo_sizes = np.bincount(chunking.quantile_chunks(labels, k)[0], minlength=k).tolist() if labels is not None else [n // k] * k
    total_steps = total_steps_for(cfg.train, stdo_sizes)

    def train_one(j: int, training_set, n_train: int, total_compute: bool, route: np.ndarray | None = None) -> WDSR:
        torch.manual_seed(seed * 1000 + j)  # each model its own, reproducible initialisation
        model = build(cfg.model, grid.scale) if route is None else build(cfg.model, grid.scale, k, equal_parameter_width(cfg.model, grid.scale, k))
        ckpt = None if checkpoints is None else checkpoints / f"model{j}.pt"
        steps = total_steps if total_compute else steps_for(cfg.train, n_train)
        scope = f"{method.name}/model{j}"
        return overfit(
            model, lr_patches, hr_patches, training_set, steps, cfg.train, seed=seed * 1000 + j, device=device, checkpoint=ckpt,
            desc=f"{method.name} model {j + 1}/{k if chunk is not None and route is None else 1} ({n_train} patches)",
            log=None if log is None else (lambda metrics, step: log(metrics, step, scope)), route=route,
        )

    if method.joint:  # JSTDO: one model on a difficulty-aware sample of the quantile chunks
        fractions = list(cfg.jstdo.fractions) if cfg.jstdo.fractions is not None else chunking.jstdo_fractions(k)
        if len(fractions) != k:
            raise ValueError(f"jstdo.fractions has {len(fractions)} entries for {k} chunks")

        def sample(epoch: int) -> np.ndarray:
            draw = epoch if cfg.jstdo.resample == "per_epoch" else 0
            return chunking.jstdo_subset(chunk, fractions, np.random.default_rng([seed, 7, draw]))

        n_train = len(sample(0))
        return Upscaler(method.name, grid, [train_one(0, sample, n_train, method.total_compute)], None)
    everything = np.arange(n)
    if method.get("modulated"):  # CaFM: one shared model on every patch, each through its chunk's modulation
        model = train_one(0, lambda e: everything, n, True, route=chunk)
        return Upscaler(method.name, grid, [ChunkView(model, j) for j in range(k)], chunk)
    if chunk is None:
        return Upscaler(method.name, grid, [train_one(0, lambda e: everything, n, method.total_compute)], None)
    models = []
    for j in range(k):
        members = np.flatnonzero(chunk == j)
        models.append(train_one(j, lambda e, m=members: m, len(members), False))
    return Upscaler(method.name, grid, models, chunk)
