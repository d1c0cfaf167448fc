"""The reference rasterizer's output, computed only where a Gaussian can reach: pure torch,
differentiable, for CPUs (where gsplat does not run).

The reference (reference.py, the specification) evaluates every (Gaussian, pixel) pair; at the
QUEEN cpu scale fewer than 5 % of them have alpha >= 1/255, the threshold below which a pair is
dropped. Here each visible Gaussian lists only the pixels of its bounding box of that threshold:

    alpha = opacity * exp(-q / 2) >= 1/255   <=>   q = d^T Sigma^-1 d <= m^2 = 2 ln(255 opacity),

and q <= m^2 implies |dx| <= m sqrt(Sigma_xx) and |dy| <= m sqrt(Sigma_yy). So the pairs left out
are exactly pairs the reference zeroes, and the result is the reference's up to float rounding
(tests/kernels/test_splat.py holds them to 1e-5). The pairs are sorted by pixel, keeping depth
order within a pixel, and composited front to back with a segmented product: the transmittance
before pair i of pixel p is exp(sum of log(1 - alpha) over the pairs of p in front of i). The
running sums are float64: a float32 prefix sum over 10^5 pairs would lose the per-pixel digits.
"""

from __future__ import annotations

import torch

from .reference import screen_space

MARGIN = 1e-3  # pixels added to each box, so rounding never drops a pixel the reference keeps


def pairs(means2d, cov2d, opacities, keep, width: int, height: int):
    """(Gaussian index into ``keep``, flat pixel index) for every pixel of each kept Gaussian's box,
    Gaussians in ``keep`` order (front to back)."""
    op = opacities[keep].detach()
    m = torch.sqrt(2 * torch.log(torch.clamp_min(255.0 * op, 1.0)))  # opacity below 1/255: an empty box
    centre = means2d[keep].detach()
    half = m[:, None] * torch.sqrt(torch.stack([cov2d[keep, 0, 0], cov2d[keep, 1, 1]], -1).detach()) + MARGIN
    # pixel j covers centre j + 0.5: the first and last inside [centre - half, centre + half]
    lo = torch.ceil(centre - half - 0.5).clamp_min(0).long()
    hi = torch.minimum(torch.floor(centre + half - 0.5).long(), torch.tensor([width - 1, height - 1], device=centre.device))
    size = (hi - lo + 1).clamp_min(0)
    counts = size[:, 0] * size[:, 1]
    g = torch.repeat_interleave(torch.arange(len(keep), device=centre.device), counts)
    within = torch.arange(len(g), device=centre.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    x = lo[g, 0] + within % size[g, 0]
    y = lo[g, 1] + torch.div(within, size[g, 0], rounding_mode="floor")
    return g, y * width + x


def rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree=None, background=None,
              pixel_mask=None, near: float = 0.01, eps2d: float = 0.3):
    """Same arguments and results as ``reference.rasterize``."""
    depth, means2d, cov2d, conic, radius, in_front, visible, rgb, background = screen_space(
        means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree, background, near, eps2d)
    dtype, device = means.dtype, means.device
    order = torch.argsort(torch.where(in_front, depth.detach(), torch.inf))
    keep = order[visible[order]]
    g, pixel = pairs(means2d, cov2d, opacities, keep, width, height)
    if pixel_mask is not None:
        inside = pixel_mask.reshape(-1).to(device)[pixel]
        g, pixel = g[inside], pixel[inside]
    # pixel-major, depth order within a pixel (a stable sort keeps the front-to-back order of g)
    by_pixel = torch.sort(pixel, stable=True).indices
    g, pixel = g[by_pixel], pixel[by_pixel]

    index = keep[g]
    d = torch.stack([pixel % width, torch.div(pixel, width, rounding_mode="floor")], -1).to(dtype) + 0.5 - means2d[index]
    a, b, c = conic[index].unbind(-1)
    sigma = 0.5 * (a * d[:, 0] ** 2 + c * d[:, 1] ** 2) + b * d[:, 0] * d[:, 1]
    alpha = torch.clamp_max(opacities[index] * torch.exp(-sigma), 0.999)
    alpha = torch.where((alpha >= 1.0 / 255.0) & (sigma >= 0), alpha, torch.zeros_like(alpha))

    log_keep = torch.log1p(-alpha).double()  # log(1 - alpha) <= 0, finite since alpha <= 0.999
    running = torch.cumsum(log_keep, 0)
    n_pixels = width * height
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]
    base = (running - log_keep)[first]  # the running sum before each pixel's first pair
    segment = torch.cumsum(first.long(), 0) - 1
    transmittance = torch.exp(running - log_keep - base[segment]).to(dtype)  # T before each pair
    weights = alpha * transmittance
    colour = torch.zeros(n_pixels, 3, dtype=dtype, device=device).index_add(0, pixel, weights[:, None] * rgb[index])
    log_total = torch.zeros(n_pixels, dtype=torch.float64, device=device).index_add(0, pixel, log_keep)
    t_final = torch.exp(log_total).to(dtype)

    image = colour + t_final[:, None] * background
    acc = 1 - t_final
    if pixel_mask is not None:
        outside = ~pixel_mask.reshape(-1).to(device)
        image = torch.where(outside[:, None], background.expand(n_pixels, 3), image)
        acc = torch.where(outside, torch.zeros_like(acc), acc)
    meta = {"means2d": means2d, "depths": depth, "visible": visible, "radii": radius * visible, "pairs": len(g)}
    return image.reshape(height, width, 3), acc.reshape(height, width), meta

