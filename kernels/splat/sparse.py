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

Memory grows with the pairs (autograd keeps a few tensors per pair). Above ``max_pairs`` the image
is composited in bands of rows, each under ``torch.utils.checkpoint``: the backward recomputes a
band's pairs instead of keeping them, so peak memory follows the largest band, not the image (a
1352x1014 view of 87k Gaussians has about 10^8 pairs). Pixels never share pairs across rows, so the
bands' result is the single pass's exactly (tested).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .reference import screen_space

MARGIN = 1e-3  # pixels added to each box, so rounding never drops a pixel the reference keeps
MAX_PAIRS = 1 << 24  # pairs composited at once (about 2 GB of autograd state); beyond it, bands of rows


def boxes(means2d, cov2d, opacities, keep, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([K, 2] first, [K, 2] last) pixel (x, y) of each kept Gaussian's box of alpha >= 1/255
    (an empty box has last < first)."""
    op = opacities[keep].detach()
    m = torch.sqrt(2 * torch.log(torch.clamp_min(255.0 * op, 1.0)))  # opacity below 1/255: an empty box
    centre = means2d[keep].detach()
    half = m[:, None] * torch.sqrt(torch.stack([cov2d[keep, 0, 0], cov2d[keep, 1, 1]], -1).detach()) + MARGIN
    # pixel j covers centre j + 0.5: the first and last inside [centre - half, centre + half]
    lo = torch.ceil(centre - half - 0.5).clamp_min(0).long()
    hi = torch.minimum(torch.floor(centre + half - 0.5).long(), torch.tensor([width - 1, height - 1], device=centre.device))
    return lo, hi


def pairs(lo, hi, width: int, rows: tuple[int, int]):
    """(Gaussian index into ``keep``, flat pixel index within the band) for every pixel of each box
    in rows [y0, y1), Gaussians in ``keep`` order (front to back)."""
    y0, y1 = rows
    lo, hi = lo.clone(), hi.clone()
    lo[:, 1], hi[:, 1] = lo[:, 1].clamp_min(y0), hi[:, 1].clamp_max(y1 - 1)
    size = (hi - lo + 1).clamp_min(0)
    counts = size[:, 0] * size[:, 1]
    g = torch.repeat_interleave(torch.arange(len(lo), device=lo.device), counts)
    within = torch.arange(len(g), device=lo.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    x = lo[g, 0] + within % size[g, 0]
    y = lo[g, 1] + torch.div(within, size[g, 0], rounding_mode="floor")
    return g, (y - y0) * width + x


def bands(lo, hi, height: int, max_pairs: int | None) -> list[tuple[int, int]]:
    """Row ranges [y0, y1) with at most ``max_pairs`` pairs each where one row allows (one band if
    the whole image fits)."""
    width_of = (hi[:, 0] - lo[:, 0] + 1).clamp_min(0)
    live = (width_of > 0) & (hi[:, 1] >= lo[:, 1])
    per_row = torch.zeros(height + 1, dtype=torch.long, device=lo.device)  # pairs per row, from a difference array
    per_row.index_add_(0, lo[live, 1], width_of[live]).index_add_(0, hi[live, 1] + 1, -width_of[live])
    per_row = torch.cumsum(per_row, 0)[:height].tolist()
    if max_pairs is None or sum(per_row) <= max_pairs:
        return [(0, height)]
    out, start, total = [], 0, 0
    for y, n in enumerate(per_row):
        if y > start and total + n > max_pairs:
            out.append((start, y))
            start, total = y, 0
        total += n
    return out + [(start, height)]


def composite(means2d, conic, opacities, rgb, background, keep, lo, hi, width: int, rows: tuple[int, int], pixel_mask):
    """(colour [n, 3], alpha [n], pairs) of the pixels of rows [y0, y1), ``pixel_mask`` that band's."""
    dtype, device = means2d.dtype, means2d.device
    g, pixel = pairs(lo, hi, width, rows)
    if pixel_mask is not None:
        inside = pixel_mask.reshape(-1).to(device)[pixel]
        g, pixel = g[inside], pixel[inside]
    # pixel-major, depth order within a pixel (a stable sort keeps the front-to-back order of g)
    by_pixel = torch.sort(pixel, stable=True).indices
    g, pixel = g[by_pixel], pixel[by_pixel]

    index = keep[g]
    y = torch.div(pixel, width, rounding_mode="floor") + rows[0]
    d = torch.stack([pixel % width, y], -1).to(dtype) + 0.5 - means2d[index]
    a, b, c = conic[index].unbind(-1)
    sigma = 0.5 * (a * d[:, 0] ** 2 + c * d[:, 1] ** 2) + b * d[:, 0] * d[:, 1]
    alpha = torch.clamp_max(opacities[index] * torch.exp(-sigma), 0.999)
    alpha = torch.where((alpha >= 1.0 / 255.0) & (sigma >= 0), alpha, torch.zeros_like(alpha))

    log_keep = torch.log1p(-alpha).double()  # log(1 - alpha) <= 0, finite since alpha <= 0.999
    running = torch.cumsum(log_keep, 0)
    n_pixels = width * (rows[1] - rows[0])
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]
    base = (running - log_keep)[first]  # the running sum before each pixel's first pair
    segment = torch.cumsum(first.long(), 0) - 1
    transmittance = torch.exp(running - log_keep - base[segment]).to(dtype)  # T before each pair
    weights = alpha * transmittance
    colour = torch.zeros(n_pixels, 3, dtype=dtype, device=device).index_add(0, pixel, weights[:, None] * rgb[index])
    log_total = torch.zeros(n_pixels, dtype=torch.float64, device=device).index_add(0, pixel, log_keep)
    t_final = torch.exp(log_total).to(dtype)
    return colour + t_final[:, None] * background, 1 - t_final, torch.tensor(len(g))


def rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree=None, background=None,
              pixel_mask=None, near: float = 0.01, eps2d: float = 0.3, max_pairs: int | None = MAX_PAIRS):
    """Same arguments and results as ``reference.rasterize``; ``max_pairs``: pairs composited at once
    (None: the whole image in one pass)."""
    depth, means2d, cov2d, conic, radius, in_front, visible, rgb, background = screen_space(
        means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree, background, near, eps2d)
    order = torch.argsort(torch.where(in_front, depth.detach(), torch.inf))
    keep = order[visible[order]]
    lo, hi = boxes(means2d, cov2d, opacities, keep, width, height)
    split = bands(lo, hi, height, max_pairs)
    images, alphas, n_pairs = [], [], 0
    for y0, y1 in split:
        mask = None if pixel_mask is None else pixel_mask[y0:y1]
        args = (means2d, conic, opacities, rgb, background, keep, lo, hi, width, (y0, y1), mask)
        if len(split) == 1:
            image, acc, n = composite(*args)
        else:  # keep only the band's inputs; its pairs are recomputed in the backward pass
            image, acc, n = checkpoint(composite, *args, use_reentrant=False)
        images.append(image)
        alphas.append(acc)
        n_pairs += int(n)
    image, acc = torch.cat(images), torch.cat(alphas)
    n_pixels = width * height
    if pixel_mask is not None:
        outside = ~pixel_mask.reshape(-1).to(means.device)
        image = torch.where(outside[:, None], background.expand(n_pixels, 3), image)
        acc = torch.where(outside, torch.zeros_like(acc), acc)
    meta = {"means2d": means2d, "depths": depth, "visible": visible, "radii": radius * visible, "pairs": n_pairs}
    return image.reshape(height, width, 3), acc.reshape(height, width), meta
