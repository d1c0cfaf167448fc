"""GPU tier: skipped with a reason where there is no CUDA (see shared/testing.py)."""

import pytest
import torch

from shared.runner import reproduce

pytestmark = pytest.mark.gpu


def test_matmul_on_gpu_matches_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(257, 129, generator=g), torch.randn(129, 63, generator=g)
    want = a.double() @ b.double()
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, so 1e-5 is the right tolerance
    got = (a.cuda() @ b.cuda()).double().cpu()
    assert (got - want).norm() / want.norm() < 1e-5


def test_template_trains_on_gpu(tmp_path):
    run = reproduce("_template", "smoke", ["trainer.device=cuda"], outputs=tmp_path)
    floor = {r["row"]: r["value"] for r in run.results if r["metric"] == "mse_over_floor"}
    assert floor["mlp"] < floor["linear"] < floor["constant"] and floor["mlp"] < 2.5
    assert run.results[0]["device"].startswith("cuda:")
