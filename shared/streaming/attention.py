"""``attend``: one attention entry point with interchangeable backends.

    out = attend(q, k, v, mask=SinkWindow(4, 256))
    res = attend(q, k, v, mask=..., backend="auto", return_info=True)   # res.backend, res.reason

Backends:
- ``reference``: explicit softmax(q kᵀ · scale + mask) v, float64-capable and differentiable; the
  specification every other backend is tested against. Returns the log-sum-exp. A query with no
  visible key gets output 0 and LSE -inf (what SDPA and FlexAttention do too).
- ``sdpa``: ``F.scaled_dot_product_attention`` with the densified mask (``is_causal`` when the mask
  is plain causal over aligned positions). CPU training and the general fallback.
- ``flex``: FlexAttention with a BlockMask built from the same mask definition; compiled by
  default. No backward on CPU, so ``auto`` never picks it for CPU training.
- ``triton``: the decode kernel of ``kernels/ring_decode`` (one query per head; causal, sliding
  window or sink masks; CUDA, or a CPU under ``TRITON_INTERPRET=1``). ``KVCache.attend`` with this
  backend also fuses the keys' RoPE rotation into the kernel.

``auto`` picks per device and need and says why (``choose_backend``); the choice is recorded in
the result, so tests can assert which path ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from .masks import Causal, MaskSpec, SinkWindow, SlidingWindow, block_mask, dense_mask

BACKENDS = ("reference", "sdpa", "flex", "triton")
_EMPTY_ROW_CHECK_ROWS = 1024  # rows per slice when checking for queries with nothing to see


@dataclass
class AttentionResult:
    out: torch.Tensor  # [B, H, Tq, Dv]
    lse: torch.Tensor | None  # [B, H, Tq] natural-log sum of exp(scores), when requested
    backend: str
    reason: str


def _check_shapes(q, k, v, q_pos, kv_pos):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attend expects q [B, H, Tq, D] and k, v [B, Hkv, Tk, D]; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    (b, h, tq, d), (bk, hkv, tk, dk) = q.shape, k.shape
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree in batch, heads and length")
    if bk != b:
        raise ValueError(f"batch sizes differ: q has {b}, k/v have {bk}")
    if dk != d:
        raise ValueError(f"head dims differ: q has {d}, k has {dk}; project them to the same size")
    if hkv == 0 or h % hkv:
        raise ValueError(f"q has {h} heads but k/v have {hkv}: query heads must be a multiple of key/value heads (grouped-query attention)")
    if q_pos.shape != (tq,) or kv_pos.shape != (tk,):
        raise ValueError(f"q_pos must be [{tq}] and kv_pos [{tk}]; got {tuple(q_pos.shape)} and {tuple(kv_pos.shape)}")


def _check_no_empty_rows(mask, q_pos, kv_pos):
    for start in range(0, len(q_pos), _EMPTY_ROW_CHECK_ROWS):
        rows = dense_mask(mask, q_pos[start : start + _EMPTY_ROW_CHECK_ROWS], kv_pos)
        empty = ~rows.any(dim=1)
        if empty.any():
            where = q_pos[start : start + _EMPTY_ROW_CHECK_ROWS][empty][:5].tolist()
            raise ValueError(
                f"mask {mask} leaves {int(empty.sum())} query row(s) with no visible key (query positions {where}...): "
                "widen the window, add sinks, or check q_pos/kv_pos; pass allow_empty_rows=True if zeros are intended"
            )


def sink_window_of(mask: MaskSpec | None) -> tuple[int, int]:
    """(sinks, window) of the masks the Triton decode kernel evaluates; others are refused."""
    if isinstance(mask, SinkWindow):
        return mask.sinks, mask.window
    if isinstance(mask, SlidingWindow):
        return 0, mask.window
    if mask is None or isinstance(mask, Causal):
        return 0, 2**62
    raise ValueError(f"the triton decode kernel supports causal, sliding-window and sink-window masks, not {mask}")


def triton_decode(q, k, v, mask, q_pos, kv_pos, scale, *, theta: float = 1.0, kv_rope_pos=None, q_rope_pos: int = 0):
    """Decode through kernels.ring_decode; without RoPE positions the rotation is the identity."""
    from kernels.ring_decode import ring_decode  # lazy: kernels import Triton only when they run

    if q.shape[2] != 1:
        raise ValueError(f"the triton backend is a decode kernel (one query per head); got {q.shape[2]} queries")
    sinks, window = sink_window_of(mask)
    rope_pos = torch.zeros_like(kv_pos) if kv_rope_pos is None else kv_rope_pos
    out = ring_decode(q[:, :, 0], k, v, kv_pos, q_pos=int(q_pos[0]), sinks=sinks, window=window, theta=theta, rope_pos=rope_pos, q_rope_pos=q_rope_pos, scale=scale, impl="triton")
    return out[:, :, None]


def choose_backend(q: torch.Tensor, mask: MaskSpec | None, *, needs_grad: bool, return_lse: bool) -> tuple[str, str]:
    """The backend ``auto`` uses, and why."""
    cuda = q.is_cuda
    if return_lse:
        return ("flex", "LSE requested on CUDA: flex returns it") if cuda else ("reference", "LSE requested on CPU: only the reference returns it (SDPA has none, compiled CPU flex has none)")
    if not cuda:
        if needs_grad:
            return "sdpa", "CPU training: FlexAttention has no backward on CPU"
        return "sdpa", "CPU inference: SDPA with the densified mask (flex compiles per shape; ask for it explicitly)"
    if mask is None or isinstance(mask, Causal):
        return "sdpa", "CUDA, plain causal or no mask: SDPA's fused kernels"
    return "flex", "CUDA with a structured mask: FlexAttention skips masked blocks"


def reference_attention(q, k, v, allowed: torch.Tensor | None, scale: float):
    """The specification. Computes in float64 for float64 inputs, else float32; returns (out, lse)."""
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    group = q.shape[1] // k.shape[1]
    qw, kw, vw = q.to(work), k.to(work).repeat_interleave(group, dim=1), v.to(work).repeat_interleave(group, dim=1)
    scores = (qw @ kw.transpose(-1, -2)) * scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    empty = torch.isinf(lse)
    probs = torch.exp(scores - torch.where(empty, torch.zeros_like(lse), lse)[..., None])
    out = probs @ vw
    return out.to(q.dtype), lse


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention_call(q, k, v, mask, q_pos, kv_pos, scale, return_lse: bool, compile: bool):
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    fn = _compiled_flex() if compile else flex_attention
    bm = block_mask(mask, q_pos, kv_pos)
    kwargs = {"block_mask": bm, "scale": scale, "enable_gqa": q.shape[1] != k.shape[1]}
    if return_lse:
        out, aux = fn(q, k, v, return_aux=AuxRequest(lse=True), **kwargs)
        return out, aux.lse
    return fn(q, k, v, **kwargs), None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: MaskSpec | None = None,
    *,
    q_pos: torch.Tensor | None = None,
    kv_pos: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = False,
    return_info: bool = False,
    allow_empty_rows: bool = False,
    flex_compile: bool = True,
):
    """Attention of q ``[B, H, Tq, D]`` over k, v ``[B, Hkv, Tk, D]`` under ``mask``.

    ``q_pos``/``kv_pos`` are stream positions (default: the queries are the last Tq of the Tk
    keys, as in prefill and decode). Returns the output ``[B, H, Tq, Dv]``, or an
    ``AttentionResult`` (output, LSE, backend, reason) with ``return_info=True``.
    """
    device = q.device
    if q_pos is None:
        q_pos = torch.arange(k.shape[2] - q.shape[2], k.shape[2], device=device)
    if kv_pos is None:
        kv_pos = torch.arange(k.shape[2], device=device)
    _check_shapes(q, k, v, q_pos, kv_pos)
    if not allow_empty_rows:
        _check_no_empty_rows(mask, q_pos, kv_pos)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))

    if backend == "auto":
        backend, reason = choose_backend(q, mask, needs_grad=needs_grad, return_lse=return_lse)
    elif backend in BACKENDS:
        reason = "requested"
    else:
        raise ValueError(f"unknown attention backend {backend!r}; valid: auto, {', '.join(BACKENDS)}")

    lse = None
    if backend == "reference":
        out, lse = reference_attention(q, k, v, dense_mask(mask, q_pos, kv_pos), scale)
    elif backend == "sdpa":
        if return_lse:
            raise ValueError("the sdpa backend cannot return the LSE; use backend='reference' or 'flex'")
        aligned = isinstance(mask, Causal) and bool((q_pos == kv_pos[-q.shape[2]:]).all()) and q.shape[2] == k.shape[2] and bool((kv_pos >= 0).all())
        if aligned:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(mask, q_pos, kv_pos), scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    elif backend == "flex":
        if needs_grad and not q.is_cuda:
            raise ValueError("FlexAttention has no backward on CPU; use backend='sdpa' or 'reference' for CPU training")
        out, lse = flex_attention_call(q, k, v, mask, q_pos, kv_pos, scale, return_lse, flex_compile)
    else:
        if return_lse or needs_grad:
            raise ValueError("the triton decode backend is inference-only and returns no LSE")
        out = triton_decode(q, k, v, mask, q_pos, kv_pos, scale)
    if return_info:
        return AttentionResult(out=out, lse=lse, backend=backend, reason=reason)
    return out
