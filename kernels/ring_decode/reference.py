"""Specification of ring-buffer decode attention: one new query per head against a ring-buffer
KV cache of *pre-RoPE* keys, under StreamingLLM's sink + window mask, RoPE applied on the fly.

Shapes
    q         [B, H, D]        pre-RoPE query of the current token (H = Hkv * group)
    k, v      [B, Hkv, N, D]   pre-RoPE keys and values, ring layout (any slot order)
    slot_pos  [N] int          stream position held by each slot; -1 = empty slot
    rope_pos  [N] int          RoPE position of each slot (= slot_pos, or the in-cache rank)
    q_pos, q_rope_pos          stream and RoPE position of the query
Mask over stream positions: visible iff ``0 <= p <= q_pos`` and (``p < sinks`` or
``q_pos - p < window``); the window counts the query itself. A query with no visible slot gets 0.

Math (per head h, group g = h // (H / Hkv)):
    k̃_j = R(rope_pos_j) k_j,  q̃ = R(q_rope_pos) q,  s_j = scale · q̃·k̃_j  (masked to -inf)
    out = Σ_j softmax(s)_j v_j
where R(p) rotates dimension pairs (i, i + D/2) by angle p · θ^(-2i/D) (Llama's rotate-half).
"""

from __future__ import annotations

import torch

# Plain torch only, the way flash-linear-attention's naive.py files are: the specification imports
# nothing from StreamLab, so shared/streaming can build on the kernel without a circle. The core's
# own RoPE, masks and attention are tested equal to these (tests/kernels/test_ring_decode.py).


def rotate_half_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """``x`` [..., T, D] rotated by ``positions`` [T]: pairs (i, i + D/2) turn by p · θ^(-2i/D).
    Angles in float64, the rotation in float32 or better."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d)
    angles = positions.to(x.device, torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    work = torch.promote_types(x.dtype, torch.float32)
    xw = x.to(work)
    rotated = torch.cat([-xw[..., d // 2 :], xw[..., : d // 2]], dim=-1)
    return (xw * angles.cos().to(work) + rotated * angles.sin().to(work)).to(x.dtype)


def sink_window_visible(slot_pos: torch.Tensor, q_pos: int, sinks: int, window: int) -> torch.Tensor:
    """[N] bool: the slots the query at ``q_pos`` sees (empty slots, -1, never)."""
    return (slot_pos >= 0) & (slot_pos <= q_pos) & ((slot_pos < sinks) | (q_pos - slot_pos < window))


def ring_decode_reference(q, k, v, slot_pos, rope_pos, *, q_pos: int, q_rope_pos: int, sinks: int, window: int, theta: float, scale: float | None = None) -> torch.Tensor:
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    group = q.shape[1] // k.shape[1]
    q_rot = rotate_half_rope(q[:, :, None, :], torch.tensor([q_rope_pos]), theta).to(work)  # [B, H, 1, D]
    k_rot = rotate_half_rope(k, rope_pos, theta).to(work).repeat_interleave(group, dim=1)  # [B, H, N, D]
    values = v.to(work).repeat_interleave(group, dim=1)
    scores = (q_rot @ k_rot.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)  # [B, H, 1, N]
    scores = scores.masked_fill(~sink_window_visible(slot_pos.to(q.device), q_pos, sinks, window), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse))  # no visible slot: all 0, out 0
    return (probs @ values)[:, :, 0].to(q.dtype)
