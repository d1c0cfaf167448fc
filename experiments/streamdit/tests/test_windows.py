"""The window fast path against its specification (the shared core's Window3D mask), in float64,
with gradients, on odd grids; and the receptive field it promises."""

import pytest
import torch

from shared.streaming import Window3D, attend
from shared.streaming.masks import dense_mask

from ..windows import window_attention


@pytest.mark.parametrize("grid, window, shift", [((4, 6, 4), (2, 3, 2), (0, 0, 0)), ((4, 6, 4), (2, 3, 2), (1, 1, 1)),
                                                 ((3, 5, 2), (3, 5, 1), (0, 2, 1)), ((2, 4, 4), (2, 4, 4), (0, 0, 0))])
def test_fast_path_equals_the_masked_reference_with_gradients(grid, window, shift):
    g = torch.Generator().manual_seed(0)
    n = grid[0] * grid[1] * grid[2]
    q, k, v = (torch.randn(2, 3, n, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    fast = window_attention(q, k, v, grid, window, shift)
    spec = attend(q, k, v, Window3D(grid, window, shift), backend="reference")
    assert torch.allclose(fast, spec, atol=1e-12)
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    grads_fast = torch.autograd.grad((fast * w).sum(), (q, k, v))
    grads_spec = torch.autograd.grad((spec * w).sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads_fast, grads_spec))
    if window == grid:  # one window: full attention
        assert torch.allclose(fast, attend(q, k, v, None, backend="reference"), atol=1e-12)


def test_a_token_sees_exactly_its_window_and_the_shift_crosses_borders():
    grid, window = (4, 4, 4), (2, 2, 2)
    n = 64
    v = torch.eye(n, dtype=torch.float64)[None, None]  # value j = one-hot j: the output shows who was seen
    q = k = torch.zeros(1, 1, n, n, dtype=torch.float64)  # equal scores: uniform weights over the window
    plain = window_attention(q, k, v, grid, window)[0, 0] > 0
    shifted = window_attention(q, k, v, grid, window, (1, 1, 1))[0, 0] > 0
    assert (plain.sum(1) == 8).all() and (shifted.sum(1) == 8).all()
    token = lambda f, h, w: (f * 4 + h) * 4 + w
    assert plain[token(0, 0, 0), token(1, 1, 1)] and not plain[token(1, 1, 1), token(2, 2, 2)]
    assert shifted[token(1, 1, 1), token(2, 2, 2)] and not shifted[token(0, 0, 0), token(1, 1, 1)]
    assert shifted[token(0, 0, 0), token(3, 3, 3)]  # cyclic: the grid's ends meet


def test_window_must_divide_the_grid():
    x = torch.zeros(1, 1, 24, 2)
    with pytest.raises(ValueError, match="must divide"):
        window_attention(x, x, x, (2, 3, 4), (2, 2, 2))


def test_extra_keys_equal_dense_attention_with_the_keys_appended():
    """Memory keys seen by every window: the fast path equals the explicit masked softmax over
    [window tokens, memory tokens] in float64, on an odd grid with a shift."""
    grid, window, shift = (3, 4, 6), (3, 2, 3), (1, 1, 1)
    g = torch.Generator().manual_seed(7)
    n, m = 3 * 4 * 6, 5
    q, k, v = (torch.randn(2, 2, n, 4, generator=g, dtype=torch.float64) for _ in range(3))
    ek, ev = (torch.randn(2, 2, m, 4, generator=g, dtype=torch.float64) for _ in range(2))
    fast = window_attention(q, k, v, grid, window, shift, ek, ev)
    allowed = dense_mask(Window3D(grid, window, shift), torch.arange(n), torch.arange(n))
    allowed = torch.cat([allowed, torch.ones(n, m, dtype=torch.bool)], dim=1)
    scores = (q @ torch.cat([k, ek], 2).transpose(-1, -2)) / 2.0
    ref = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ torch.cat([v, ev], 2)
    assert torch.allclose(fast, ref, atol=1e-12)


def test_the_fast_path_runs_on_sdpas_flash_kernel():
    """SDPA's fused kernels take 4-D tensors only; with 5-D windows SDPA silently fell back to its
    math path (the 4B bench would have timed that). Restricted to the flash kernel (CPU has one),
    the window path must run, memory keys included, and equal the math path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    grid, window, shift = (4, 4, 6), (2, 2, 3), (1, 1, 1)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 96, 8, generator=g) for _ in range(3))
    ek, ev = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(2))
    with sdpa_kernel(SDPBackend.MATH):
        want = window_attention(q, k, v, grid, window, shift, ek, ev)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        got = window_attention(q, k, v, grid, window, shift, ek, ev)
        plain = window_attention(q, k, v, grid, window, shift)
    assert torch.allclose(got, want, atol=1e-5) and plain.shape == q.shape
