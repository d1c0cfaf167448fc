"""Which patches train which model: STDO's quantile chunks and the baselines' chunks.

Every function returns ``chunk[n]`` in ``0..k-1`` for each patch ``n`` (index order of ``patches.py``).
"""

from __future__ import annotations

import numpy as np


def quantile_thresholds(labels: np.ndarray, k: int) -> np.ndarray:
    """The official cut points: ``th_j = sorted(labels)[floor(j * n / k) - 1]`` for ``j = 1 .. k-1``."""
    labels = np.asarray(labels, dtype=np.float64)
    n = len(labels)
    if k < 1 or n < k:
        raise ValueError(f"cannot cut {n} patches into {k} chunks")
    if np.isnan(labels).any():
        raise ValueError("labels contain NaN (a patch whose PSNR could not be computed)")
    ordered = np.sort(labels)
    return np.array([ordered[(j * n) // k - 1] for j in range(1, k)])


def quantile_chunks(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """STDO's chunks: rank the per-patch PSNR labels of the whole video and cut them into ``k`` equal
    quantile groups. Chunk 0 holds the lowest PSNR (the hardest, texture-rich patches).

    Patch ``n`` goes to chunk ``j`` when ``th_j < label_n <= th_{j+1}``: ties at a cut point go to the
    lower chunk, so counts can differ by the size of a tie (as in the official code). Unlike the
    official code, no label is dropped (a label <= 0 there falls below ``th_0 = 0``; here
    ``th_0 = -inf``), and a perfect patch (+inf) lands in the last chunk.
    """
    thresholds = quantile_thresholds(labels, k)
    return np.searchsorted(thresholds, np.asarray(labels, dtype=np.float64), side="left"), thresholds


def temporal_chunks(n_frames: int, per_frame: int, k: int) -> np.ndarray:
    """NAS/CaFM-style: ``k`` consecutive time segments of (nearly) equal length, all positions of a frame together."""
    if n_frames < k:
        raise ValueError(f"cannot cut {n_frames} frames into {k} time segments")
    frame_chunk = (np.arange(n_frames) * k) // n_frames
    return np.repeat(frame_chunk, per_frame)


def random_chunks(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` random chunks of equal size (+-1): isolates the grouping idea from 'k times the parameters'."""
    order = np.random.default_rng(seed).permutation(n)
    chunk = np.empty(n, dtype=np.int64)
    chunk[order] = (np.arange(n) * k) // n
    return chunk


def jstdo_fractions(k: int) -> list[float]:
    """Default sampling fractions of the data-aware joint training: all of the hardest chunk, none of
    the easiest, linearly decreasing in between (``p_j = 1 - j / (k - 1)``). An assumption: the
    released code has no joint training and the paper's exact proportions are not public."""
    return [1.0] if k == 1 else [1.0 - j / (k - 1) for j in range(k)]


def jstdo_subset(chunk: np.ndarray, fractions, rng: np.random.Generator) -> np.ndarray:
    """Patch indices for one round of joint training: ``round(p_j * |chunk j|)`` drawn from chunk ``j``."""
    chunk = np.asarray(chunk)
    picked = []
    for j, p in enumerate(fractions):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"JSTDO fraction for chunk {j} must be in [0, 1], got {p}")
        members = np.flatnonzero(chunk == j)
        picked.append(rng.choice(members, size=round(p * len(members)), replace=False))
    subset = np.sort(np.concatenate(picked))
    if len(subset) == 0:
        raise ValueError(f"JSTDO fractions {list(fractions)} select no patch")
    return subset
