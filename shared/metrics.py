"""Image metrics shared by the vision experiments (QUEEN, STDO).

Images are float tensors in [0, 1], channels last ``[..., H, W, C]`` (what renderers return)
unless ``channels_last=False``. SSIM is the Gaussian-window SSIM of Wang et al. 2004 as used by
3DGS and most video SR papers: 11x11 window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, 'valid'
border handling off (zero-padded 'same' convolution, as 3DGS does), averaged over pixels and
channels. Both are differentiable, so SSIM also serves as a loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(image: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (inf for identical images)."""
    if image.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(image.shape)} vs {tuple(target.shape)}")
    mse = torch.mean((image.double() - target.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(max_value**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(image: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5, channels_last: bool = True) -> torch.Tensor:
    """Mean SSIM (a 0-dim tensor, differentiable in ``image``)."""
    if image.shape != target.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(image.shape)} vs {tuple(target.shape)}")
    if channels_last:
        image, target = image.movedim(-1, -3), target.movedim(-1, -3)
    shape = image.shape
    x = image.reshape(-1, *shape[-3:])
    y = target.reshape(-1, *shape[-3:]).to(x.dtype)
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.dtype, x.device)

    def blur(t):
        return F.conv2d(t, w, padding=window // 2, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean()
