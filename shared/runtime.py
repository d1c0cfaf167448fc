"""Seeds, threads and device for a run, from the shared ``trainer`` config group."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={requested} but CUDA is not available; use trainer.device=cpu or auto")
    if requested.startswith("cuda:") and int(requested.split(":")[1]) >= torch.cuda.device_count():
        raise RuntimeError(f"trainer.device={requested} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return requested


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(trainer: Mapping) -> str:
    """Apply ``trainer.seed`` and ``trainer.threads``; return the resolved device."""
    import torch

    threads = trainer.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    elif os.environ.get("OMP_NUM_THREADS") is None and torch.get_num_threads() > (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)
    seed_everything(int(trainer.get("seed", 0)))
    return resolve_device(str(trainer.get("device", "auto")))
