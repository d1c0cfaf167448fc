"""Run by test_ring_decode.py in a fresh process: TRITON_INTERPRET=1 must be set before Triton is
imported. Compares the Triton kernel with the reference on tiny, awkward cases; prints one JSON line."""

import json
import os

assert os.environ.get("TRITON_INTERPRET") == "1"

import torch  # noqa: E402

from kernels.ring_decode import ring_decode  # noqa: E402

torch.manual_seed(0)
report = {}
CASES = {
    # name: (B, H, Hkv, N, D, sinks, window, q_pos, dtype, in_cache_rope, strided: K/V's last dim not contiguous)
    "gqa3_odd_slots_fp32": (2, 6, 2, 37, 16, 2, 10, 40, torch.float32, False, False),
    "mha_in_cache_rope": (1, 4, 4, 29, 8, 4, 20, 100, torch.float32, True, False),
    "mqa_bf16": (1, 5, 1, 70, 32, 1, 33, 69, torch.bfloat16, False, False),
    # half of 96 is 48, not a power of two: padded and masked
    "head_dim_96_fp32": (1, 6, 2, 21, 96, 2, 12, 30, torch.float32, False, False),
    # positions in the tens of thousands: float32 angles pos * inv_freq were off by ~1e-3 rad
    "far_positions_fp32": (1, 4, 2, 45, 64, 4, 10**6, 99_999, torch.float32, False, False),
    # K/V with a last-dimension stride other than 1 (a transposed [B, Hkv, D, N] store)
    "strided_last_dim_fp32": (1, 4, 2, 19, 16, 2, 8, 25, torch.float32, False, True),
}
for name, (b, h, hkv, n, d, sinks, window, q_pos, dtype, in_cache, strided) in CASES.items():
    q = torch.randn(b, h, d).to(dtype)
    k = (torch.randn(b, hkv, n, d) * 1.5).to(dtype)
    v = torch.randn(b, hkv, n, d).to(dtype)
    if strided:
        k, v = (x.transpose(2, 3).contiguous().transpose(2, 3) for x in (k, v))
        assert k.stride(-1) == n
    slot_pos = torch.randperm(q_pos + 1)[:n].sort().values  # any positions up to the query, in shuffled slots
    slot_pos = slot_pos[torch.randperm(n)]
    slot_pos[::7] = -1  # empty slots
    rope_pos = torch.argsort(torch.argsort(slot_pos)) if in_cache else slot_pos.clamp(min=0)
    kwargs = dict(q_pos=q_pos, sinks=sinks, window=window, theta=10000.0, rope_pos=rope_pos, q_rope_pos=int(rope_pos.max()) + 1 if in_cache else q_pos)
    want = ring_decode(q.double(), k.double(), v.double(), slot_pos, impl="reference", **kwargs)
    got = ring_decode(q, k, v, slot_pos, impl="triton", **kwargs)
    report[name] = {"rel_err": ((got.double() - want).abs().max() / want.abs().max()).item(), "finite": bool(torch.isfinite(got).all())}

# a query that sees nothing gets exactly 0
q, k, v = torch.randn(1, 2, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
empty = ring_decode(q, k, v, torch.arange(50, 59), q_pos=10, sinks=0, window=3, theta=10000.0, impl="triton")
report["empty_query_is_zero"] = bool((empty == 0).all())

# the core's fused path: KVCache.attend(backend="triton") hands the kernel pre-RoPE keys
from shared.streaming import KVCache, Rope, SinkWindowPolicy  # noqa: E402

rope = Rope(16, theta=10000.0)
errors = []
for policy_name, policy in {"sink_in_cache": SinkWindowPolicy(2, 9, reposition="cache"), "sink_absolute": SinkWindowPolicy(2, 9, reposition="absolute")}.items():
    fused = KVCache(policy, batch=1, kv_heads=2, head_dim=16)
    plain = KVCache(policy, batch=1, kv_heads=2, head_dim=16)
    worst = 0.0
    for _ in range(14):
        q, k, v = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)
        a = fused.attend(q, k, v, rope=rope, backend="triton")
        b = plain.attend(q, k, v, rope=rope, backend="reference")
        worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    report[f"core_fused_{policy_name}"] = {"rel_err": worst, "finite": True}
print(json.dumps(report))
