"""The models of the table: a constant, a linear map and an MLP, all trained by the same loop."""

from __future__ import annotations

import torch
from torch import nn


class Constant(nn.Module):
    """Predicts one learned number for every input: the baseline any fit must beat."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0])


class Linear(nn.Module):
    def __init__(self, in_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).squeeze(-1)


class MLP(nn.Module):
    def __init__(self, in_dim: int, width: int, depth: int):
        super().__init__()
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_dim] -> [N]
        return self.net(x).squeeze(-1)


def build_model(cfg, in_dim: int) -> nn.Module:
    if cfg.kind == "constant":
        return Constant(in_dim)
    if cfg.kind == "linear":
        return Linear(in_dim)
    if cfg.kind == "mlp":
        return MLP(in_dim, cfg.width, cfg.depth)
    raise ValueError(f"unknown model.kind {cfg.kind!r}; valid: constant, linear, mlp")
