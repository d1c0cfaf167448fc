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
