"""Data-parallel training helpers the experiments share (StreamDiT, the autoregressive-video host):
starting the process group under torchrun, a warmup + cosine learning-rate factor, and an end-of-run
check that every replica holds the same parameters.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist


def warmup_cosine(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def parameter_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() + p.detach().double().square().sum() for p in model.parameters()))


def collective_device(backend: str, local_rank: int) -> torch.device:
    """Where a tensor handed to a collective must live: NCCL moves CUDA tensors only (a CPU tensor
    is refused), gloo moves CPU tensors."""
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


def check_ranks_agree(model: torch.nn.Module) -> None:
    """DDP keeps replicas identical by construction; a wrong setup (a rank with other data shapes,
    unsynchronised buffers) breaks that silently, so compare a checksum across ranks at the end."""
    device = collective_device(dist.get_backend(), int(os.environ.get("LOCAL_RANK", "0")))
    mine = torch.tensor([parameter_checksum(model)], dtype=torch.float64, device=device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    if any(not torch.equal(e, every[0]) for e in every):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums per rank {[float(e) for e in every]}")
