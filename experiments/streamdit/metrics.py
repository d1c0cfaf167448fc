"""Detector-style metrics (brief 11): read the known object properties back from generated frames.

No pretrained network is involved: the colour detector of ``data.find_objects`` finds each prompted
object; what real clips look like to that detector (object sizes, speeds) is measured once on
held-out procedural clips (``Reference``), and every metric is stated against it.

- ``validity``: per frame, prompted objects found as one compact blob of a plausible size (the
  largest connected component of the colour's pixels holds at least ``COMPACT`` of them), divided by
  (prompted objects + spurious colour blobs). A vanished, recoloured, shrunken, scattered or
  duplicated object lowers it; so does colour speckle, which has the right colours but no shape.
- ``jerk_px``: mean |second difference| of an object's centroid (pixels / frame^2) over three
  consecutive frames where its largest blob is tracked; constant velocity gives 0, a wall bounce
  about twice the speed; a blob hopping around in speckle gives several pixels.
  The VBench "motion smoothness" analogue (lower is smoother).
- ``dynamic``: mean centroid speed over the real clips' mean speed: 1 moves like the data, 0 is
  the static-content failure the paper reports for FIFO-Diffusion.
- ``drift``: validity over the first buffer-length of a long rollout minus over the last one;
  ``colour_drift``: L1 distance between the first and last bins' colour histograms (the share of
  pixels nearest each palette colour, plus background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .data import BACKGROUND, COLOURS, colour_masks, make_clip

PALETTE = list(COLOURS)
COMPACT = 0.7  # share of a colour's pixels its largest 8-connected blob must hold to count as one object
EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Reference:
    """The detector's view of real clips: the plausible pixel count of one object and its speed."""

    min_pixels: float
    max_pixels: float
    speed: float  # mean centroid speed, pixels / frame
    spurious_pixels: int  # a non-prompted colour blob this large counts as a spurious object

    @classmethod
    def measure(cls, size: int, frames: int, objects: int, speed: float, scale: float = 1.0, stripes: bool = True, clips: int = 64,
                seed: int = 10_000) -> Reference:
        counts, speeds = [], []
        rng = np.random.default_rng(seed)
        for _ in range(clips):
            clip = make_clip(rng, frames=frames, size=size, objects=objects, speed=speed, scale=scale, stripes=stripes)
            found = detect(clip.video, clip.colours)
            for k in range(objects):
                alone = _unoccluded(clip, k)
                counts += list(found[k, alone, 2])  # the largest blob of an unoccluded object: its size
            speeds.append(_speeds(found))
        counts = np.asarray(counts)
        low, high = np.percentile(counts, [1, 99])
        return cls(0.5 * float(low), 1.5 * float(high), float(np.nanmean(np.concatenate(speeds))), max(4, int(0.25 * low)))


def _unoccluded(clip, k: int) -> np.ndarray:
    others = [j for j in range(len(clip.colours)) if j != k]
    d = [np.hypot(*(clip.tracks[k, :, :2] - clip.tracks[j, :, :2]).T) for j in others]
    return np.all([dj > clip.radius[k] + clip.radius[j] + 1 for dj, j in zip(d, others)], axis=0) if others else np.ones(clip.tracks.shape[1], bool)


def blobs(mask: np.ndarray) -> tuple[float, float, int, int]:
    """(centroid x, centroid y, pixels) of the largest 8-connected blob of ``mask``, and all its pixels."""
    total = int(mask.sum())
    if total == 0:
        return np.nan, np.nan, 0, 0
    labels, _ = ndimage.label(mask, structure=EIGHT)
    sizes = np.bincount(labels.ravel())[1:]
    biggest = labels == (int(sizes.argmax()) + 1)
    yy, xx = np.nonzero(biggest)
    return float(xx.mean() + 0.5), float(yy.mean() + 0.5), int(sizes.max()), total


def detect(video: np.ndarray, colours: list[str]) -> np.ndarray:
    """[objects, F, 4]: per prompted colour and frame, the centroid x, y and size of its largest blob
    and the colour's total pixel count (NaN, NaN, 0, 0 if absent)."""
    out = np.zeros((len(colours), len(video), 4))
    for f, frame in enumerate(video):
        for k, mask in enumerate(colour_masks(frame, colours).values()):
            out[k, f] = blobs(mask)
    return out


def _speeds(found: np.ndarray) -> np.ndarray:
    step = np.hypot(*np.diff(found[:, :, :2], axis=1).transpose(2, 0, 1))
    return step[np.isfinite(step)]


def colour_histogram(video: np.ndarray) -> np.ndarray:
    """[F, 7]: share of pixels nearest each palette colour (above the background), then background."""
    rgb = (video + 1) / 2  # [F, 3, S, S]
    bright = rgb.max(axis=1)
    chroma = rgb / np.maximum(bright[:, None], 1e-6)
    palette = np.array([COLOURS[c] for c in PALETTE])
    palette = palette / palette.max(axis=1, keepdims=True)
    nearest = ((chroma[:, None] - palette[None, :, :, None, None]) ** 2).sum(axis=2).argmin(axis=1)
    coloured = bright > BACKGROUND + 0.15
    hist = np.stack([(coloured & (nearest == i)).mean(axis=(1, 2)) for i in range(len(PALETTE))] + [(~coloured).mean(axis=(1, 2))], axis=1)
    return hist


def frame_validity(video: np.ndarray, colours: list[str], ref: Reference) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame validity [F] and the tracked detections [objects, F, 4] (largest blob at least the
    smallest real object; others NaN), which jerk and speed are measured on."""
    found = detect(video, colours)
    largest, total = found[:, :, 2], found[:, :, 3]
    ok = (largest >= ref.min_pixels) & (largest <= ref.max_pixels) & (largest >= COMPACT * total)
    others = [c for c in PALETTE if c not in colours]
    spurious = detect(video, others)[:, :, 2] >= ref.spurious_pixels if others else np.zeros((0, len(video)), bool)
    validity = ok.sum(axis=0) / (len(colours) + spurious.sum(axis=0))
    found[largest < ref.min_pixels] = np.nan
    return validity, found


def score_video(video: np.ndarray, colours: list[str], ref: Reference, bin_frames: int) -> dict:
    """All metrics of one generated video [F, 3, S, S] in [-1, 1] prompted with ``colours``."""
    validity, found = frame_validity(video, colours, ref)
    xy = found[:, :, :2]
    accel = np.hypot(*(xy[:, 2:] - 2 * xy[:, 1:-1] + xy[:, :-2]).transpose(2, 0, 1))
    accel = accel[np.isfinite(accel)]
    speeds = _speeds(found)
    hist = colour_histogram(video)
    first, last = slice(0, bin_frames), slice(len(video) - bin_frames, len(video))
    return {
        "validity": float(validity.mean()),
        "jerk_px": float(accel.mean()) if len(accel) else float("nan"),
        "accelerations": accel,
        "dynamic": float(speeds.mean() / ref.speed) if len(speeds) else 0.0,
        "drift": float(validity[first].mean() - validity[last].mean()),
        "colour_drift": float(np.abs(hist[first].mean(0) - hist[last].mean(0)).sum()),
        "per_frame_validity": validity,
    }


def aggregate(scores: list[dict]) -> dict:
    """Means (and spreads) over videos; ``jerk_px`` pools every valid triple of every video (a video
    whose objects are never tracked three frames in a row has no smoothness of its own)."""
    accel = np.concatenate([s["accelerations"] for s in scores])
    out = {"jerk_px": float(accel.mean()) if len(accel) else float("nan")}
    jerks = np.array([s["jerk_px"] for s in scores], dtype=float)
    out["jerk_px_std"] = float(np.nanstd(jerks)) if np.isfinite(jerks).any() else float("nan")
    for key in ("validity", "dynamic", "drift", "colour_drift"):
        values = np.array([s[key] for s in scores], dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if len(finite) else float("nan")
        out[f"{key}_std"] = float(finite.std()) if len(finite) else float("nan")
    return out
