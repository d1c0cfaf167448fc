"""Ring-buffer decode kernel: reference against brute force and the streaming core, gradients,
the Triton kernel under the interpreter, and the GPU tier."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels.ring_decode import ring_decode, triton_status
from shared.streaming import KVCache, Ring, Rope

HERE = Path(__file__).resolve().parent


def brute_force(q, k, v, slot_pos, q_pos, sinks, window, theta):
    """Per head, per slot, in float64 with the rotation written out by hand."""
    b, h, d = q.shape
    group = h // k.shape[1]
    half = d // 2
    inv = [theta ** (-2 * i / d) for i in range(half)]

    def rotate(x, p):
        out = x.clone()
        for i in range(half):
            c, s = math.cos(p * inv[i]), math.sin(p * inv[i])
            out[i], out[i + half] = x[i] * c - x[i + half] * s, x[i + half] * c + x[i] * s
        return out

    out = torch.zeros(b, h, d, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            qr = rotate(q[bi, hi].double(), q_pos)
            vis = [j for j, p in enumerate(slot_pos.tolist()) if 0 <= p <= q_pos and (p < sinks or q_pos - p < window)]
            if not vis:
                continue
            s = torch.stack([qr @ rotate(k[bi, hi // group, j].double(), int(slot_pos[j])) / math.sqrt(d) for j in vis])
            p = torch.softmax(s, 0)
            out[bi, hi] = sum(p[n] * v[bi, hi // group, j].double() for n, j in enumerate(vis))
    return out


def test_reference_equals_brute_force_on_a_shuffled_ring_with_empty_slots():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 6, 8, generator=g), torch.randn(2, 2, 13, 8, generator=g), torch.randn(2, 2, 13, 8, generator=g)
    slot_pos = torch.tensor([12, 0, 30, 1, -1, 25, 28, 29, -1, 27, 26, 2, 31])
    got = ring_decode(q.double(), k.double(), v.double(), slot_pos, q_pos=31, sinks=3, window=6, theta=500.0, impl="reference")
    assert torch.allclose(got, brute_force(q, k, v, slot_pos, 31, 3, 6, 500.0), atol=1e-10)


def test_reference_equals_the_streaming_core_on_a_ring_cache():
    """The kernel's spec is the decode step of KVCache(Ring) + attend: same numbers."""
    g = torch.Generator().manual_seed(1)
    rope = Rope(16, theta=10000.0)
    cache = KVCache(Ring(4, 20), batch=1, kv_heads=2, head_dim=16, dtype=torch.float64)
    for _ in range(57):
        q, k, v = (torch.randn(1, n, 1, 16, generator=g, dtype=torch.float64) for n in (6, 2, 2))
        want = cache.attend(q, k, v, rope=rope, backend="reference")
    got = ring_decode(q[:, :, 0], cache.k, cache.v, cache.pos, q_pos=56, sinks=4, window=17, theta=10000.0, impl="reference")
    assert torch.allclose(got, want[:, :, 0], atol=1e-12)


def test_reference_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    slot_pos = torch.tensor([0, 1, 7, 8, 9, 10, 11, -1, 12])
    fn = lambda q, k, v: ring_decode(q, k, v, slot_pos, q_pos=12, sinks=2, window=4, theta=100.0, impl="reference")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernel_matches_reference_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(HERE / "_interpret_ring_decode.py")], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report.pop("empty_query_is_zero") is True
    assert {"core_fused_sink_in_cache", "core_fused_sink_absolute", "head_dim_96_fp32", "far_positions_fp32", "strided_last_dim_fp32"} <= set(report)
    for name, result in report.items():
        assert result["finite"], name
        assert result["rel_err"] < (2e-2 if name.endswith("bf16") else 1e-5), (name, result)


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="triton not installed")
def test_kernel_compiles_for_sm90_at_every_specialisation_of_the_decode_loop_without_spills():
    """Triton makes an integer argument equal to 1 a compile-time constant; the interpreter never
    does, so only a real compile for the GPU finds code that breaks on it (the old kernel failed at
    the second token of every stream). Compiled here for sm_90 with Triton's bundled ptxas."""
    from kernels.ring_decode import aot

    for d, h, hkv, dtype, n, q_pos in aot.LAYOUTS:
        args, kwargs = aot.decode_launch(d, h, hkv, dtype, n, q_pos)
        signature, constexprs, attrs, options, target = aot.specialisation(args, kwargs)
        assert signature["q_pos"] != "constexpr", "the stream position must not be specialised (one compile per stream)"
        report = aot.compile_report(signature, constexprs, attrs, options, target)
        layout = (d, f"{h}:{hkv}", dtype, n, q_pos)
        assert report["spill_store_bytes"] == 0 and report["spill_load_bytes"] == 0, (layout, report)
        assert 0 < report["registers"] <= 255, (layout, report)
    assert {(layout[4], layout[5]) for layout in aot.LAYOUTS} >= {(1, 0), (2, 1)}  # the first two tokens of a stream


def test_triton_refuses_clearly_where_it_cannot_run():
    if triton_status()[0]:
        pytest.skip("triton can run here")
    with pytest.raises(RuntimeError, match="impl='triton' cannot run here"):
        ring_decode(torch.randn(1, 2, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.arange(4), q_pos=3, sinks=1, window=2, theta=1e4, impl="triton")


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        ring_decode(torch.randn(1, 5, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.arange(4), q_pos=3, sinks=1, window=2, theta=1e4)
    with pytest.raises(ValueError, match="must be even"):
        ring_decode(torch.randn(1, 2, 7), torch.randn(1, 2, 4, 7), torch.randn(1, 2, 4, 7), torch.arange(4), q_pos=3, sinks=1, window=2, theta=1e4)


@pytest.mark.gpu
@pytest.mark.parametrize("n_slots", [1024, 8192, 65536])
@pytest.mark.parametrize("heads", [(32, 8), (9, 3), (64, 8)])
@pytest.mark.parametrize("head_dim", [64, 96, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_matches_reference_on_gpu(n_slots, heads, head_dim, dtype):
    h, hkv = heads
    g = torch.Generator(device="cuda").manual_seed(n_slots + head_dim)
    q = torch.randn(2, h, head_dim, device="cuda", generator=g).to(dtype)
    k = torch.randn(2, hkv, n_slots, head_dim, device="cuda", generator=g).to(dtype)
    v = torch.randn(2, hkv, n_slots, head_dim, device="cuda", generator=g).to(dtype)
    q_pos = 3 * n_slots
    slot_pos = torch.cat([torch.arange(4), torch.arange(q_pos - n_slots + 5, q_pos + 1)]).cuda()[torch.randperm(n_slots, device="cuda")]
    kwargs = dict(q_pos=q_pos, sinks=4, window=n_slots - 4, theta=1e5)
    want = ring_decode(q.double(), k.double(), v.double(), slot_pos, impl="reference", **kwargs)
    got = ring_decode(q, k, v, slot_pos, impl="triton", **kwargs)
    tol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}[dtype]
    assert torch.isfinite(got).all()
    assert ((got.double() - want).abs().max() / want.abs().max()).item() < tol


@pytest.mark.gpu
@pytest.mark.parametrize("reposition", ["cache", "absolute"])
def test_triton_decode_loop_from_the_first_token_on_gpu(reposition):
    """A stream from position 0 through the core's fused path: positions 0 and 1 are the ones Triton
    specialises, and the cache grows from one filled slot."""
    from shared.streaming import SinkWindowPolicy

    rope = Rope(64, theta=10000.0)
    g = torch.Generator(device="cuda").manual_seed(3)
    fused = KVCache(SinkWindowPolicy(4, 60, reposition=reposition), batch=1, kv_heads=2, head_dim=64, device="cuda")
    plain = KVCache(SinkWindowPolicy(4, 60, reposition=reposition), batch=1, kv_heads=2, head_dim=64, device="cuda", dtype=torch.float64)
    worst = 0.0
    for _ in range(100):
        q, k, v = (torch.randn(1, n, 1, 64, device="cuda", generator=g) for n in (8, 2, 2))
        a = fused.attend(q, k, v, rope=rope, backend="triton")
        b = plain.attend(q.double(), k.double(), v.double(), rope=rope, backend="reference")
        worst = max(worst, ((a.double() - b).abs().max() / b.abs().max()).item())
    assert worst < 1e-4


def test_the_torch_only_reference_equals_the_cores_rope_masks_and_attention():
    """The reference imports nothing from shared/ (so the core can build on the kernel); it must
    still say exactly what the core's pieces say, rope positions apart from stream positions too."""
    from kernels.ring_decode.reference import ring_decode_reference
    from shared.streaming.attention import reference_attention
    from shared.streaming.masks import SinkWindow, dense_mask

    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, 6, 96, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 37, 96, generator=g, dtype=torch.float64) for _ in range(2))
    slot_pos = torch.randperm(200, generator=g)[:37]
    slot_pos[[3, 17]] = -1  # empty slots
    rope_pos = torch.argsort(torch.argsort(slot_pos))  # in-cache ranks
    q_pos, q_rope, sinks, window = 150, 40, 4, 60
    got = ring_decode_reference(q, k, v, slot_pos, rope_pos, q_pos=q_pos, q_rope_pos=q_rope, sinks=sinks, window=window, theta=1e4)
    rope = Rope(96, theta=1e4)
    allowed = dense_mask(SinkWindow(sinks, window), torch.tensor([q_pos]), slot_pos)
    want, _ = reference_attention(rope.apply(q[:, :, None], torch.tensor([q_rope])), rope.apply(k, rope_pos), v, allowed, 96**-0.5)
    assert allowed.sum() > 5 and (~allowed).sum() > 5
    torch.testing.assert_close(got, want[:, :, 0], rtol=1e-12, atol=1e-12)
