"""Masks against brute force; every backend against the float64 reference; bad input."""

import itertools

import pytest
import torch

from shared.streaming import BlockCausal, Causal, FrameWindow, SinkWindow, SlidingWindow, Window3D, attend, choose_backend, dense_mask
from shared.streaming.attention import reference_attention

SPECS = [
    Causal(),
    SlidingWindow(1),
    SlidingWindow(5),
    SinkWindow(0, 4),
    SinkWindow(3, 4),
    BlockCausal(4),
    BlockCausal(3, first_block=7),
    FrameWindow(3, 2),
    FrameWindow(3, 2, sink_frames=1),
    SinkWindow(2, 3) | BlockCausal(5),
    SlidingWindow(6) & BlockCausal(2, first_block=3),
    Window3D((2, 3, 4), (1, 3, 2)),
    Window3D((2, 3, 4), (2, 3, 2), shift=(1, 0, 1)),
]


def brute_force(spec, q, k):
    """The mask written as the plain rule, one pair at a time (no tensor ops shared with masks.py)."""
    if k < 0:
        return False
    if isinstance(spec, Causal):
        return k <= q
    if isinstance(spec, SlidingWindow):
        return k <= q and q - k < spec.window
    if isinstance(spec, SinkWindow):
        return k <= q and (k < spec.sinks or q - k < spec.window)
    if isinstance(spec, BlockCausal):
        first = spec.first_block or spec.block
        block = lambda p: 0 if p < first else 1 + (p - first) // spec.block  # noqa: E731
        return block(k) <= block(q)
    if isinstance(spec, FrameWindow):
        fq, fk = q // spec.tokens_per_frame, k // spec.tokens_per_frame
        return fk <= fq and (fq - fk < spec.window_frames or fk < spec.sink_frames)
    if isinstance(spec, Window3D):
        def cell(p):
            _, H, W = spec.grid
            coords = (p // (H * W), (p // W) % H, p % W)
            return tuple(((x - sh) % n) // w for x, n, w, sh in zip(coords, spec.grid, spec.window, spec.shift))

        return cell(q) == cell(k)
    a, b = brute_force(spec.a, q, k), brute_force(spec.b, q, k)
    return (a and b) if type(spec).__name__ == "And" else (a or b)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_dense_mask_equals_brute_force(spec):
    q_pos = torch.tensor([0, 1, 2, 5, 9, 10, 17, 23])
    kv_pos = torch.tensor([-1, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 16, 17, 20, 23])  # -1: an empty slot
    want = torch.tensor([[brute_force(spec, int(q), int(k)) for k in kv_pos] for q in q_pos])
    assert torch.equal(dense_mask(spec, q_pos, kv_pos), want)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_block_mask_is_the_same_definition(spec):
    """The BlockMask's mask_mod equals the dense mask, and it skips exactly the all-masked blocks."""
    from shared.streaming.masks import block_mask

    q_pos, kv_pos = torch.arange(40, 63), torch.arange(63)
    dense = dense_mask(spec, q_pos, kv_pos)
    bm = block_mask(spec, q_pos, kv_pos, block_size=16)
    qi, ki = torch.meshgrid(torch.arange(len(q_pos)), torch.arange(len(kv_pos)), indexing="ij")
    zero = torch.zeros((), dtype=torch.long)
    assert torch.equal(bm.mask_mod(zero, zero, qi, ki), dense)
    blocks = bm.to_dense()[0, 0].bool()
    for i, j in itertools.product(range(blocks.shape[0]), range(blocks.shape[1])):
        assert bool(blocks[i, j]) == bool(dense[16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)].any()), (i, j)


def random_qkv(b, h, hkv, tq, tk, d, dtype, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: (torch.randn(*s, generator=g, dtype=torch.float64) * 1.5).to(dtype).requires_grad_(requires_grad)  # noqa: E731
    return make(b, h, tq, d), make(b, hkv, tk, d), make(b, hkv, tk, d)


def brute_force_attention(q, k, v, allowed, scale):
    """Attention one query row at a time in float64 Python loops over heads (independent of reference_attention)."""
    b, h, tq, d = q.shape
    group = h // k.shape[1]
    out = torch.zeros(b, h, tq, v.shape[-1], dtype=torch.float64)
    for bi, hi, qi in itertools.product(range(b), range(h), range(tq)):
        keys = [j for j in range(k.shape[2]) if allowed[qi, j]]
        if not keys:
            continue
        s = torch.stack([q[bi, hi, qi].double() @ k[bi, hi // group, j].double() * scale for j in keys])
        p = torch.softmax(s, 0)
        out[bi, hi, qi] = sum(p[n] * v[bi, hi // group, j].double() for n, j in enumerate(keys))
    return out


def test_reference_equals_brute_force_with_gqa_and_empty_rows():
    q, k, v = random_qkv(2, 6, 2, 5, 11, 7, torch.float64)
    q_pos, kv_pos = torch.tensor([0, 3, 7, 9, 10]), torch.arange(11)
    allowed = dense_mask(SlidingWindow(3) & BlockCausal(4), q_pos, kv_pos)
    allowed[1] = False  # an empty row: output 0, LSE -inf
    out, lse = reference_attention(q, k, v, allowed, scale=0.3)
    assert torch.allclose(out, brute_force_attention(q, k, v, allowed, 0.3), atol=1e-12)
    assert torch.isinf(lse[:, :, 1]).all() and torch.isfinite(lse[:, :, [0, 2, 3, 4]]).all()


def test_reference_gradcheck_float64():
    q, k, v = random_qkv(1, 4, 2, 6, 9, 5, torch.float64, requires_grad=True)
    spec = SinkWindow(2, 3)
    assert torch.autograd.gradcheck(lambda q, k, v: attend(q, k, v, spec, backend="reference"), (q, k, v))


CASES = [  # (B, H, Hkv, Tq, Tk, D, mask)
    (1, 4, 4, 63, 63, 60, Causal()),
    (2, 6, 2, 63, 63, 60, SinkWindow(4, 16)),
    (1, 6, 3, 17, 63, 60, BlockCausal(8, first_block=20)),  # chunked prefill against a longer cache
    (2, 4, 1, 1, 63, 64, SinkWindow(4, 16)),  # decode, multi-query attention
    (1, 2, 2, 30, 30, 33, FrameWindow(5, 2, sink_frames=1)),
]
TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float64: 1e-12}


def _max_rel_err(got, want):
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}H{c[1]}kv{c[2]}q{c[3]}k{c[4]}d{c[5]}-{type(c[6]).__name__}")
def test_backend_matches_float64_reference(case, backend, dtype):
    b, h, hkv, tq, tk, d, spec = case
    q, k, v = random_qkv(b, h, hkv, tq, tk, d, dtype, seed=tq + tk)
    want = attend(q.double(), k.double(), v.double(), spec, backend="reference")
    res = attend(q, k, v, spec, backend=backend, return_info=True, flex_compile=False)
    assert res.backend == backend
    assert torch.isfinite(res.out).all()
    assert _max_rel_err(res.out, want) < TOL[dtype]


def test_sdpa_gradients_match_reference():
    q, k, v = random_qkv(1, 6, 2, 19, 19, 12, torch.float64, requires_grad=True)
    grads = {}
    for backend in ("reference", "sdpa"):
        out = attend(q, k, v, SinkWindow(2, 5), backend=backend)
        grads[backend] = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), (q, k, v))
    for gr, gs in zip(grads["reference"], grads["sdpa"], strict=True):
        assert torch.allclose(gr, gs, atol=1e-10)


def test_fully_masked_rows_are_zero_in_every_backend_when_allowed():
    q, k, v = random_qkv(1, 2, 2, 4, 8, 8, torch.float32)
    q_pos = torch.tensor([0, 1, 2, 30])  # the last query is beyond every window
    for backend in ("reference", "sdpa", "flex"):
        out = attend(q, k, v, SlidingWindow(3), q_pos=q_pos, backend=backend, allow_empty_rows=True, flex_compile=False)
        assert torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3])), backend
        assert out[:, :, :3].abs().sum() > 0


def test_lse_from_flex_matches_reference():
    q, k, v = random_qkv(1, 4, 2, 9, 9, 16, torch.float32)
    ref = attend(q, k, v, SinkWindow(1, 3), backend="reference", return_lse=True, return_info=True)
    flex = attend(q, k, v, SinkWindow(1, 3), backend="flex", return_lse=True, return_info=True, flex_compile=False)
    assert torch.allclose(ref.lse, flex.lse, atol=1e-5)


def test_auto_never_picks_flex_for_cpu_training_and_says_why():
    q, k, v = random_qkv(1, 2, 2, 8, 8, 8, torch.float32, requires_grad=True)
    res = attend(q, k, v, SinkWindow(1, 3), return_info=True)
    assert res.backend == "sdpa" and "no backward on CPU" in res.reason
    assert choose_backend(q, SinkWindow(1, 3), needs_grad=False, return_lse=True)[0] == "reference"
    with pytest.raises(ValueError, match="no backward on CPU"):
        attend(q, k, v, SinkWindow(1, 3), backend="flex")


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((1, 6, 4, 8), (1, 4, 4, 8), (1, 4, 4, 8)), "multiple of key/value heads"),
        (((1, 4, 4, 8), (1, 4, 4, 6), (1, 4, 4, 6)), "head dims differ"),
        (((1, 4, 4, 8), (2, 4, 4, 8), (2, 4, 4, 8)), "batch sizes differ"),
        (((1, 4, 4, 8), (1, 4, 5, 8), (1, 4, 4, 8)), "must agree"),
        (((4, 4, 8),), "expects q"),
    ],
)
def test_bad_shapes_get_a_clear_error(shapes, match):
    tensors = [torch.randn(*s) for s in shapes]
    if len(tensors) == 1:
        tensors = [tensors[0], torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8)]
    with pytest.raises(ValueError, match=match):
        attend(*tensors)


def test_mask_with_an_empty_row_is_refused_with_advice():
    q, k, v = random_qkv(1, 2, 2, 3, 8, 8, torch.float32)
    with pytest.raises(ValueError, match=r"no visible key \(query positions \[30\]"):
        attend(q, k, v, SlidingWindow(3), q_pos=torch.tensor([5, 6, 30]))
    with pytest.raises(ValueError, match="unknown attention backend 'cuda'"):
        attend(q, k, v, backend="cuda")


@pytest.mark.slow
def test_compiled_flex_matches_reference_and_decodes_without_recompiling():
    """Compiled flex (3-20 s to compile on CPU): parity, then a 20-step decode loop with one graph."""
    q, k, v = random_qkv(1, 4, 2, 1, 257, 64, torch.float32)
    want = attend(q.double(), k.double(), v.double(), SinkWindow(4, 64), backend="reference")
    got = attend(q, k, v, SinkWindow(4, 64), backend="flex")
    assert _max_rel_err(got, want) < 2e-5
    with torch.compiler.set_stance("fail_on_recompile"):
        for step in range(20):  # same shapes, new positions every step
            q_pos = torch.tensor([300 + step])
            attend(q, k, v, SinkWindow(4, 64), q_pos=q_pos, kv_pos=torch.arange(257) + 44 + step, backend="flex")


def test_triton_backend_refuses_what_the_decode_kernel_cannot_do():
    q, k, v = random_qkv(1, 2, 2, 3, 8, 8, torch.float32)
    with pytest.raises(ValueError, match="decode kernel \\(one query per head\\); got 3 queries"):
        attend(q, k, v, SinkWindow(1, 4), backend="triton")
    with pytest.raises(ValueError, match="supports causal, sliding-window and sink-window masks"):
        attend(q[:, :, :1], k, v, BlockCausal(4), backend="triton")
