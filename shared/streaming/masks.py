"""Attention masks over stream positions, written once.

A mask is a small frozen dataclass with one method, ``allowed(q, k)``, written in torch ops on
broadcastable integer position tensors. The same function

- densifies on index grids into a ``[Tq, Tk]`` boolean mask (the reference and SDPA paths), and
- becomes the ``mask_mod`` of a FlexAttention ``BlockMask`` (positions captured as tensors, so a
  decode loop that moves the positions in place never recompiles).

Masks combine with ``&`` and ``|``. Positions are *stream* positions (token index in the stream,
or the token's index in an audio/video stream); slots with position -1 are empty and never visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class MaskSpec:
    def allowed(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Boolean tensor: may a query at stream position ``q`` see a key at position ``k``?"""
        raise NotImplementedError

    def __and__(self, other: MaskSpec) -> MaskSpec:
        return And(self, other)

    def __or__(self, other: MaskSpec) -> MaskSpec:
        return Or(self, other)


@dataclass(frozen=True)
class And(MaskSpec):
    a: MaskSpec
    b: MaskSpec

    def allowed(self, q, k):
        return self.a.allowed(q, k) & self.b.allowed(q, k)


@dataclass(frozen=True)
class Or(MaskSpec):
    a: MaskSpec
    b: MaskSpec

    def allowed(self, q, k):
        return self.a.allowed(q, k) | self.b.allowed(q, k)


@dataclass(frozen=True)
class Causal(MaskSpec):
    def allowed(self, q, k):
        return k <= q


@dataclass(frozen=True)
class SlidingWindow(MaskSpec):
    """Causal, and the last ``window`` positions only (the window counts the query itself)."""

    window: int

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be at least 1 (it counts the query itself), got {self.window}")

    def allowed(self, q, k):
        return (k <= q) & (q - k < self.window)


@dataclass(frozen=True)
class SinkWindow(MaskSpec):
    """StreamingLLM: causal, the first ``sinks`` positions plus the last ``window`` (counting the query)."""

    sinks: int
    window: int

    def __post_init__(self):
        if self.sinks < 0 or self.window < 1:
            raise ValueError(f"need sinks >= 0 and window >= 1, got sinks={self.sinks}, window={self.window}")

    def allowed(self, q, k):
        return (k <= q) & ((k < self.sinks) | (q - k < self.window))


@dataclass(frozen=True)
class BlockCausal(MaskSpec):
    """Chunked causal attention: full inside a block, causal across blocks.

    The first block may be larger (CarelessWhisper: a 600 ms first block, then chunks). Block ids:
    positions ``[0, first_block)`` are block 0, then every ``block`` positions the next one.
    """

    block: int
    first_block: int | None = None

    def __post_init__(self):
        if self.block < 1 or (self.first_block is not None and self.first_block < 1):
            raise ValueError(f"block sizes must be positive, got block={self.block}, first_block={self.first_block}")

    def block_id(self, p: torch.Tensor) -> torch.Tensor:
        first = self.block if self.first_block is None else self.first_block
        return torch.where(p < first, torch.zeros_like(p), 1 + torch.div(p - first, self.block, rounding_mode="floor"))

    def allowed(self, q, k):
        return self.block_id(k) <= self.block_id(q)


@dataclass(frozen=True)
class FrameWindow(MaskSpec):
    """Video: full attention inside a frame, causal across frames, the last ``window_frames``
    frames (counting the query's own) plus the first ``sink_frames`` frames (LongLive, StreamDiT)."""

    tokens_per_frame: int
    window_frames: int
    sink_frames: int = 0

    def __post_init__(self):
        if self.tokens_per_frame < 1 or self.window_frames < 1 or self.sink_frames < 0:
            raise ValueError(f"invalid FrameWindow({self.tokens_per_frame}, {self.window_frames}, {self.sink_frames})")

    def allowed(self, q, k):
        fq = torch.div(q, self.tokens_per_frame, rounding_mode="floor")
        fk = torch.div(k, self.tokens_per_frame, rounding_mode="floor")
        return (fk <= fq) & ((fq - fk < self.window_frames) | (fk < self.sink_frames))


@dataclass(frozen=True)
class Window3D(MaskSpec):
    """Video DiT window attention (Swin-3D, StreamDiT): tokens at raster positions of a
    ``grid = (F, H, W)`` attend only inside their ``window = (Fw, Hw, Ww)`` cell after the grid is
    cyclically shifted by ``shift`` (Swin's roll: a token at coordinate x lands at (x - shift) mod
    size; windows wrap around the grid's ends, with no seam mask). ``shift = (0, 0, 0)``: plain
    non-overlapping windows. Every window size must divide its grid size."""

    grid: tuple[int, int, int]
    window: tuple[int, int, int]
    shift: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self):
        for n, w, sh in zip(self.grid, self.window, self.shift):
            if n < 1 or w < 1 or n % w or not 0 <= sh < n:
                raise ValueError(f"Window3D: window {self.window} must divide grid {self.grid} and 0 <= shift < size (shift {self.shift})")

    def _cell(self, p):
        _, H, W = self.grid
        f = torch.div(p, H * W, rounding_mode="floor")
        h = torch.div(p, W, rounding_mode="floor") % H
        w = p % W
        cells = [torch.div((x - sh) % n, win, rounding_mode="floor") for x, n, win, sh in zip((f, h, w), self.grid, self.window, self.shift)]
        return (cells[0] * (H // self.window[1]) + cells[1]) * (W // self.window[2]) + cells[2]

    def allowed(self, q, k):
        return self._cell(q) == self._cell(k)


def _visible(spec: MaskSpec | None, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    valid = k >= 0
    return valid if spec is None else spec.allowed(q, k) & valid


def dense_mask(spec: MaskSpec | None, q_pos: torch.Tensor, kv_pos: torch.Tensor) -> torch.Tensor:
    """``[Tq, Tk]`` boolean mask of ``spec`` at these stream positions (``None`` = all valid keys)."""
    return _visible(spec, q_pos[:, None], kv_pos[None, :])


def block_mask(spec: MaskSpec | None, q_pos: torch.Tensor, kv_pos: torch.Tensor, block_size: int = 128):
    """The FlexAttention ``BlockMask`` of the same definition. Positions are captured as tensors."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return _visible(spec, q_pos[q_idx], kv_pos[kv_idx])

    return create_block_mask(
        mask_mod, B=None, H=None, Q_LEN=len(q_pos), KV_LEN=len(kv_pos), device=q_pos.device, BLOCK_SIZE=block_size
    )
