"""gsplat against the reference renderer on one scene: images, alphas and every gradient.

    figures = compare(("reference", "cpu"), ("gsplat", "cuda"))

Used by the GPU test (tests/kernels/test_splat.py) and by the GPU pass (env/gpu/steps.py), so the
figures the pass publishes are the ones the test asserts on. Conventions differ slightly between the
two (gsplat stops a pixel at transmittance < 1e-4 and culls at 3 sigma), hence tolerances of 5e-3 on
pixels and 2e-2 relative on gradients rather than float32 rounding.
"""

from __future__ import annotations

import torch

from . import render

PARAMETERS = ("means", "quats", "scales", "opacities", "colors")


def scene(n: int = 60, seed: int = 4, sh_degree: int = 2, width: int = 40, height: int = 30, focal: float = 40.0):
    """Random Gaussians in front of an identity camera (float32, CPU), with a background colour."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.5, 0.4, 0.3]) + torch.tensor([0, 0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = 0.05 + 0.15 * torch.rand(n, 3, generator=g)
    opac = 0.2 + 0.7 * torch.rand(n, generator=g)
    colors = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    viewmat = torch.eye(4)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    return (means, quats, scales, opac, colors), viewmat, K, width, height, torch.tensor([0.2, 0.3, 0.4])


def render_with_grads(backend: str, device: str, **scene_kwargs):
    """Image, alpha and the gradients of a weighted loss w.r.t. every parameter, on the CPU."""
    params, viewmat, K, w, h, bg = scene(**scene_kwargs)
    params = [t.to(device).clone().requires_grad_(True) for t in params]
    image, alpha, _meta = render(*params, viewmat.to(device), K.to(device), w, h, impl=backend, background=bg.to(device))
    weights = torch.linspace(0.5, 1.5, image.numel(), device=device).reshape(image.shape)
    ((image * weights).sum() + alpha.sum()).backward()
    return image.detach().cpu(), alpha.detach().cpu(), [p.grad.cpu() for p in params]


def compare(a: tuple[str, str], b: tuple[str, str], **scene_kwargs) -> dict:
    """Max pixel differences and relative gradient differences of (backend, device) b against a."""
    (ia, aa, ga), (ib, ab, gb) = render_with_grads(*a, **scene_kwargs), render_with_grads(*b, **scene_kwargs)
    out = {"against": f"{a[0]} on {a[1]}", "backend": f"{b[0]} on {b[1]}",
           "image_max_abs_diff": float((ia - ib).abs().max()), "alpha_max_abs_diff": float((aa - ab).abs().max()),
           "image_mean": float(ia.mean())}
    for name, x, y in zip(PARAMETERS, ga, gb):
        out[f"grad_{name}_rel_diff"] = float((x - y).norm() / x.norm().clamp_min(1e-12))
    return out


def within_tolerance(figures: dict) -> bool:
    return (figures["image_max_abs_diff"] < 5e-3 and figures["alpha_max_abs_diff"] < 5e-3
            and all(figures[f"grad_{name}_rel_diff"] < 2e-2 for name in PARAMETERS))
