"""Shifted 3D window attention (brief 2.4) in two forms with one definition:

- ``window_attention``: the fast path: roll the [F, H, W] token grid by -shift, cut it into
  [Fw, Hw, Ww] windows folded into the batch, run SDPA per window with no mask (4-D, so the flash /
  cuDNN kernels take it on a GPU), undo.
- the specification: the shared core's ``attend`` under ``Window3D(grid, window, shift)`` over
  the raster-ordered tokens (a dense mask), tested equal to the fast path.

Cost relative to full attention: Fw Hw Ww / (F H W).

``extra_k``/``extra_v`` (our extension, not in the paper): keys shared by every window, the cached
clean frames of a frame-sink memory (``model.StreamDiT.memory_kv``); every query sees its window
plus all of them. The specification is the same dense attention with those keys appended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int, int],
                     window: tuple[int, int, int], shift: tuple[int, int, int] = (0, 0, 0),
                     extra_k: torch.Tensor | None = None, extra_v: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v: [b, heads, F*H*W, d] in raster (f, h, w) order -> [b, heads, F*H*W, d];
    extra_k, extra_v: [b, heads, M, d] keys every window also sees (or None)."""
    Fn, H, W = grid
    Fw, Hw, Ww = window
    if Fn % Fw or H % Hw or W % Ww:
        raise ValueError(f"window {window} must divide the token grid {grid}")
    dims = (2, 3, 4)

    def to_windows(x):
        # the windows fold into the batch: SDPA's fused kernels (flash, cuDNN, memory-efficient)
        # take 4-D [batch, heads, tokens, d] only and fall back to the slow math path otherwise
        x = rearrange(x, "b n (f h w) d -> b n f h w d", f=Fn, h=H, w=W)
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=dims)
        return rearrange(x, "b n (f fw) (h hw) (w ww) d -> (b f h w) n (fw hw ww) d", fw=Fw, hw=Hw, ww=Ww)

    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    if extra_k is not None and extra_k.shape[2]:
        windows = qw.shape[0] // q.shape[0]

        def per_window(x):  # [b, n, M, d] -> [(b windows), n, M, d], b outer as in to_windows
            return x[:, None].expand(-1, windows, -1, -1, -1).flatten(0, 1)

        kw = torch.cat([kw, per_window(extra_k)], dim=2)
        vw = torch.cat([vw, per_window(extra_v)], dim=2)
    out = F.scaled_dot_product_attention(qw, kw, vw)
    out = rearrange(out, "(b f h w) n (fw hw ww) d -> b n (f fw) (h hw) (w ww) d", f=Fn // Fw, h=H // Hw, w=W // Ww, fw=Fw, hw=Hw, ww=Ww)
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=dims)
    return rearrange(out, "b n f h w d -> b n (f h w) d")
