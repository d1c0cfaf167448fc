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

from shared.streaming.attention import reference_attention
from shared.streaming.masks import SinkWindow, dense_mask
from shared.streaming.rope import Rope


def ring_decode_reference(q, k, v, slot_pos, rope_pos, *, q_pos: int, q_rope_pos: int, sinks: int, window: int, theta: float, scale: float | None = None) -> torch.Tensor:
    rope = Rope(q.shape[-1], theta=theta)
    q_rot = rope.apply(q[:, :, None, :], torch.tensor([q_rope_pos], device=q.device))  # [B, H, 1, D]
    k_rot = rope.apply(k, rope_pos.to(k.device))
    allowed = dense_mask(SinkWindow(sinks, window), torch.tensor([q_pos], device=q.device), slot_pos.to(q.device))
    out, _ = reference_attention(q_rot, k_rot, v, allowed, q.shape[-1] ** -0.5 if scale is None else scale)
    return out[:, :, 0]
