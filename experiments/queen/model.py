"""QUEEN's parts: Gaussian attributes, integer-latent decoders with straight-through rounding,
and the hard-concrete gate on position residuals (paper section 3; handbook brief 2.2-2.3).

Attribute layout per Gaussian (N3DV uses SH degree 2):
    xyz [3]  f_dc [3] (SH DC)  f_rest [K-1, 3]  log_scale [3]  rot [4] (wxyz)  opacity_logit [1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from kernels.splat import render


def rest_width(sh_degree: int) -> int:
    return 3 * ((sh_degree + 1) ** 2 - 1)


@dataclass
class Gaussians:
    """One frame's Gaussians, every attribute a float32 [N, width] tensor (f_rest flattened)."""

    xyz: torch.Tensor
    f_dc: torch.Tensor
    f_rest: torch.Tensor
    log_scale: torch.Tensor
    rot: torch.Tensor
    opacity_logit: torch.Tensor

    def __len__(self) -> int:
        return self.xyz.shape[0]

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def detach(self) -> Gaussians:
        return Gaussians(**{k: v.detach().clone() for k, v in self.as_dict().items()})

    def index(self, keep) -> Gaussians:
        return Gaussians(**{k: v[keep] for k, v in self.as_dict().items()})

    def to(self, device) -> Gaussians:
        return Gaussians(**{k: v.to(device) for k, v in self.as_dict().items()})


def render_gaussians(g: Gaussians, camera, background: torch.Tensor, backend: str = "auto", pixel_mask=None):
    """(image [H, W, 3], alpha [H, W], meta) of ``g`` seen by ``camera`` (scene.Camera)."""
    sh = torch.cat([g.f_dc[:, None, :], g.f_rest.reshape(len(g), -1, 3)], 1)
    return render(
        g.xyz, g.rot, torch.exp(g.log_scale), torch.sigmoid(g.opacity_logit[:, 0]), sh,
        camera.viewmat, camera.K, camera.width, camera.height, impl=backend, background=background, pixel_mask=pixel_mask,
    )


def nearest_neighbours(queries: torch.Tensor, points: torch.Tensor, k: int = 1, skip_self: bool = False,
                       max_elements: int = 2**26) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) [Q, k] of the ``k`` nearest ``points`` to each query, computed in row
    chunks of at most ``max_elements`` distances (256 MB of float32), so memory stays flat where a full
    distance matrix would not fit (52k x 52k points: 10.8 GB). ``skip_self``: the queries are
    ``points`` themselves and a point is not its own neighbour."""
    rows = max(1, max_elements // max(1, len(points)))
    dists, indices = [], []
    for start in range(0, len(queries), rows):
        d = torch.cdist(queries[start:start + rows], points)
        if skip_self:
            own = torch.arange(start, start + len(d), device=d.device)
            d[torch.arange(len(d), device=d.device), own] = torch.inf
        found = d.topk(k, dim=1, largest=False)
        dists.append(found.values)
        indices.append(found.indices)
    return torch.cat(dists), torch.cat(indices)


def round_ste(z: torch.Tensor) -> torch.Tensor:
    """round(z) in the forward pass, identity in the backward pass (straight-through estimator)."""
    return z + (torch.round(z) - z).detach()


def dct_basis(rows: int, cols: int) -> torch.Tensor:
    """DCT-II-style cosine basis [rows, cols]; orthonormal when rows == cols."""
    j = torch.arange(rows, dtype=torch.float64)[:, None]
    k = torch.arange(cols, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / cols * (k + 0.5) * j) / math.sqrt(cols)
    basis[1:] *= math.sqrt(2.0)
    return basis.float()


class LatentDecoder(nn.Module):
    """a = round(z) @ W + b: integer latents [N, latent_dim] to attribute values [N, out_dim].

    ``basis="learnable"`` learns W; ``basis="dft"`` fixes W to a cosine basis times a learnable
    per-output scale (QUEEN's opacity decoder). The bias is trained, as in the paper, so for a
    residual decoder a zero latent decodes to ``a_prev + b``, not ``a_prev`` (tests pin this).
    """

    def __init__(self, latent_dim: int, out_dim: int, basis: str = "learnable", init_std: float = 1e-3, seed: int = 0):
        super().__init__()
        if basis not in ("learnable", "dft"):
            raise ValueError(f"decoder basis must be 'learnable' or 'dft', got {basis!r}")
        self.latent_dim, self.out_dim, self.basis_kind = latent_dim, out_dim, basis
        g = torch.Generator().manual_seed(seed)
        if basis == "learnable":
            self.weight = nn.Parameter(torch.randn(latent_dim, out_dim, generator=g) * init_std)
        else:
            self.register_buffer("basis", dct_basis(latent_dim, out_dim))
            self.scale = nn.Parameter(torch.full((out_dim,), float(init_std)))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def matrix(self) -> torch.Tensor:
        return self.weight if self.basis_kind == "learnable" else self.basis * self.scale

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return round_ste(latents) @ self.matrix() + self.bias

    @torch.no_grad()
    def decode_symbols(self, symbols: torch.Tensor) -> torch.Tensor:
        """The decoder side: integer symbols to values, the exact computation the bitstream replays."""
        return symbols.to(torch.float32) @ self.matrix() + self.bias

    @torch.no_grad()
    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        """Least-squares latents whose (unrounded) decoding is closest to ``values`` [N, out_dim]."""
        w = self.matrix().double()
        target = (values.double() - self.bias.double()).T
        return torch.linalg.lstsq(w.T, target).solution.T.float()

    def payload(self) -> dict[str, torch.Tensor]:
        """The float32 parameters a decoder needs (W or the dft scale, and b)."""
        if self.basis_kind == "learnable":
            return {"weight": self.weight.detach().clone(), "bias": self.bias.detach().clone()}
        return {"scale": self.scale.detach().clone(), "bias": self.bias.detach().clone()}


class PositionGate(nn.Module):
    """Deterministic hard-concrete (L0) gate per Gaussian on the position residual.

    g = clamp(sigmoid(log_alpha / T) * (eta - gamma) + gamma, 0, 1); the regulariser is the mean of
    P(g != 0) = sigmoid(log_alpha - T log(-gamma / eta)) (Louizos et al. 2018; QUEEN's defaults).
    """

    def __init__(self, n: int, temperature: float = 0.3, gamma: float = -0.5, eta: float = 1.01):
        super().__init__()
        self.temperature, self.gamma, self.eta = temperature, gamma, eta
        self.log_alpha = nn.Parameter(torch.zeros(n))

    @property
    def _shift(self) -> float:
        return self.temperature * math.log(-self.gamma / self.eta)

    def forward(self) -> torch.Tensor:
        s = torch.sigmoid(self.log_alpha / self.temperature) * (self.eta - self.gamma) + self.gamma
        return s.clamp(0.0, 1.0)

    def prob_open(self) -> torch.Tensor:
        return torch.sigmoid(self.log_alpha - self._shift)

    @torch.no_grad()
    def init_from_difference(self, d: torch.Tensor) -> None:
        """p = d / (d + median(d)) so that P(g != 0) = p; the gate starts open iff d > median(d).

        A Gaussian with d = 0 starts closed (p = 0); if more than half have d = 0 the median is 0
        and every Gaussian with d > 0 starts open.
        """
        p = d / (d + d.median() + 1e-30)
        logit = torch.log(p) - torch.log1p(-p)
        self.log_alpha.copy_((logit + self._shift).clamp(math.log(1e-3), math.log(1e3)))

    def clamp_(self) -> None:
        with torch.no_grad():
            self.log_alpha.clamp_(math.log(1e-3), math.log(1e3))
