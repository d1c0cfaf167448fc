"""Procedural videos with known ground truth (StreamDiT brief 11, shared with the autoregressive
video experiments): textured circles, squares and triangles that move at constant velocity, bounce
off the walls, rotate and occlude each other, each clip described by a short "text" (shape and
colour words per object) that conditions the model.

    clip = make_clip(np.random.default_rng(0), frames=16, size=32, objects=2)
    clip.video        # [F, 3, S, S] float32 in [-1, 1]
    clip.text         # ["red", "circle", "blue", "square"]; tokens(clip.text) -> ids (0 = null)
    clip.tracks       # [objects, F, 3]: centre x, centre y (pixels), angle (radians): what metrics read back

Prompts can be chosen (``colours=``, ``shapes=``: the same seed then gives the same motion) and can
switch mid-clip: ``switches=[Switch(24, 0, colour="blue")]`` recolours object 0 from frame 24 on,
``Switch(24, 2, "green", "circle")`` (index = one past the last object) makes a new object enter
there. ``clip.prompts`` lists (first frame, words) per prompt segment; ``clip.colours_at(f)`` the
colours the prompt names at frame f, which the detector looks for.

Objects are drawn in order, so later objects occlude earlier ones; every object carries stripes
along its own axis, so rotation is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.15, 0.9, 0.2), "blue": (0.2, 0.35, 1.0),
           "yellow": (1.0, 0.9, 0.1), "magenta": (0.95, 0.2, 0.9), "cyan": (0.1, 0.9, 0.95)}
SHAPES = ("circle", "square", "triangle")
VOCAB = ("<null>", *COLOURS, *SHAPES)
BACKGROUND = 0.12  # dark grey, below every colour's brightest channel


def recoloured(colours: list[str]) -> list[str]:
    """The evaluation's prompt switch: object 0 takes the first palette colour the prompt does not
    use, the others keep theirs (its text changes in token 0, object 0's colour word)."""
    return [next(c for c in COLOURS if c not in colours), *colours[1:]]


def tokens(words: list[str], length: int) -> np.ndarray:
    """Word ids padded with the null token (0) to ``length``; unknown words are a clear error."""
    unknown = [w for w in words if w not in VOCAB[1:]]
    if unknown:
        raise ValueError(f"unknown words {unknown}; the vocabulary is {', '.join(VOCAB[1:])}")
    if len(words) > length:
        raise ValueError(f"{len(words)} words do not fit a text of {length} tokens")
    return np.array([VOCAB.index(w) for w in words] + [0] * (length - len(words)), dtype=np.int64)


@dataclass(frozen=True)
class Switch:
    """A prompt switch at ``frame``: object ``index`` takes ``colour`` and/or ``shape`` from then on;
    ``index`` one past the last object makes a new object (both words given) enter at ``frame``."""

    frame: int
    index: int
    colour: str | None = None
    shape: str | None = None


@dataclass
class Clip:
    video: np.ndarray  # [F, 3, S, S] in [-1, 1]
    text: list[str]  # the prompt at frame 0
    tracks: np.ndarray  # [objects, F, 3]: x, y, angle (an entering object's too, before it is drawn)
    shapes: list[str]  # at frame 0 (objects present at frame 0)
    colours: list[str]
    radius: np.ndarray  # [objects] pixels
    colour_track: list[list[str]] | None = None  # [objects][F]: each object's colour per frame
    shape_track: list[list[str]] | None = None
    present: np.ndarray | None = None  # [objects, F] bool: drawn in that frame

    def colours_at(self, frame: int) -> list[str]:
        return [track[frame] for k, track in enumerate(self.colour_track) if self.present[k, frame]]

    def text_at(self, frame: int) -> list[str]:
        return [w for k in range(len(self.colour_track)) if self.present[k, frame] for w in (self.colour_track[k][frame], self.shape_track[k][frame])]

    @property
    def prompts(self) -> list[tuple[int, list[str]]]:
        """(first frame, words) of each prompt segment, in order."""
        out: list[tuple[int, list[str]]] = []
        for f in range(len(self.video)):
            if not out or self.text_at(f) != out[-1][1]:
                out.append((f, self.text_at(f)))
        return out


def _check_switches(switches: list[Switch], objects: int, frames: int) -> None:
    """One line per mistake: a switch outside the clip, an unknown word, an object that does not
    exist, an entering object without both words, a switch that changes nothing (two objects of one
    colour at once are refused in ``make_clip``, which knows every frame's colours)."""
    for sw in switches:
        if not 1 <= sw.frame < frames:
            raise ValueError(f"a switch at frame {sw.frame} is outside the clip's frames 1..{frames - 1}")
        if sw.colour is not None and sw.colour not in COLOURS:
            raise ValueError(f"unknown colour {sw.colour!r}; the colours are {', '.join(COLOURS)}")
        if sw.shape is not None and sw.shape not in SHAPES:
            raise ValueError(f"unknown shape {sw.shape!r}; the shapes are {', '.join(SHAPES)}")
        if not 0 <= sw.index <= objects:
            raise ValueError(f"switch object {sw.index} does not exist (objects 0..{objects - 1}, or {objects} to enter a new one)")
        if sw.index == objects and (sw.colour is None or sw.shape is None):
            raise ValueError("an entering object needs both a colour and a shape")
        if sw.colour is None and sw.shape is None:
            raise ValueError(f"the switch at frame {sw.frame} changes nothing (give a colour or a shape)")


def inside(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside a shape of size ``r`` in its own (rotated) coordinates u, v."""
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    # equilateral triangle with circumradius r, pointing along +v
    edges = [(np.cos(a), np.sin(a)) for a in (np.pi / 2 + np.pi, np.pi / 2 + np.pi / 3, np.pi / 2 - np.pi / 3)]
    return np.all([u * ex + v * ey <= 0.5 * r for ex, ey in edges], axis=0)


def make_clip(rng: np.random.Generator, frames: int = 16, size: int = 32, objects: int = 2, speed: float = 1.0, scale: float = 1.0,
              stripes: bool = True, colours: list[str] | None = None, shapes: list[str] | None = None,
              switches: list[Switch] = ()) -> Clip:
    """One clip; ``speed`` scales the pixels moved per frame (about 0.5-1.5 x speed), ``scale`` the
    object size (radius 0.14-0.22 x size x scale); ``stripes=False`` draws flat colours (rotation is
    then visible only on squares and triangles). ``colours``/``shapes`` choose the prompt (the
    random draws still happen, so a seed's motion does not depend on the prompt); ``switches``
    change it mid-clip (``Switch``); at most one new object may enter."""
    if objects < 1 or size < 8 or frames < 1:
        raise ValueError(f"need at least one object, 8 pixels and one frame (got {objects}, {size}, {frames})")
    drawn_shapes = [SHAPES[i] for i in rng.integers(len(SHAPES), size=objects)]
    drawn_colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), size=objects, replace=False)]
    shapes, colours = list(shapes or drawn_shapes), list(colours or drawn_colours)
    if len(shapes) != objects or len(colours) != objects:
        raise ValueError(f"{objects} objects need {objects} colours and shapes (got {colours}, {shapes})")
    tokens(colours + shapes, 2 * objects)  # unknown words: one clear error
    switches = sorted(switches, key=lambda sw: sw.frame)
    _check_switches(switches, objects, frames)
    entering = [sw for sw in switches if sw.index == objects]
    if len(entering) > 1:
        raise ValueError("at most one new object may enter a clip")
    total = objects + len(entering)
    radius = rng.uniform(0.14, 0.22, objects) * size * scale
    pos = rng.uniform(radius[:, None], size - radius[:, None], (objects, 2))
    heading = rng.uniform(0, 2 * np.pi, objects)
    vel = speed * rng.uniform(0.5, 1.5, objects)[:, None] * np.stack([np.cos(heading), np.sin(heading)], 1)
    angle = rng.uniform(0, 2 * np.pi, objects)
    spin = rng.uniform(-0.25, 0.25, objects)
    if entering:  # drawn after the others, so the first objects move as they would without it
        r_new = rng.uniform(0.14, 0.22, 1) * size * scale
        radius = np.concatenate([radius, r_new])
        pos = np.concatenate([pos, rng.uniform(r_new[:, None], size - r_new[:, None], (1, 2))])
        h = rng.uniform(0, 2 * np.pi)
        vel = np.concatenate([vel, speed * rng.uniform(0.5, 1.5) * np.array([[np.cos(h), np.sin(h)]])])
        angle = np.concatenate([angle, rng.uniform(0, 2 * np.pi, 1)])
        spin = np.concatenate([spin, rng.uniform(-0.25, 0.25, 1)])
    colour_track = [[c] * frames for c in colours] + [[sw.colour] * frames for sw in entering]
    shape_track = [[s] * frames for s in shapes] + [[sw.shape] * frames for sw in entering]
    present = np.ones((total, frames), bool)
    for sw in entering:
        present[objects, : sw.frame] = False
    for sw in switches:
        if sw.index == objects:
            continue  # the entering object: already tracked above
        for f in range(sw.frame, frames):
            colour_track[sw.index][f] = sw.colour or colour_track[sw.index][f]
            shape_track[sw.index][f] = sw.shape or shape_track[sw.index][f]
    for f in range(frames):
        now = [colour_track[k][f] for k in range(total) if present[k, f]]
        if len(set(now)) < len(now):
            raise ValueError(f"two objects would be {sorted(c for c in now if now.count(c) > 1)[0]} at frame {f}; the detector tells objects apart by colour")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    video = np.full((frames, 3, size, size), BACKGROUND, np.float32)
    tracks = np.zeros((total, frames, 3))
    for f in range(frames):
        for k in range(total):
            tracks[k, f] = (*pos[k], angle[k])
            if not present[k, f]:
                continue
            dx, dy = xx - pos[k, 0], yy - pos[k, 1]
            c, s = np.cos(angle[k]), np.sin(angle[k])
            u, v = c * dx + s * dy, -s * dx + c * dy
            mask = inside(shape_track[k][f], u, v, radius[k])
            shade = 0.75 + 0.25 * np.sign(np.sin(u * 6.0 / radius[k])) if stripes else np.ones_like(u)
            for ch in range(3):
                video[f, ch][mask] = (COLOURS[colour_track[k][f]][ch] * shade)[mask]
        pos += vel  # constant velocity, reflected at the walls (the centre stays a radius inside)
        for k in range(total):
            for axis in range(2):
                lo, hi = radius[k], size - radius[k]
                if pos[k, axis] < lo or pos[k, axis] > hi:
                    vel[k, axis] = -vel[k, axis]
                    pos[k, axis] = 2 * lo - pos[k, axis] if pos[k, axis] < lo else 2 * hi - pos[k, axis]
        angle += spin
    text = [w for k in range(objects) for w in (colours[k], shapes[k])]
    return Clip(video * 2 - 1, text, tracks, shapes, colours, radius, colour_track, shape_track, present)


def colour_masks(frame: np.ndarray, colours: list[str]) -> dict[str, np.ndarray]:
    """For each named colour, the pixels of ``frame`` ([3, S, S] in [-1, 1]) whose hue is nearest to
    it among the palette and that are brighter than the background: [S, S] booleans."""
    rgb = (frame + 1) / 2
    bright = rgb.max(axis=0)
    chroma = rgb / np.maximum(bright, 1e-6)
    palette = np.array([COLOURS[c] for c in COLOURS])
    palette = palette / palette.max(axis=1, keepdims=True)
    distance = ((chroma[None] - palette[:, :, None, None]) ** 2).sum(axis=1)
    nearest = distance.argmin(axis=0)
    coloured = bright > BACKGROUND + 0.15
    return {name: coloured & (nearest == list(COLOURS).index(name)) for name in colours}


def find_objects(frame: np.ndarray, colours: list[str], min_pixels: int = 4) -> dict[str, tuple[float, float, int] | None]:
    """The detector the metrics use: for each named colour, the pixels nearest to it (``colour_masks``)
    -> (centroid x, centroid y, pixel count), or None if fewer than ``min_pixels``."""
    out = {}
    yy, xx = np.mgrid[0 : frame.shape[1], 0 : frame.shape[2]] + 0.5
    for name, mask in colour_masks(frame, colours).items():
        n = int(mask.sum())
        out[name] = (float(xx[mask].mean()), float(yy[mask].mean()), n) if n >= min_pixels else None
    return out
