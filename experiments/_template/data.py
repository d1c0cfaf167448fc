"""Generated regression data with a known answer.

y = f(x) + e,  x ~ U[-1, 1]^dim,  e ~ N(0, noise_std^2),
f(x) = sin(3 x0) cos(2 x1) + 0.5 * sum_{i>=2} x_i^2

The noise variance is the lowest test MSE any predictor can reach (the Bayes-optimal error), so
``test_mse / noise_std**2`` tells how good a fit is in absolute terms: about 1 for a good fit,
far above 1 for a broken one, and well below 1 only if test data leaked into training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def target_function(x: torch.Tensor) -> torch.Tensor:
    """f(x) for x of shape [N, dim], dim >= 2; returns [N]."""
    smooth = torch.sin(3 * x[:, 0]) * torch.cos(2 * x[:, 1])
    return smooth + 0.5 * (x[:, 2:] ** 2).sum(dim=1)


@dataclass
class RegressionData:
    x_train: torch.Tensor  # [N_train, dim]
    y_train: torch.Tensor  # [N_train]
    x_test: torch.Tensor  # [N_test, dim]
    y_test: torch.Tensor  # [N_test]
    noise_var: float


def make_data(dim: int, n_train: int, n_test: int, noise_std: float, seed: int) -> RegressionData:
    if dim < 2:
        raise ValueError(f"data.dim must be at least 2 (got {dim})")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, dim, generator=g) * 2 - 1
    y = target_function(x) + noise_std * torch.randn(n_train + n_test, generator=g)
    return RegressionData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], noise_var=noise_std**2)
