"""Rotary position embeddings, applied at attention time.

Keys are cached *before* rotation and rotated by whatever positions the cache policy assigns
(stream positions, or positions inside the cache as StreamingLLM prescribes). Rotating once from
the stored raw key is exact; re-rotating already-rotated keys step by step in bf16 drifts badly
(see the handbook's streaming-core brief, section 6).

Layout: the "rotate half" convention of Llama / transformers (pairs are (i, i + D/2)).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

_TABLE_CAP = 1 << 17  # positions up to 131072 come from the table (8 MB per 16k positions at D=64)


@lru_cache(maxsize=16)
def _rope_table(rope: Rope, length: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return rope._direct(torch.arange(length, device=device))


@dataclass(frozen=True)
class Rope:
    """RoPE with ``theta``'s frequencies, or explicit ones (``inv_freq_values``: a scaled RoPE such as
    transformers' linear or llama3 types). ``max_position``: positions at and beyond it are refused
    (dynamic NTK RoPE rescales its frequencies there, which a fixed table cannot reproduce)."""

    head_dim: int
    theta: float = 10000.0
    inv_freq_values: tuple[float, ...] | None = None
    max_position: int | None = None

    def inv_freq(self, device=None) -> torch.Tensor:
        if self.inv_freq_values is not None:
            return torch.tensor(self.inv_freq_values, dtype=torch.float64, device=device)
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=device) / self.head_dim))

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of shape ``[T, D]`` for integer ``positions`` ``[T]``, in float64.

        Looked up in a cached table (a decode step rotates every cached key in every layer, so
        recomputing the trigonometry each time dominated long streams); positions beyond the
        table's cap, or negative ones, are computed directly. Both give identical values.
        """
        if len(positions) == 0 or int(positions.min()) < 0 or int(positions.max()) >= _TABLE_CAP:
            return self._direct(positions)
        length = 1 << max(10, int(positions.max()).bit_length())  # grow in powers of two
        cos, sin = _rope_table(self, length, str(positions.device))
        return cos[positions], sin[positions]

    def _direct(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float64)[:, None] * self.inv_freq(positions.device)[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``[..., T, D]`` by ``positions`` ``[T]``; the rotation runs in float32 or better."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE built for head_dim {self.head_dim}, got tensors with last dim {x.shape[-1]}")
        if positions.shape[-1] != x.shape[-2]:
            raise ValueError(f"{positions.shape[-1]} positions for {x.shape[-2]} tokens")
        if self.max_position is not None and len(positions) and int(positions.max()) >= self.max_position:
            raise ValueError(f"RoPE position {int(positions.max())} is past {self.max_position}, where dynamic NTK RoPE would rescale its "
                             "frequencies; keep positions inside the cache (reposition='cache') or use a model with a fixed RoPE")
        work = torch.promote_types(x.dtype, torch.float32)
        cos, sin = (t.to(work) for t in self.cos_sin(positions))
        xw = x.to(work)
        half = self.head_dim // 2
        rotated = torch.cat([-xw[..., half:], xw[..., :half]], dim=-1)
        return (xw * cos + rotated * sin).to(x.dtype)


@dataclass(frozen=True)
class Rope3D:
    """Video RoPE over (time, row, column) bands of the head dimension (Wan / Self Forcing's 3D RoPE).

    Positions are the cache's *token* positions: frame * tokens_per_frame + row * width + column,
    so a cache policy that moves a frame in time (Deep Forcing's deep sink re-alignment) shifts a
    position by whole frames and only the temporal band rotates differently. ``bands`` are the
    real dimensions given to time, rows and columns (each even, summing to ``head_dim``); each band
    uses the "rotate half" layout inside itself. Same interface as ``Rope``: ``apply(x, positions)``.
    """

    head_dim: int
    tokens_per_frame: int
    width: int  # token columns per frame row
    bands: tuple[int, int, int]
    theta: float = 10000.0

    def __post_init__(self):
        if sum(self.bands) != self.head_dim or any(b % 2 for b in self.bands):
            raise ValueError(f"RoPE bands {self.bands} must be even and sum to head_dim {self.head_dim}")
        if self.tokens_per_frame % self.width:
            raise ValueError(f"{self.tokens_per_frame} tokens per frame are not whole rows of {self.width}")

    def coordinates(self, positions: torch.Tensor) -> torch.Tensor:
        """[T, 3]: (frame, row, column) of each token position."""
        frame = torch.div(positions, self.tokens_per_frame, rounding_mode="floor")
        inside = positions - frame * self.tokens_per_frame
        return torch.stack([frame, torch.div(inside, self.width, rounding_mode="floor"), inside % self.width], dim=-1)

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``[..., T, D]`` band by band (angles in float64, applied in float32 or better)."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE built for head_dim {self.head_dim}, got tensors with last dim {x.shape[-1]}")
        if positions.shape[-1] != x.shape[-2]:
            raise ValueError(f"{positions.shape[-1]} positions for {x.shape[-2]} tokens")
        work = torch.promote_types(x.dtype, torch.float32)
        coords = self.coordinates(positions).to(torch.float64)
        out, start = [], 0
        for axis, size in enumerate(self.bands):
            part = x[..., start : start + size].to(work)
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, size, 2, dtype=torch.float64, device=x.device) / size))
            angles = coords[:, axis, None] * inv_freq[None, :]
            cos, sin = (torch.cat([a, a], dim=-1).to(work) for a in (angles.cos(), angles.sin()))
            half = size // 2
            out.append(part * cos + torch.cat([-part[..., half:], part[..., :half]], dim=-1) * sin)
            start += size
        return torch.cat(out, dim=-1).to(x.dtype)
