"""The patch grid: every frame is cut into ``rows x cols`` non-overlapping patches.

Patch ``n`` of a clip is frame ``t``, grid row ``i``, column ``j`` with ``n = (t * rows + i) * cols + j``
(frame-major, then row, then column: the official index minus one). The LR patch ``n`` covers exactly
the LR pixels of HR patch ``n`` divided by the scale, so the grid is defined on the LR frame.

The paper's grids at 1920x1080 are 20 x 10 at x2 and 10 x 5 at x4: both give 48x54 LR patches.
``auto_grid`` keeps that LR patch size as the target on any frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from shared.errors import DataError

PAPER_LR_PATCH = (48, 54)  # width x height of an LR patch in the paper's grids


@dataclass(frozen=True)
class Grid:
    rows: int
    cols: int
    scale: int
    lr_height: int  # of the whole LR frame
    lr_width: int

    @property
    def per_frame(self) -> int:
        return self.rows * self.cols

    @property
    def lr_patch(self) -> tuple[int, int]:
        """(height, width) of one LR patch."""
        return self.lr_height // self.rows, self.lr_width // self.cols

    @property
    def hr_patch(self) -> tuple[int, int]:
        h, w = self.lr_patch
        return h * self.scale, w * self.scale

    def index(self, t: int, i: int, j: int) -> int:
        return (t * self.rows + i) * self.cols + j

    def position(self, n: int) -> tuple[int, int, int]:
        """(frame, row, column) of patch ``n``."""
        t, rest = divmod(n, self.per_frame)
        return t, *divmod(rest, self.cols)


def make_grid(hr_height: int, hr_width: int, scale: int, rows: int, cols: int) -> Grid:
    if hr_height % scale or hr_width % scale:
        raise DataError(f"scale x{scale} does not divide the frame ({hr_width}x{hr_height})")
    lr_h, lr_w = hr_height // scale, hr_width // scale
    if rows < 1 or cols < 1 or lr_h % rows or lr_w % cols:
        raise DataError(f"a {cols} x {rows} grid (columns x rows) does not tile the {lr_w}x{lr_h} LR frame exactly; pick divisors of {lr_w} and {lr_h}")
    return Grid(rows=rows, cols=cols, scale=scale, lr_height=lr_h, lr_width=lr_w)


def _closest_divisor_count(length: int, target_cell: int) -> int:
    """The number of equal cells along ``length`` whose size is closest to ``target_cell``."""
    counts = [n for n in range(1, length + 1) if length % n == 0]
    return min(counts, key=lambda n: (abs(length // n - target_cell), -n))


def auto_grid(hr_height: int, hr_width: int, scale: int, lr_patch: tuple[int, int] = PAPER_LR_PATCH) -> Grid:
    """The grid whose LR patches are closest to ``lr_patch`` (width, height): the paper's 20 x 10 (x2)
    and 10 x 5 (x4) at 1080p."""
    if hr_height % scale or hr_width % scale:
        raise DataError(f"scale x{scale} does not divide the frame ({hr_width}x{hr_height}); crop it to a multiple of {scale} or pick another scale")
    lr_h, lr_w = hr_height // scale, hr_width // scale
    cols = _closest_divisor_count(lr_w, lr_patch[0])
    rows = _closest_divisor_count(lr_h, lr_patch[1])
    return Grid(rows=rows, cols=cols, scale=scale, lr_height=lr_h, lr_width=lr_w)


def to_patches(frames: np.ndarray | torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[T, H, W, C] frames -> [T * rows * cols, C, H / rows, W / cols] patches (same dtype), in index order."""
    frames = torch.as_tensor(frames)
    return rearrange(frames, "t (r h) (c w) ch -> (t r c) ch h w", r=rows, c=cols).contiguous()


def to_frames(patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The inverse of ``to_patches``: [T * rows * cols, C, h, w] -> [T, rows * h, cols * w, C]."""
    return rearrange(patches, "(t r c) ch h w -> t (r h) (c w) ch", r=rows, c=cols)


def to_float(batch_u8: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 pixels [..., 0-255] to float32 in [0, 1] on ``device``."""
    return batch_u8.to(device, non_blocking=True).float().div_(255)
