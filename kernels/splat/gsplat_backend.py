"""The fast path: the same render through ``gsplat.rasterization`` (CUDA only).

gsplat is imported inside the call, never at package import: on a CPU machine gsplat has no
rasterizer (its CUDA code JIT-compiles on first use and needs nvcc), so nothing on the CPU path
may touch it. Conventions match ``reference.rasterize`` (see its docstring); tests/kernels/
test_splat.py checks images, alphas and gradients against it on a GPU.
"""

from __future__ import annotations

import torch


def rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree=None,
              background=None, pixel_mask=None, near=0.01, eps2d=0.3):
    if means.device.type != "cuda":
        raise RuntimeError("the gsplat backend renders CUDA tensors only; use impl='reference' on a CPU")
    import gsplat

    if colors.dim() == 3 and sh_degree is None:
        sh_degree = int(colors.shape[1] ** 0.5) - 1
    bg = None if background is None else background[None].to(means.dtype)
    images, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near, eps2d=eps2d, sh_degree=sh_degree if colors.dim() == 3 else None,
        packed=False, backgrounds=bg,
    )
    image, alpha = images[0], alphas[0, ..., 0]
    if pixel_mask is not None:
        # gsplat's high-level call has no pixel mask: render everything and keep the masked pixels
        # (the speed-up of skipping tiles would need its low-level tile-mask chain).
        keep = pixel_mask[..., None].to(image.dtype)
        base = torch.zeros(3, device=image.device, dtype=image.dtype) if background is None else background.to(image.dtype)
        image = image * keep + base * (1 - keep)
        alpha = alpha * keep[..., 0]
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"][0]
    radii = radii.max(-1).values if radii.dim() == 2 else radii
    return image, alpha, {"means2d": means2d, "means2d_batched": True, "depths": meta["depths"][0], "visible": radii > 0, "radii": radii}
