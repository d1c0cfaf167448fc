"""Ring-buffer decode attention with sinks: the hot path of streaming generation.

    out = ring_decode(q, k, v, slot_pos, q_pos=t, sinks=4, window=252, theta=1e5)   # [B, H, D]

One query token per head against a ring buffer of pre-RoPE keys; RoPE is applied to keys on the
fly from each slot's position (stream position, or ``rope_pos`` for in-cache positions).
``impl``: ``reference`` (torch, the specification: reference.py), ``triton`` (triton_kernel.py,
registered as the custom op ``streamlab::ring_decode``), or ``auto`` (Triton on CUDA when
available, else the reference). Triton is imported only when the Triton path runs; on a CPU it
runs only under ``TRITON_INTERPRET=1`` set before Triton is imported (tests, tiny sizes).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from .reference import ring_decode_reference

IMPLS = ("auto", "reference", "triton")


def triton_status() -> tuple[bool, str]:
    """Can the Triton path run here, and if not, why."""
    if importlib.util.find_spec("triton") is None:
        return False, "the triton package is not installed (make setup installs it)"
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return True, "ok"
    return False, "no CUDA device; on a CPU Triton runs only under TRITON_INTERPRET=1 (set before import, tiny sizes)"


@torch.library.custom_op("streamlab::ring_decode", mutates_args=())
def _ring_decode_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_pos: torch.Tensor, rope_pos: torch.Tensor, theta: float,
    q_pos: int, q_rope_pos: int, sinks: int, window: int, scale: float,
) -> torch.Tensor:
    from .triton_kernel import ring_decode_triton

    return ring_decode_triton(q, k, v, slot_pos, rope_pos, theta, q_pos, q_rope_pos, sinks, window, scale)


@_ring_decode_op.register_fake
def _(q, k, v, slot_pos, rope_pos, theta, q_pos, q_rope_pos, sinks, window, scale):
    return torch.empty_like(q)


def _check(q, k, v, slot_pos, rope_pos):
    if q.dim() != 3 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"ring_decode expects q [B, H, D] and k, v [B, Hkv, N, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch or head dim")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"q has {q.shape[1]} heads but k/v have {k.shape[1]}: query heads must be a multiple of key/value heads")
    if q.shape[2] % 2:
        raise ValueError(f"head dim {q.shape[2]} must be even for RoPE")
    if slot_pos.shape != (k.shape[2],) or rope_pos.shape != (k.shape[2],):
        raise ValueError(f"slot_pos and rope_pos must be [{k.shape[2]}], got {tuple(slot_pos.shape)} and {tuple(rope_pos.shape)}")


def ring_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_pos: torch.Tensor, *,
    q_pos: int, sinks: int, window: int, theta: float,
    rope_pos: torch.Tensor | None = None, q_rope_pos: int | None = None, scale: float | None = None, impl: str = "auto",
) -> torch.Tensor:
    rope_pos = slot_pos.clamp(min=0) if rope_pos is None else rope_pos
    q_rope_pos = q_pos if q_rope_pos is None else q_rope_pos
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    _check(q, k, v, slot_pos, rope_pos)
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
    if impl == "auto":
        impl = "triton" if q.is_cuda and triton_status()[0] else "reference"
    if impl == "reference":
        return ring_decode_reference(q, k, v, slot_pos, rope_pos, q_pos=q_pos, q_rope_pos=q_rope_pos, sinks=sinks, window=window, theta=theta, scale=scale)
    ok, why = triton_status()
    if not ok:
        raise RuntimeError(f"impl='triton' cannot run here: {why}")
    return _ring_decode_op(q, k, v, slot_pos.contiguous(), rope_pos.contiguous(), float(theta), int(q_pos), int(q_rope_pos), int(sinks), int(window), float(scale))
