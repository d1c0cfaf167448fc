"""Differentiable 3D Gaussian splatting in plain torch: the specification of the fast path.

One camera per call. Every Gaussian is evaluated at every (requested) pixel, so memory is
N x pixels: fine for the CPU scenes of the tests and the ``cpu`` presets (hundreds of Gaussians,
tens of pixels square), hopeless at N3DV scale, which is what gsplat (``gsplat_backend.py``) is for.

Conventions follow gsplat 1.5 so that the two agree (tests/kernels/test_splat.py):
- camera: OpenCV, world-to-camera ``viewmat`` [4, 4] (x right, y down, z forward) and pinhole
  intrinsics ``K`` [3, 3]; pixel (i, j) has its centre at (j + 0.5, i + 0.5);
- quaternions wxyz (normalised here), ``scales`` already activated (positive), ``opacities`` in [0, 1];
- the projected covariance gets ``eps2d`` = 0.3 added to its diagonal (gsplat's anti-aliasing blur);
- per-Gaussian alpha = min(0.999, opacity * exp(-d^T conic d / 2)), dropped below 1/255;
- Gaussians closer than ``near`` are culled; the rest are composited front to back by depth:
  C = sum_i T_i alpha_i c_i + T_N * background with T_i = prod_{j<i} (1 - alpha_j).
  (gsplat also stops a pixel once T < 1e-4; the difference is below 1e-4 per pixel.)
- colours are either RGB [N, 3] or spherical-harmonic coefficients [N, K, 3], K = (degree+1)^2,
  evaluated in the direction from the camera centre to the Gaussian, plus 0.5, clamped at 0.
"""

from __future__ import annotations

import math

import torch

# Real spherical harmonics, the normalisation used by 3DGS and gsplat (degrees 0..3).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """[..., (degree+1)^2] basis values for unit directions ``dirs`` [..., 3]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh degree must be 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


def sh_to_rgb(coeffs: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """RGB [N, 3] from SH ``coeffs`` [N, K, 3] (only the first (degree+1)^2 are used)."""
    k = (degree + 1) ** 2
    if coeffs.shape[-2] < k:
        raise ValueError(f"sh degree {degree} needs {k} coefficients per colour, got {coeffs.shape[-2]}")
    basis = sh_basis(torch.nn.functional.normalize(dirs, dim=-1), degree)
    return torch.clamp_min((basis[..., None] * coeffs[..., :k, :]).sum(-2) + 0.5, 0.0)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*quats.shape[:-1], 3, 3)


def project(means, quats, scales, viewmat, K, eps2d: float = 0.3):
    """Camera-space depth, pixel means [N, 2] and 2D covariances [N, 2, 2] (EWA, first-order)."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    cam = means @ R.T + t
    x, y, z = cam.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    rot = quat_to_rotmat(quats)
    m = rot * scales[:, None, :]
    cov_world = m @ m.transpose(-1, -2)
    cov_cam = R @ cov_world @ R.T
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * x / z**2, zero, fy / z, -fy * y / z**2], -1).reshape(-1, 2, 3)
    cov2d = J @ cov_cam @ J.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    return z, means2d, cov2d


def screen_space(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree, background, near, eps2d):
    """What every rasterizer of this package needs before compositing: depth, pixel means, 2D
    covariances and their inverses (conics), 3-sigma radii, the in-front and visible masks, RGB
    colours (SH evaluated towards the camera) and the background."""
    n = means.shape[0]
    for name, tensor, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)), ("opacities", opacities, (n,))):
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for {n} Gaussians, got {tuple(tensor.shape)}")
    dtype, device = means.dtype, means.device
    background = torch.zeros(3, dtype=dtype, device=device) if background is None else background.to(dtype)

    depth, means2d, cov2d = project(means, quats, scales, viewmat, K, eps2d)
    if means2d.requires_grad:
        means2d.retain_grad()
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] ** 2
    conic = torch.stack([cov2d[:, 1, 1], -cov2d[:, 0, 1], cov2d[:, 0, 0]], -1) / det[:, None]
    radius = 3.0 * torch.sqrt(torch.maximum(cov2d[:, 0, 0], cov2d[:, 1, 1])).detach()
    in_front = depth.detach() > near
    visible = (
        in_front
        & (means2d[:, 0].detach() + radius > 0) & (means2d[:, 0].detach() - radius < width)
        & (means2d[:, 1].detach() + radius > 0) & (means2d[:, 1].detach() - radius < height)
    )

    if colors.dim() == 3:
        degree = int(math.isqrt(colors.shape[1]) - 1) if sh_degree is None else sh_degree
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
        rgb = sh_to_rgb(colors, means - campos, degree)
    else:
        rgb = colors

    return depth, means2d, cov2d, conic, radius, in_front, visible, rgb, background


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    background: torch.Tensor | None = None,
    pixel_mask: torch.Tensor | None = None,
    near: float = 0.01,
    eps2d: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render one camera. Returns (image [H, W, 3], alpha [H, W], meta).

    ``pixel_mask`` [H, W] (bool) renders only those pixels; the others are ``background`` with
    alpha 0 and no gradient (QUEEN's masked phase). ``meta["means2d"]`` [N, 2] is the projected
    centre in pixels with ``retain_grad()`` called, so after ``backward()`` its ``.grad`` holds the
    viewspace gradient (pixel units); ``meta["visible"]`` marks Gaussians in front of the camera
    whose 3-sigma footprint touches the image.
    """
    depth, means2d, cov2d, conic, radius, in_front, visible, rgb, background = screen_space(
        means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree, background, near, eps2d)
    dtype, device = means.dtype, means.device
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(dtype) + 0.5
    flat_mask = None if pixel_mask is None else pixel_mask.reshape(-1).to(device)
    if flat_mask is not None:
        pix = pix[flat_mask]

    order = torch.argsort(torch.where(in_front, depth.detach(), torch.inf))
    keep = order[visible[order]]
    d = pix[None, :, :] - means2d[keep, None, :]  # [N, P, 2]
    a, b, c = conic[keep].unbind(-1)
    sigma = 0.5 * (a[:, None] * d[..., 0] ** 2 + c[:, None] * d[..., 1] ** 2) + b[:, None] * d[..., 0] * d[..., 1]
    alpha = torch.clamp_max(opacities[keep, None] * torch.exp(-sigma), 0.999)
    alpha = torch.where((alpha >= 1.0 / 255.0) & (sigma >= 0), alpha, torch.zeros_like(alpha))
    transmittance = torch.cumprod(torch.cat([torch.ones_like(pix[None, :, 0]), 1 - alpha], 0), 0)  # [N + 1, P], also for N = 0
    weights = alpha * transmittance[:-1]  # [N, P]
    rendered = weights.T @ rgb[keep] + transmittance[-1][:, None] * background
    acc = 1 - transmittance[-1]

    if flat_mask is None:
        image, alpha_map = rendered.reshape(height, width, 3), acc.reshape(height, width)
    else:
        image = background.expand(height * width, 3).clone()
        image[flat_mask] = rendered
        alpha_map = torch.zeros(height * width, dtype=dtype, device=device)
        alpha_map[flat_mask] = acc
        image, alpha_map = image.reshape(height, width, 3), alpha_map.reshape(height, width)
    return image, alpha_map, {"means2d": means2d, "depths": depth, "visible": visible, "radii": radius * visible}
