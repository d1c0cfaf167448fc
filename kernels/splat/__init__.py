"""3D Gaussian splatting: ``render(...)`` with a readable torch reference and the gsplat fast path.

    image, alpha, meta = render(means, quats, scales, opacities, sh, viewmat, K, W, H, impl="auto")

``reference`` (reference.py) is the specification and runs anywhere, for small images;
``sparse`` (sparse.py) computes the same result over the (Gaussian, pixel) pairs that can have
alpha >= 1/255 only (pure torch; 38x faster at 4,000 Gaussians and 64x48 on a CPU, README);
``gsplat`` (gsplat_backend.py) needs CUDA; ``auto`` takes gsplat for CUDA tensors and ``sparse``
for CPU tensors. CUDA tensors without gsplat installed are refused: the dense reference holds an
[H, W, N] tensor per image, about a terabyte at the paper's scale, so a silent fallback would run
out of memory (or take hours) far from the cause. ``meta["means2d"].grad`` after ``backward()`` is the viewspace
gradient in pixels (gsplat keeps a leading camera axis: use ``viewspace_grad(meta)``).
"""

from __future__ import annotations

import importlib.util

import torch

from . import reference, sparse

IMPLS = ("auto", "reference", "sparse", "gsplat")


def choose_impl(device: torch.device | str, impl: str = "auto", gsplat_installed: bool | None = None) -> str:
    """The implementation ``render`` uses for tensors on ``device`` (inspectable);
    ``gsplat_installed`` defaults to whether gsplat can be imported here."""
    if impl not in IMPLS:
        raise ValueError(f"unknown splat impl {impl!r}; choose one of {IMPLS}")
    if impl != "auto":
        return impl
    if torch.device(device).type != "cuda":
        return "sparse"
    if gsplat_installed is None:
        gsplat_installed = importlib.util.find_spec("gsplat") is not None
    if not gsplat_installed:
        raise RuntimeError("splat impl='auto' on CUDA needs gsplat (pip install gsplat==1.5.3, as env/requirements.txt pins); "
                           "impl='reference' renders CUDA tensors densely, for small images only")
    return "gsplat"


def render(means, quats, scales, opacities, colors, viewmat, K, width, height, impl: str = "auto", **kwargs):
    chosen = choose_impl(means.device, impl)
    if chosen == "gsplat":
        from .gsplat_backend import rasterize
    else:
        rasterize = sparse.rasterize if chosen == "sparse" else reference.rasterize
    return rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, **kwargs)


def viewspace_grad(meta: dict) -> torch.Tensor:
    """[N, 2] gradient of the loss w.r.t. the projected centres (pixel units), zeros if none flowed."""
    means2d = meta["means2d"]
    grad = means2d.grad if means2d.grad is not None else torch.zeros_like(means2d)
    return grad[0] if meta.get("means2d_batched") else grad
