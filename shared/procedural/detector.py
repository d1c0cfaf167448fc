"""Detector-style metrics (StreamDiT brief 11; shared with the autoregressive-video experiments): read the known object properties back from generated frames.

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
- ``follows_prompt`` / ``frames_to_follow``: after a prompt switch, whether a frame shows what the
  new prompt names and nothing the old one named that the new one dropped, and how many frames it
  takes until it does (two frames in a row);
- ``frame_jump`` / ``boundary_jump``: the pixel change across a frame (a switch, a chunk boundary)
  over the clip's median change between consecutive frames: 1 is as smooth as anywhere else, a
  seam or a visual reset is well above 1 (temporal consistency).
- ``breaks`` / ``boundary_breaks``: object continuity between consecutive frames (temporal
  consistency by identity and position): the share of (prompted object, transition) pairs where the
  object's track breaks: it is one valid object in one frame and not in the other (vanished,
  recoloured, split, appeared), or valid in both but its centroid moved more than any real clip
  moves one (``Reference.max_step``). ``boundary_breaks`` counts only the transitions into a new
  chunk; the data's own rate (occlusions) is the reference row's.
- ``flicker``: mean absolute frame-to-frame change of the pixels that are background in both frames
  ([-1, 1] units); the data's background is flat, so 0 is the data's value, and a generator whose
  background shimmers from frame to frame scores above it (a static blemish does not flicker).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .clips import BACKGROUND, COLOURS, colour_masks, make_clip

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
    max_step: float  # a valid object's centroid moving further between two frames is a break (1.5 x the 99.9th percentile of unoccluded real steps)

    @classmethod
    def measure(cls, size: int, frames: int, objects: int, speed: float, scale: float = 1.0, stripes: bool = True, clips: int = 64,
                seed: int = 10_000) -> Reference:
        counts, speeds, free_steps = [], [], []
        rng = np.random.default_rng(seed)
        for _ in range(clips):
            clip = make_clip(rng, frames=frames, size=size, objects=objects, speed=speed, scale=scale, stripes=stripes)
            found = detect(clip.video, clip.colours)
            for k in range(objects):
                alone = _unoccluded(clip, k)
                counts += list(found[k, alone, 2])  # the largest blob of an unoccluded object: its size
                step = np.hypot(*np.diff(found[k, :, :2], axis=0).T)
                free_steps += list(step[alone[1:] & alone[:-1]])  # how far an object moves in a frame when nothing covers it
            speeds.append(_speeds(found))
        counts = np.asarray(counts)
        low, high = np.percentile(counts, [1, 99])
        return cls(0.5 * float(low), 1.5 * float(high), float(np.nanmean(np.concatenate(speeds))), max(4, int(0.25 * low)),
                   1.5 * float(np.percentile(free_steps, 99.9)))


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


def score_video(video: np.ndarray, colours: list[str], ref: Reference, bin_frames: int, chunk: int | None = None) -> dict:
    """All metrics of one generated video [F, 3, S, S] in [-1, 1] prompted with ``colours``; with
    ``chunk`` (frames per generated chunk) also the track breaks at chunk boundaries."""
    validity, found = frame_validity(video, colours, ref)
    xy = found[:, :, :2]
    accel = np.hypot(*(xy[:, 2:] - 2 * xy[:, 1:-1] + xy[:, :-2]).transpose(2, 0, 1))
    accel = accel[np.isfinite(accel)]
    speeds = _speeds(found)
    hist = colour_histogram(video)
    first, last = slice(0, bin_frames), slice(len(video) - bin_frames, len(video))
    breaks = track_breaks(video, colours, ref)
    extra = {}
    if chunk is not None and len(video) > chunk:
        extra["boundary_breaks"] = float(breaks[np.arange(1, len(video)) % chunk == 0].mean())
    return extra | {
        "breaks": float(breaks.mean()) if len(breaks) else float("nan"),
        "flicker": flicker(video),
        "validity": float(validity.mean()),
        "jerk_px": float(accel.mean()) if len(accel) else float("nan"),
        "accelerations": accel,
        "dynamic": float(speeds.mean() / ref.speed) if len(speeds) else 0.0,
        "drift": float(validity[first].mean() - validity[last].mean()),
        "colour_drift": float(np.abs(hist[first].mean(0) - hist[last].mean(0)).sum()),
        "per_frame_validity": validity,
    }


def track_breaks(video: np.ndarray, colours: list[str], ref: Reference) -> np.ndarray:
    """[F - 1]: per transition (frame t - 1 to t), the share of prompted objects whose track breaks
    (valid in one frame and not the other, or valid in both and moved more than ``ref.max_step``)."""
    found = detect(video, colours)
    largest, total = found[:, :, 2], found[:, :, 3]
    ok = (largest >= ref.min_pixels) & (largest <= ref.max_pixels) & (largest >= COMPACT * total)  # [objects, F]
    step = np.hypot(*np.diff(found[:, :, :2], axis=1).transpose(2, 0, 1))
    both = ok[:, 1:] & ok[:, :-1]
    broken = (ok[:, 1:] != ok[:, :-1]) | (both & (np.nan_to_num(step, nan=0.0) > ref.max_step))
    return broken.mean(axis=0)


def flicker(video: np.ndarray) -> float:
    """Mean |frame t - frame t-1| over the pixels that are background (not a colour) in both frames."""
    rgb = (video + 1) / 2
    background = rgb.max(axis=1) <= BACKGROUND + 0.15  # [F, S, S], the colour detector's own threshold
    still = background[1:] & background[:-1]
    change = np.abs(np.diff(video.astype(np.float64), axis=0)).mean(axis=1)
    return float(change[still].mean()) if still.any() else float("nan")


def aggregate(scores: list[dict]) -> dict:
    """Means (and spreads) over videos; ``jerk_px`` pools every valid triple of every video (a video
    whose objects are never tracked three frames in a row has no smoothness of its own)."""
    accel = np.concatenate([s["accelerations"] for s in scores])
    out = {"jerk_px": float(accel.mean()) if len(accel) else float("nan")}
    jerks = np.array([s["jerk_px"] for s in scores], dtype=float)
    out["jerk_px_std"] = float(np.nanstd(jerks)) if np.isfinite(jerks).any() else float("nan")
    for key in ("validity", "dynamic", "drift", "colour_drift", "breaks", "boundary_breaks", "flicker"):
        if not all(key in s for s in scores):
            continue
        values = np.array([s[key] for s in scores], dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if len(finite) else float("nan")
        out[f"{key}_std"] = float(finite.std()) if len(finite) else float("nan")
    return out


def _found_ok(video: np.ndarray, colours: list[str], ref: Reference) -> np.ndarray:
    """[colours, F]: each colour present as one compact object of a plausible size."""
    found = detect(video, colours)
    largest, total = found[:, :, 2], found[:, :, 3]
    return (largest >= ref.min_pixels) & (largest <= ref.max_pixels) & (largest >= COMPACT * total)


def follows_prompt(video: np.ndarray, before: list[str], after: list[str], ref: Reference) -> np.ndarray:
    """[F] bool: every colour of the new prompt ``after`` is one valid object, and no colour that
    only the old prompt ``before`` named is visible (a blob of at least ``ref.spurious_pixels``)."""
    ok = _found_ok(video, after, ref).all(axis=0)
    dropped = [c for c in before if c not in after]
    if dropped:
        ok &= ~(detect(video, dropped)[:, :, 2] >= ref.spurious_pixels).any(axis=0)
    return ok


def frames_to_follow(video: np.ndarray, switch: int, before: list[str], after: list[str], ref: Reference, hold: int = 2) -> int:
    """Frames from ``switch`` until the video follows the new prompt for ``hold`` frames in a row
    (0: at once). Never: the frames left after the switch (a censored count, so means stay finite)."""
    ok = follows_prompt(video[switch:], before, after, ref)
    for f in range(len(ok) - hold + 1):
        if ok[f : f + hold].all():
            return f
    return len(ok)


def _steps(video: np.ndarray) -> np.ndarray:
    """[F - 1]: mean absolute pixel change from each frame to the next."""
    return np.abs(np.diff(video.astype(np.float64), axis=0)).mean(axis=tuple(range(1, video.ndim)))


def frame_jump(video: np.ndarray, frame: int) -> float:
    """Pixel change from frame - 1 to ``frame`` over the clip's median change per frame."""
    if not 1 <= frame < len(video):
        raise ValueError(f"frame {frame} has no predecessor in a {len(video)}-frame video")
    steps = _steps(video)
    return float(steps[frame - 1] / max(np.median(steps), 1e-12))


def boundary_jump(video: np.ndarray, chunk: int) -> float:
    """Mean change across chunk boundaries (frames chunk, 2 chunk, ...) over the mean change inside
    chunks: 1 when chunks join as smoothly as frames inside a chunk, above 1 for seams."""
    steps = _steps(video)
    at_boundary = (np.arange(1, len(video)) % chunk) == 0
    if not at_boundary.any() or at_boundary.all():
        raise ValueError(f"a {len(video)}-frame video in chunks of {chunk} has no boundary and no inside to compare")
    return float(steps[at_boundary].mean() / max(steps[~at_boundary].mean(), 1e-12))
