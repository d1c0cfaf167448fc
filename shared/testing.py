"""StreamLab's pytest plugin (loaded with ``-p shared.testing`` from pyproject.toml).

- Tests run on one thread (2 shared cores), with wandb disabled, progress bars off and every run
  directory in a temporary outputs root, so the suite never writes into ``outputs/``.
- ``@pytest.mark.gpu`` tests skip with a reason when CUDA is absent.
- Every test starts from the same seed (python, numpy, torch), so a tolerance that passes once passes
  in CI too; tests that want other draws use their own ``torch.Generator``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Before torch is imported anywhere in the test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ["STREAMLAB_PROGRESS"] = "0"

import pytest

_OWN_OUTPUTS: str | None = None


def pytest_configure(config):
    global _OWN_OUTPUTS
    import torch

    torch.set_num_threads(1)
    if "STREAMLAB_OUTPUTS" not in os.environ:
        _OWN_OUTPUTS = tempfile.mkdtemp(prefix="streamlab-test-outputs-")
        os.environ["STREAMLAB_OUTPUTS"] = _OWN_OUTPUTS


def pytest_unconfigure(config):
    if _OWN_OUTPUTS:
        shutil.rmtree(_OWN_OUTPUTS, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make test-gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fixed_seed():
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
