"""Gaussian splatting: the torch reference against hand-computed cases and float64 gradients,
masked rendering, the sparse CPU path against the reference, and (GPU tier) gsplat against the
reference on images, alphas and gradients."""

import math

import pytest
import torch

from kernels.splat import choose_impl, render, viewspace_grad
from kernels.splat.reference import quat_to_rotmat, rasterize, sh_basis


def camera(width=24, height=18, focal=30.0, dtype=torch.float32):
    viewmat = torch.eye(4, dtype=dtype)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=dtype)
    return viewmat, K, width, height


def random_gaussians(n, seed=0, dtype=torch.float32, sh_degree=None):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([0.5, 0.4, 0.3], dtype=dtype) + torch.tensor([0, 0, 3.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.15 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.2 + 0.7 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype) if sh_degree is None else 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype)
    return means, quats, scales, opac, colors


def test_one_gaussian_on_a_pixel_centre_has_its_opacity_there():
    viewmat, K, w, h = camera()
    # centre projects to pixel centre (12.5, 9.5) -> pixel (row 9, col 12)
    z = 3.0
    means = torch.tensor([[0.5 * z / 30.0, 0.5 * z / 30.0, z]])
    image, alpha, _ = rasterize(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.tensor([0.8]), torch.tensor([[0.2, 0.4, 0.6]]), viewmat, K, w, h)
    assert alpha[9, 12].item() == pytest.approx(0.8, rel=1e-6)
    assert torch.allclose(image[9, 12], 0.8 * torch.tensor([0.2, 0.4, 0.6]))
    # one pixel to the right it falls off as exp(-d^T conic d / 2), cov2d = s^2 J J^T + 0.3 I (EWA)
    x = 0.5 * z / 30.0
    J = torch.tensor([[30.0 / z, 0, -30.0 * x / z**2], [0, 30.0 / z, -30.0 * x / z**2]], dtype=torch.float64)
    conic = torch.linalg.inv(0.01 * J @ J.T + 0.3 * torch.eye(2, dtype=torch.float64))
    assert alpha[9, 13].item() == pytest.approx(0.8 * math.exp(-0.5 * conic[0, 0].item()), rel=1e-5)


def test_front_gaussian_occludes_the_back_one_whatever_the_input_order():
    viewmat, K, w, h = camera()
    means = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 2.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.full((2, 3), 0.3)
    colors = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    image, _, _ = rasterize(means, quats, scales, torch.tensor([0.99, 0.99]), colors, viewmat, K, w, h)
    flipped, _, _ = rasterize(means.flip(0), quats, scales, torch.tensor([0.99, 0.99]), colors.flip(0), viewmat, K, w, h)
    assert image[9, 12, 2] > 0.95 and 0 < image[9, 12, 0] < 0.03  # blue (near) in front of red (far), which leaks through 1 - alpha
    assert torch.allclose(image, flipped)


def test_degree_zero_sh_is_a_constant_colour():
    viewmat, K, w, h = camera()
    means, quats, scales, opac, _ = random_gaussians(5)
    rgb = torch.rand(5, 3)
    sh = ((rgb - 0.5) / 0.28209479177387814)[:, None, :]
    a, _, _ = rasterize(means, quats, scales, opac, rgb, viewmat, K, w, h)
    b, _, _ = rasterize(means, quats, scales, opac, sh, viewmat, K, w, h)
    assert torch.allclose(a, b, atol=1e-6)


def test_sh_basis_is_orthonormal_on_the_sphere():
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(200_000, 3, generator=g, dtype=torch.float64), dim=-1)
    basis = sh_basis(dirs, 3)
    gram = 4 * math.pi * basis.T @ basis / len(dirs)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.03)


def test_rotation_matrices_are_rotations():
    R = quat_to_rotmat(torch.randn(10, 4, dtype=torch.float64))
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(10, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(10, dtype=torch.float64))


def test_gradcheck_in_float64():
    viewmat, K, _, _ = camera(dtype=torch.float64)
    means, quats, scales, opac, colors = random_gaussians(4, seed=1, dtype=torch.float64, sh_degree=1)
    K = K * torch.tensor([[7 / 24, 1, 7 / 24], [1, 6 / 18, 6 / 18], [1, 1, 1]], dtype=torch.float64)  # a 7x6 image
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]

    def f(m, q, s, o, c):
        image, alpha, _ = rasterize(m, q, s, o, c, viewmat, K, 7, 6, background=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
        return image, alpha

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5)


def test_masked_render_equals_full_render_on_the_mask_and_is_background_elsewhere():
    viewmat, K, w, h = camera()
    means, quats, scales, opac, colors = random_gaussians(30, seed=2, sh_degree=2)
    bg = torch.tensor([0.3, 0.1, 0.7])
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[3:11, 5:17] = True
    full, full_alpha, _ = rasterize(means, quats, scales, opac, colors, viewmat, K, w, h, background=bg)
    means = means.clone().requires_grad_(True)
    masked, masked_alpha, _meta = rasterize(means, quats, scales, opac, colors, viewmat, K, w, h, background=bg, pixel_mask=mask)
    assert torch.allclose(masked[mask], full[mask], atol=1e-6)
    assert torch.allclose(masked_alpha[mask], full_alpha[mask], atol=1e-6)
    assert torch.all(masked[~mask] == bg) and torch.all(masked_alpha[~mask] == 0)
    # pixels outside the mask carry no gradient
    (masked[~mask].sum()).backward()
    assert means.grad is None or torch.all(means.grad == 0)


def test_viewspace_gradient_flows_to_visible_gaussians_only():
    viewmat, K, w, h = camera()
    means, quats, scales, opac, colors = random_gaussians(6, seed=3)
    means[0] = torch.tensor([50.0, 0.0, 3.0])  # far outside the image
    means[1] = torch.tensor([0.0, 0.0, -3.0])  # behind the camera
    image, _, meta = render(means.requires_grad_(True), quats, scales, opac, colors, viewmat, K, w, h, impl="reference")
    image.sum().backward()
    grad2d = viewspace_grad(meta)
    assert meta["visible"].tolist() == [False, False, True, True, True, True]
    assert torch.all(grad2d[:2] == 0) and torch.all(grad2d[2:].norm(dim=-1) > 0)


def test_auto_impl_is_the_sparse_one_on_cpu_and_unknown_impls_are_refused():
    assert choose_impl("cpu") == "sparse" and choose_impl("cpu", gsplat_installed=False) == "sparse"
    assert choose_impl("cuda", gsplat_installed=True) == "gsplat"
    # CUDA without gsplat: a loud error, not the dense reference (a terabyte at paper scale)
    with pytest.raises(RuntimeError, match="needs gsplat"):
        choose_impl("cuda", gsplat_installed=False)
    assert choose_impl("cuda", "reference", gsplat_installed=False) == "reference"
    with pytest.raises(ValueError, match="unknown splat impl"):
        choose_impl("cpu", "optix")


@pytest.mark.gpu
def test_gsplat_matches_the_reference_on_images_alphas_and_gradients():
    pytest.importorskip("gsplat")
    from kernels.splat.parity import PARAMETERS, compare

    figures = compare(("reference", "cpu"), ("gsplat", "cuda"))
    assert figures["image_max_abs_diff"] < 5e-3 and figures["alpha_max_abs_diff"] < 5e-3, figures
    for name in PARAMETERS:
        assert figures[f"grad_{name}_rel_diff"] < 2e-2, (name, figures)


def test_the_parity_figures_are_zero_for_one_backend_and_see_a_wrong_gradient():
    """The comparison the GPU test and the GPU pass rely on can fail: the reference against itself
    is exact, and a figure past its tolerance fails the check."""
    from kernels.splat import parity

    same = parity.compare(("reference", "cpu"), ("reference", "cpu"))
    assert same["image_max_abs_diff"] == 0 and all(same[f"grad_{n}_rel_diff"] == 0 for n in parity.PARAMETERS)
    assert parity.within_tolerance(same) and same["image_mean"] > 0.05
    moved = dict(same, grad_scales_rel_diff=0.05)
    assert not parity.within_tolerance(moved)


# --- the sparse CPU path (kernels/splat/sparse.py) against the reference, its specification -------------------------


def both(params, viewmat, K, w, h, **kwargs):
    """Image, alpha and every parameter's gradient (and the viewspace one) from both rasterizers."""
    from kernels.splat import sparse

    out = []
    for impl in (rasterize, sparse.rasterize):
        leaves = [t.detach().clone().requires_grad_(True) for t in params]
        image, alpha, meta = impl(*leaves, viewmat, K, w, h, **kwargs)
        weights = torch.linspace(-1, 1, image.numel(), dtype=image.dtype).reshape(image.shape)  # every pixel and channel differs
        ((image * weights).sum() + (alpha * alpha).sum()).backward()
        out.append((image.detach(), alpha.detach(), [t.grad for t in leaves] + [viewspace_grad(meta)], meta))
    return out


@pytest.mark.parametrize("n, w, h, sh", [(1, 5, 3, None), (57, 23, 17, 2), (400, 41, 29, 3)])
def test_sparse_equals_the_reference_on_images_alphas_and_gradients(n, w, h, sh):
    viewmat, K, _, _ = camera(w, h, focal=w)
    params = random_gaussians(n, seed=n, sh_degree=sh)
    (image, alpha, grads, meta), (s_image, s_alpha, s_grads, s_meta) = both(params, viewmat, K, w, h, background=torch.tensor([0.2, 0.5, 0.9]))
    assert image.abs().sum() > 0 and torch.allclose(s_image, image, atol=1e-5, rtol=0)
    assert torch.allclose(s_alpha, alpha, atol=1e-5, rtol=0)
    for ref, fast in zip(grads, s_grads):
        assert ref.abs().max() > 0 and torch.allclose(fast, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
    assert torch.equal(s_meta["visible"], meta["visible"]) and 0 < s_meta["pairs"] < n * w * h


def test_sparse_boxes_reach_as_far_as_alpha_does_beyond_three_sigma():
    """An opaque Gaussian is still above 1/255 at 3.3 sigma: a 3-sigma box would cut its rim."""
    from kernels.splat import sparse

    viewmat, K, w, h = camera(31, 31, focal=31)
    means = torch.tensor([[0.0, 0.0, 3.0]])
    quats, scales, opac = torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.3), torch.tensor([0.999])
    colors = torch.ones(1, 3)
    reference_alpha = rasterize(means, quats, scales, opac, colors, viewmat, K, w, h)[1]
    sparse_alpha = sparse.rasterize(means, quats, scales, opac, colors, viewmat, K, w, h)[1]
    sigma_px = math.sqrt(0.3**2 * (31 / 3.0) ** 2 + 0.3)
    rim = (torch.arange(w) + 0.5 - w / 2).abs() > 3 * sigma_px
    assert reference_alpha[h // 2, rim].max() > 1 / 255  # the case exists
    assert torch.allclose(sparse_alpha, reference_alpha, atol=1e-6, rtol=0)


def test_sparse_masked_render_and_gradcheck_in_float64():
    from kernels.splat import sparse

    viewmat, K, w, h = camera(9, 7, focal=9, dtype=torch.float64)
    params = random_gaussians(5, seed=4, dtype=torch.float64, sh_degree=1)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[1:5, 2:8] = True
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    (image, alpha, grads, _), (s_image, s_alpha, s_grads, s_meta) = both(params, viewmat, K, w, h, background=bg, pixel_mask=mask)
    assert torch.allclose(s_image, image, atol=1e-12) and torch.allclose(s_alpha, alpha, atol=1e-12)
    assert s_meta["pairs"] < sparse.rasterize(*params, viewmat, K, w, h)[2]["pairs"]  # pixels off the mask cost nothing
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, s_grads))
    leaves = [t.clone().requires_grad_(True) for t in params]
    assert torch.autograd.gradcheck(lambda *p: sparse.rasterize(*p, viewmat, K, w, h, background=bg, pixel_mask=mask)[:2], leaves,
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "sparse"])
def test_no_visible_gaussian_renders_the_background(impl):
    viewmat, K, w, h = camera(6, 5)
    means, quats, scales, opac, colors = random_gaussians(3, seed=5)
    means = (means * torch.tensor([1.0, 1.0, -1.0])).requires_grad_(True)  # all behind the camera
    bg = torch.tensor([0.3, 0.6, 0.9])
    image, alpha, meta = render(means, quats, scales, opac, colors, viewmat, K, w, h, impl=impl, background=bg)
    assert torch.equal(image, bg.expand(h, w, 3)) and torch.all(alpha == 0) and not meta["visible"].any()
    image.sum().backward()  # and nothing in the backward pass fails either
    image, alpha, _ = render(means[:0], quats[:0], scales[:0], opac[:0], colors[:0], viewmat, K, w, h, impl=impl, background=bg)
    assert torch.equal(image, bg.expand(h, w, 3))


@pytest.mark.parametrize("max_pairs", [1, 150, 2000])
def test_sparse_bands_of_rows_equal_one_pass_on_images_alphas_and_gradients(max_pairs):
    """Above max_pairs the image is composited in bands of rows under checkpointing (memory follows
    the band): the same image, alpha and gradients as one pass, with and without a mask; every band
    holds at most max_pairs pairs unless a single row has more."""
    from kernels.splat import sparse

    viewmat, K, w, h = camera(23, 17, focal=23)
    params = random_gaussians(57, seed=9, sh_degree=2)
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(1)) > 0.3
    for pixel_mask in (None, mask):
        results = []
        for limit in (None, max_pairs):
            leaves = [t.detach().clone().requires_grad_(True) for t in params]
            image, alpha, meta = sparse.rasterize(*leaves, viewmat, K, w, h, background=torch.tensor([0.2, 0.5, 0.9]), pixel_mask=pixel_mask, max_pairs=limit)
            weights = torch.linspace(-1, 1, image.numel()).reshape(image.shape)
            ((image * weights).sum() + (alpha * alpha).sum()).backward()
            results.append((image.detach(), alpha.detach(), [t.grad for t in leaves] + [viewspace_grad(meta)], meta["pairs"]))
        (image, alpha, grads, n), (b_image, b_alpha, b_grads, b_n) = results
        assert torch.allclose(b_image, image, atol=1e-6, rtol=0) and torch.allclose(b_alpha, alpha, atol=1e-6, rtol=0) and b_n == n > 0
        for one, banded in zip(grads, b_grads):
            assert one.abs().max() > 0 and torch.allclose(banded, one, atol=1e-5 * float(one.abs().max()), rtol=0)  # float32 sums in another order
    # the split: bands tile the rows, and each holds at most max_pairs pairs (or is one row)
    from kernels.splat.reference import screen_space

    _, means2d, cov2d, _, _, in_front, visible, _, _ = screen_space(*params, viewmat, K, w, h, 2, None, 0.01, 0.3)
    keep = torch.nonzero(visible)[:, 0]
    lo, hi = sparse.boxes(means2d, cov2d, params[3], keep, w, h)
    split = sparse.bands(lo, hi, h, max_pairs)
    assert split[0][0] == 0 and split[-1][1] == h and all(a[1] == b[0] for a, b in zip(split, split[1:]))
    sizes = [len(sparse.pairs(lo, hi, w, band)[0]) for band in split]
    assert sum(sizes) == len(sparse.pairs(lo, hi, w, (0, h))[0])
    assert all(n <= max_pairs or y1 - y0 == 1 for n, (y0, y1) in zip(sizes, split)) and (len(split) > 1) == (sum(sizes) > max_pairs)


def test_sparse_bands_gradcheck_in_float64():
    from kernels.splat import sparse

    viewmat, K, w, h = camera(9, 7, focal=9, dtype=torch.float64)
    params = random_gaussians(5, seed=4, dtype=torch.float64, sh_degree=1)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in params]
    assert len(sparse.bands(*sparse.boxes(*sparse_screen(params, viewmat, K, w, h)), h, 20)) > 2
    assert torch.autograd.gradcheck(lambda *p: sparse.rasterize(*p, viewmat, K, w, h, background=bg, max_pairs=20)[:2], leaves, eps=1e-6, atol=1e-5)


def sparse_screen(params, viewmat, K, w, h):
    from kernels.splat.reference import screen_space

    _, means2d, cov2d, _, _, _, visible, _, _ = screen_space(*params, viewmat, K, w, h, None, None, 0.01, 0.3)
    return means2d, cov2d, params[3], torch.nonzero(visible)[:, 0], w, h
