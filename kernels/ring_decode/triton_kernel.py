"""Triton fast path of ring-buffer decode attention (spec: reference.py).

Flash-decoding layout: the grid is (B * Hkv, splits). Each program reads one contiguous range of
slots of one key/value head **once** for all query heads of its GQA group, rotates the keys in
registers (RoPE from the slot's position; no rotated copy of the cache is ever written), applies
the sink + window mask from slot positions, and keeps an online softmax. Splits are merged in
torch by their (max, sum) statistics. Decode is memory-bound: the work per byte of K/V is small,
so products are broadcast-and-sum rather than tensor-core dots (which need 16 query rows).

Imported only when used: importing this module imports Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ring_decode_split(
    Q, K, V, SLOT_POS, ROPE_POS, INV_FREQ, ACC, M, L,
    q_pos, q_rope_pos, sinks, window, scale, n_slots, slots_per_split,
    s_qb, s_qh, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ab, s_ah, s_as,
    N_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HALF: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // N_KV_HEADS
    hkv = pid_bh % N_KV_HEADS

    g = tl.arange(0, GROUP_PAD)
    g_ok = g < GROUP
    d = tl.arange(0, HALF)
    heads = hkv * GROUP + g
    inv = tl.load(INV_FREQ + d)

    # the query, rotated once
    q_ptr = Q + b * s_qb + heads[:, None] * s_qh + d[None, :]
    q1 = tl.load(q_ptr, mask=g_ok[:, None], other=0.0).to(tl.float32)
    q2 = tl.load(q_ptr + HALF, mask=g_ok[:, None], other=0.0).to(tl.float32)
    angle_q = q_rope_pos.to(tl.float32) * inv
    cq = tl.cos(angle_q)[None, :]
    sq = tl.sin(angle_q)[None, :]
    q1r = (q1 * cq - q2 * sq) * scale
    q2r = (q2 * cq + q1 * sq) * scale

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc1 = tl.zeros([GROUP_PAD, HALF], tl.float32)
    acc2 = tl.zeros([GROUP_PAD, HALF], tl.float32)

    start = split * slots_per_split
    stop = tl.minimum(start + slots_per_split, n_slots)
    for block in range(start, stop, BLOCK_N):
        n = block + tl.arange(0, BLOCK_N)
        in_range = n < stop
        pos = tl.load(SLOT_POS + n, mask=in_range, other=-1)
        visible = in_range & (pos >= 0) & (pos <= q_pos) & ((pos < sinks) | (q_pos - pos < window))
        rp = tl.load(ROPE_POS + n, mask=in_range, other=0).to(tl.float32)

        k_ptr = K + b * s_kb + hkv * s_kh + n[:, None] * s_kn + d[None, :]
        k1 = tl.load(k_ptr, mask=visible[:, None], other=0.0).to(tl.float32)
        k2 = tl.load(k_ptr + HALF, mask=visible[:, None], other=0.0).to(tl.float32)
        angle = rp[:, None] * inv[None, :]
        c = tl.cos(angle)
        s = tl.sin(angle)
        k1r = k1 * c - k2 * s
        k2r = k2 * c + k1 * s

        scores = tl.sum(q1r[:, None, :] * k1r[None, :, :], axis=2) + tl.sum(q2r[:, None, :] * k2r[None, :, :], axis=2)
        scores = tl.where(visible[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)

        v_ptr = V + b * s_vb + hkv * s_vh + n[:, None] * s_vn + d[None, :]
        v1 = tl.load(v_ptr, mask=visible[:, None], other=0.0).to(tl.float32)
        v2 = tl.load(v_ptr + HALF, mask=visible[:, None], other=0.0).to(tl.float32)
        acc1 = acc1 * alpha[:, None] + tl.sum(p[:, :, None] * v1[None, :, :], axis=1)
        acc2 = acc2 * alpha[:, None] + tl.sum(p[:, :, None] * v2[None, :, :], axis=1)
        m_i = m_new

    a_ptr = ACC + b * s_ab + heads[:, None] * s_ah + split * s_as + d[None, :]
    tl.store(a_ptr, acc1, mask=g_ok[:, None])
    tl.store(a_ptr + HALF, acc2, mask=g_ok[:, None])
    ml = (b * (N_KV_HEADS * GROUP) + heads) * tl.num_programs(1) + split
    tl.store(M + ml, m_i, mask=g_ok)
    tl.store(L + ml, l_i, mask=g_ok)


def ring_decode_triton(q, k, v, slot_pos, rope_pos, inv_freq, q_pos: int, q_rope_pos: int, sinks: int, window: int, scale: float, block_n: int = 64, splits: int | None = None) -> torch.Tensor:
    b, h, dim = q.shape
    hkv, n_slots = k.shape[1], k.shape[2]
    group = h // hkv
    if splits is None:  # enough programs to fill the GPU, each with at least a few blocks of slots
        splits = max(1, min(triton.cdiv(n_slots, 4 * block_n), triton.cdiv(256, b * hkv)))
    per_split = triton.cdiv(triton.cdiv(n_slots, splits), block_n) * block_n
    splits = triton.cdiv(n_slots, per_split)
    acc = torch.empty(b, h, splits, dim, device=q.device, dtype=torch.float32)
    m = torch.empty(b, h, splits, device=q.device, dtype=torch.float32)
    l = torch.empty(b, h, splits, device=q.device, dtype=torch.float32)  # noqa: E741
    _ring_decode_split[(b * hkv, splits)](
        q, k, v, slot_pos, rope_pos, inv_freq, acc, m, l,
        q_pos, q_rope_pos, sinks, window, scale, n_slots, per_split,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        acc.stride(0), acc.stride(1), acc.stride(2),
        N_KV_HEADS=hkv, GROUP=group, GROUP_PAD=triton.next_power_of_2(group), HALF=dim // 2, BLOCK_N=block_n,
    )
    # merge the splits: rescale each by exp(m_s - max) and normalise; an empty query stays 0
    m_max = m.max(dim=2, keepdim=True).values
    weight = torch.where(torch.isinf(m), torch.zeros_like(m), torch.exp(m - torch.where(torch.isinf(m_max), torch.zeros_like(m_max), m_max)))
    total = (l * weight).sum(dim=2)
    out = (acc * weight[..., None]).sum(dim=2) / torch.where(total > 0, total, torch.ones_like(total))[..., None]
    return out.to(q.dtype)
