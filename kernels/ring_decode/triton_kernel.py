"""Triton fast path of ring-buffer decode attention (spec: reference.py).

Flash-decoding layout: the grid is (B * Hkv, splits). Each program reads one contiguous range of
slots of one key/value head **once** for all query heads of its GQA group, rotates the keys in
registers (RoPE from the slot's position; no rotated copy of the cache is ever written), applies
the sink + window mask from slot positions, and keeps an online softmax. Splits are merged in
torch by their (max, sum) statistics. Decode is memory-bound: the work per byte of K/V is small,
so products are broadcast-and-sum rather than tensor-core dots (which need 16 query rows).

Choices a GPU review forced (each pinned by a test in tests/kernels/test_ring_decode.py):
- The query is rotated and scaled once per call on the host, in float64 angles (one [B, H, D]
  tensor). The kernel therefore takes no float cast of an integer argument: Triton turns an
  integer argument equal to 1 into a compile-time constant, and ``q_pos.to(...)`` on it failed to
  compile at the second token of every stream. ``q_pos`` is also not specialised at all
  (``do_not_specialize``), so a stream does not recompile when its position crosses a multiple of 16.
- Key angles at positions in the tens of thousands: ``pos * inv_freq`` in float32 is off by
  ~ulp(pos) radians (4e-3 at 32k), which moved scores by 3e-4 of their scale. The kernel reduces
  the angle in *turns* instead: the frequency f = inv_freq / 2pi is split on the host (float64) into
  three float32 pieces of 7 significant bits and a remainder, so ``pos * piece`` is exact in float32
  for positions below 2^17 and ``frac()`` of each is exact; only the remainder's product rounds
  (~1e-6 turns). Above 2^17 positions accuracy degrades gracefully (ulp of the remainder's product).
- Head dims whose half is not a power of two (96: half 48) pad the half to the next power of two
  and mask it.
- Offsets are int64 (caches past 2^31 elements) and every stride, the last dimension's included,
  is an argument (a stride of 1 still becomes a constant, so contiguous caches lose nothing).
- Block size and warps follow the register budget (``launch_config``): the broadcast products are
  [GROUP_PAD, BLOCK_N, HALF_PAD] tiles, so BLOCK_N shrinks as the group and head dim grow; at head
  dim 128 with GQA 8 the old fixed BLOCK_N 64 spilled about 4.8 KB of registers.

Imported only when used: importing this module imports Triton.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# Significant bits of each exact piece of the frequency; positions below 2^(24 - PIECE_BITS) = 131072 times
# a piece are exact in float32.
PIECE_BITS = 7
# Elements of one broadcast tile [GROUP_PAD, BLOCK_N, HALF_PAD] per warp (16 fp32 registers per thread
# per live tile). ptxas's report for sm_90 (python -m kernels.ring_decode.aot): at 512 no layout of
# the test list spills (at most 209 registers, 128 for GQA groups of 4 and 8); at 1024 head dims 96
# and 128 without GQA spill 116-144 bytes. Which budget is fastest is for the GPU pass to measure.
TILE_PER_WARP = 512


@triton.jit(do_not_specialize=["q_pos"])
def _ring_decode_split(
    Q, K, V, SLOT_POS, ROPE_POS, FREQ, ACC, M, L,
    q_pos, sinks, window, n_slots, slots_per_split,
    s_qb, s_qh, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd, s_ab, s_ah, s_as,
    N_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (pid_bh // N_KV_HEADS).to(tl.int64)
    hkv = (pid_bh % N_KV_HEADS).to(tl.int64)

    g = tl.arange(0, GROUP_PAD)
    g_ok = g < GROUP
    d = tl.arange(0, HALF_PAD)
    d_ok = d < HALF
    heads = hkv * GROUP + g
    # the frequency in turns per position, as three exact pieces and a remainder (see the docstring)
    f1 = tl.load(FREQ + d, mask=d_ok, other=0.0)
    f2 = tl.load(FREQ + HALF_PAD + d, mask=d_ok, other=0.0)
    f3 = tl.load(FREQ + 2 * HALF_PAD + d, mask=d_ok, other=0.0)
    f4 = tl.load(FREQ + 3 * HALF_PAD + d, mask=d_ok, other=0.0)

    # the query arrives rotated and scaled (float32)
    q_ptr = Q + b * s_qb + heads[:, None] * s_qh + d[None, :]
    q_mask = g_ok[:, None] & d_ok[None, :]
    q1 = tl.load(q_ptr, mask=q_mask, other=0.0)
    q2 = tl.load(q_ptr + HALF, mask=q_mask, other=0.0)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc1 = tl.zeros([GROUP_PAD, HALF_PAD], tl.float32)
    acc2 = tl.zeros([GROUP_PAD, HALF_PAD], tl.float32)

    start = split * slots_per_split
    stop = tl.minimum(start + slots_per_split, n_slots)
    for block in range(start, stop, BLOCK_N):
        n = block + tl.arange(0, BLOCK_N)
        in_range = n < stop
        pos = tl.load(SLOT_POS + n, mask=in_range, other=-1)
        visible = in_range & (pos >= 0) & (pos <= q_pos) & ((pos < sinks) | (q_pos - pos < window))
        rp = tl.load(ROPE_POS + n, mask=in_range, other=0).to(tl.float32)[:, None]
        kv_mask = visible[:, None] & d_ok[None, :]
        n64 = n.to(tl.int64)

        k_ptr = K + b * s_kb + hkv * s_kh + n64[:, None] * s_kn + d[None, :] * s_kd
        k1 = tl.load(k_ptr, mask=kv_mask, other=0.0).to(tl.float32)
        k2 = tl.load(k_ptr + HALF * s_kd, mask=kv_mask, other=0.0).to(tl.float32)
        t1 = rp * f1[None, :]
        t2 = rp * f2[None, :]
        t3 = rp * f3[None, :]
        turns = (t1 - tl.floor(t1)) + (t2 - tl.floor(t2)) + (t3 - tl.floor(t3)) + rp * f4[None, :]
        angle = (turns - tl.floor(turns)) * 6.283185307179586
        c = tl.cos(angle)
        s = tl.sin(angle)
        k1r = k1 * c - k2 * s
        k2r = k2 * c + k1 * s

        scores = tl.sum(q1[:, None, :] * k1r[None, :, :], axis=2) + tl.sum(q2[:, None, :] * k2r[None, :, :], axis=2)
        scores = tl.where(visible[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)

        v_ptr = V + b * s_vb + hkv * s_vh + n64[:, None] * s_vn + d[None, :] * s_vd
        v1 = tl.load(v_ptr, mask=kv_mask, other=0.0).to(tl.float32)
        v2 = tl.load(v_ptr + HALF * s_vd, mask=kv_mask, other=0.0).to(tl.float32)
        acc1 = acc1 * alpha[:, None] + tl.sum(p[:, :, None] * v1[None, :, :], axis=1)
        acc2 = acc2 * alpha[:, None] + tl.sum(p[:, :, None] * v2[None, :, :], axis=1)
        m_i = m_new

    a_ptr = ACC + b * s_ab + heads[:, None] * s_ah + split * s_as + d[None, :]
    a_mask = g_ok[:, None] & d_ok[None, :]
    tl.store(a_ptr, acc1, mask=a_mask)
    tl.store(a_ptr + HALF, acc2, mask=a_mask)
    ml = (b * (N_KV_HEADS * GROUP) + heads) * tl.num_programs(1) + split
    tl.store(M + ml, m_i, mask=g_ok)
    tl.store(L + ml, l_i, mask=g_ok)


def launch_config(group: int, head_dim: int, tile_per_warp: int = TILE_PER_WARP) -> dict:
    """Block of slots and warps per program for a GQA group and head dim (the register budget)."""
    group_pad, half_pad = triton.next_power_of_2(group), triton.next_power_of_2(head_dim // 2)
    num_warps = 4 if group_pad * half_pad <= 128 else 8
    block_n = max(8, min(128, tile_per_warp * num_warps // (group_pad * half_pad)))
    return {"GROUP_PAD": group_pad, "HALF_PAD": half_pad, "BLOCK_N": block_n, "num_warps": num_warps}


def frequency_pieces(head_dim: int, theta: float, device) -> torch.Tensor:
    """[4, HALF_PAD] float32: inv_freq / 2pi (turns per position) as three pieces of PIECE_BITS
    significant bits and a float32 remainder, computed in float64. Their sum is the frequency."""
    half = head_dim // 2
    half_pad = triton.next_power_of_2(half)
    freq = [theta ** (-2 * i / head_dim) / (2 * math.pi) for i in range(half)]
    pieces = torch.zeros(4, half_pad, dtype=torch.float64)
    for i, f in enumerate(freq):
        rest = f
        for j in range(3):
            if rest == 0.0:
                break
            exponent = math.frexp(rest)[1]  # rest = m * 2^exponent, 0.5 <= m < 1
            quantum = math.ldexp(1.0, exponent - PIECE_BITS)
            piece = math.floor(rest / quantum) * quantum  # the leading PIECE_BITS bits
            pieces[j, i] = piece
            rest -= piece
        pieces[3, i] = rest
    return pieces.to(device=device, dtype=torch.float32)


def rotated_query(q: torch.Tensor, q_rope_pos: int, theta: float, scale: float) -> torch.Tensor:
    """R(q_rope_pos) q * scale in float32, the rotation's angles in float64 (once per call)."""
    half = q.shape[-1] // 2
    inv = 1.0 / (theta ** (torch.arange(0, q.shape[-1], 2, dtype=torch.float64, device=q.device) / q.shape[-1]))
    angle = q_rope_pos * inv
    cos, sin = angle.cos().to(torch.float32), angle.sin().to(torch.float32)
    q1, q2 = q[..., :half].to(torch.float32), q[..., half:].to(torch.float32)
    return (torch.cat([q1 * cos - q2 * sin, q2 * cos + q1 * sin], dim=-1) * scale).contiguous()


def launch_arguments(q, k, v, slot_pos, rope_pos, q_pos: int, q_rope_pos: int, sinks: int, window: int, scale: float, theta: float,
                     splits: int | None = None, tile_per_warp: int = TILE_PER_WARP):
    """(grid, positional arguments, keyword arguments, outputs) of one kernel launch; used by
    ``ring_decode_triton`` and by the ahead-of-time compile test, so both see the same specialisations."""
    b, h, dim = q.shape
    hkv, n_slots = k.shape[1], k.shape[2]
    group = h // hkv
    config = launch_config(group, dim, tile_per_warp)
    block_n = config["BLOCK_N"]
    if splits is None:  # enough programs to fill the GPU, each with at least a few blocks of slots
        splits = max(1, min(triton.cdiv(n_slots, 4 * block_n), triton.cdiv(512, b * hkv)))
    per_split = triton.cdiv(triton.cdiv(n_slots, splits), block_n) * block_n
    splits = triton.cdiv(n_slots, per_split)
    acc = torch.empty(b, h, splits, dim, device=q.device, dtype=torch.float32)
    m = torch.empty(b, h, splits, device=q.device, dtype=torch.float32)
    l = torch.empty(b, h, splits, device=q.device, dtype=torch.float32)  # noqa: E741
    qr = rotated_query(q, q_rope_pos, theta, scale)
    freq = frequency_pieces(dim, theta, q.device)
    args = (
        qr, k, v, slot_pos, rope_pos, freq, acc, m, l,
        q_pos, sinks, window, n_slots, per_split,
        qr.stride(0), qr.stride(1), k.stride(0), k.stride(1), k.stride(2), k.stride(3), v.stride(0), v.stride(1), v.stride(2), v.stride(3),
        acc.stride(0), acc.stride(1), acc.stride(2),
    )
    kwargs = dict(N_KV_HEADS=hkv, GROUP=group, HALF=dim // 2, **config)
    return (b * hkv, splits), args, kwargs, (acc, m, l)


def ring_decode_triton(q, k, v, slot_pos, rope_pos, theta: float, q_pos: int, q_rope_pos: int, sinks: int, window: int, scale: float,
                       splits: int | None = None, tile_per_warp: int = TILE_PER_WARP) -> torch.Tensor:
    grid, args, kwargs, (acc, m, l) = launch_arguments(q, k, v, slot_pos, rope_pos, q_pos, q_rope_pos, sinks, window, scale, theta,  # noqa: E741
                                                       splits, tile_per_warp)
    _ring_decode_split[grid](*args, **kwargs)
    # merge the splits: rescale each by exp(m_s - max) and normalise; an empty query stays 0
    m_max = m.max(dim=2, keepdim=True).values
    weight = torch.where(torch.isinf(m), torch.zeros_like(m), torch.exp(m - torch.where(torch.isinf(m_max), torch.zeros_like(m_max), m_max)))
    total = (l * weight).sum(dim=2)
    out = (acc * weight[..., None]).sum(dim=2) / torch.where(total > 0, total, torch.ones_like(total))[..., None]
    return out.to(q.dtype)
