"""Video files through PyAV (FFmpeg's libraries, bundled in the ``av`` wheel).

    frames = read_video("clip.mp4", max_frames=120)        # [T, H, W, 3] uint8
    write_video("out.mp4", frames, fps=30, crf=0)            # H.264, 4:4:4 (near-lossless at crf 0)

Errors a user can cause (a missing, unreadable or empty file) raise ``DataError`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DataError


def shrink(frame: np.ndarray, factor: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [H // factor, W // factor, 3] uint8: the mean of each factor x factor block
    (area downscaling; rows and columns past a multiple of ``factor`` are dropped), rounded."""
    if factor == 1:
        return frame
    h, w = frame.shape[0] // factor * factor, frame.shape[1] // factor * factor
    blocks = frame[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    return np.rint(blocks.mean((1, 3), dtype=np.float32)).astype(np.uint8)


def read_video(path: str | os.PathLike, max_frames: int | None = None, downscale: int = 1) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB frames of the first video stream; with ``downscale`` > 1 each frame is
    shrunk as soon as it is decoded, so memory holds the small frames only (N3DV's 2704x2028 videos:
    16 MB per full frame)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            frames = []
            for frame in container.decode(video=0):
                frames.append(shrink(frame.to_ndarray(format="rgb24"), downscale))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, ValueError, IndexError) as err:
        raise DataError(f"{path}: cannot decode the video ({err}); re-extract or replace the file") from err
    if not frames:
        raise DataError(f"{path}: the video has no frames")
    return np.stack(frames)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 30, crf: int = 0, codec: str = "libx264", pix_fmt: str = "yuv444p") -> Path:
    """Write [T, H, W, 3] uint8 frames (written to a temporary name, then renamed into place)."""
    import av

    from .io import atomic_path

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video wants [T, H, W, 3] uint8 frames, got {frames.shape} {frames.dtype}")
    path = Path(path)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=path.suffix.lstrip(".") or "mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path
