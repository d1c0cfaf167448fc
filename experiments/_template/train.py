"""The training loop: one config in, metrics out. Short enough to read in one sitting.

Run one config as its own run (and sweeps, locally or on SLURM) through Hydra:
    python -m experiments._template.train +experiment=fit_mlp preset=smoke
    python -m experiments._template.train -m +experiment=fit_mlp model.width=16,64 trainer.seed=0,1
    python -m experiments._template.train -m +launcher=slurm +experiment=fit_mlp trainer.seed=0,1,2
The full table is ``streamlab reproduce _template`` (reproduce.py), which calls ``train`` per row.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from shared import runtime
from shared.io import load_checkpoint
from shared.progress import progress
from shared.runs import Run, sweep_tags

from . import SPEC
from .data import make_data
from .model import build_model

EXPERIMENT = Path(__file__).resolve().parent.name  # the folder name: a copy gets its own


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The minibatch of ``step``, a pure function of (seed, step): a resumed run sees the same batches."""
    if batch_size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (batch_size,), generator=g)


def cosine_lr(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, steps - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress_))


@torch.no_grad()
def mse(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.mean((model(x) - y) ** 2).item()


def train(cfg: DictConfig, run: Run | None = None, scope: str = "fit") -> dict[str, float]:
    """Fit ``cfg.model`` to the generated data; log to ``run`` and checkpoint there atomically.

    If ``run`` holds a checkpoint for ``scope`` (a killed run being resumed), training continues
    from it and ends in exactly the state an uninterrupted run would reach. The last checkpoint
    is the trained model (``<run>/checkpoints/<scope>.pt``).
    """
    device = runtime.resolve_device(cfg.trainer.device)
    data = make_data(cfg.data.dim, cfg.data.n_train, cfg.data.n_test, cfg.data.noise_std, cfg.data.seed + cfg.trainer.seed)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)

    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg.model, cfg.data.dim).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    steps, start, seconds_before = cfg.optim.steps, 0, 0.0
    checkpoint = run.checkpoint_path(scope) if run is not None else None
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, seconds_before = state["step"], state["seconds"]

    t0 = time.perf_counter()
    bar = progress(total=steps, initial=start, desc=f"{EXPERIMENT}/{scope}")
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, cfg.optim.lr, cfg.optim.warmup)
        idx = batch_indices(len(x_train), cfg.optim.batch_size, cfg.trainer.seed, step)
        loss = torch.mean((model(x_train[idx]) - y_train[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        done = step + 1
        bar.update()
        if run is not None and (done % cfg.trainer.log_every == 0 or done == steps):
            test = mse(model, x_test, y_test)
            run.logger.log({"train_loss": loss.item(), "test_mse": test, "lr": opt.param_groups[0]["lr"]}, step=done, scope=scope)
            bar.set_postfix(test_mse=f"{test:.4f}", refresh=False)  # redraw at tqdm's own pace
        if checkpoint is not None and (done % cfg.trainer.checkpoint_every == 0 or done == steps):
            seconds = seconds_before + time.perf_counter() - t0
            run.save_checkpoint(scope, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": done, "seconds": seconds})
    bar.close()

    test_mse = mse(model, x_test, y_test)
    return {
        "test_mse": test_mse,
        "mse_over_floor": test_mse / data.noise_var,
        "test_r2": 1 - test_mse / torch.var(y_test).item(),
        "train_mse": mse(model, x_train, y_train),
        "train_seconds": seconds_before + time.perf_counter() - t0,
        "params": sum(p.numel() for p in model.parameters()),
    }


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One config, one run directory; returns the headline metric (for Hydra sweepers)."""
    table = SPEC.tables[cfg.row.table]
    with Run.create(EXPERIMENT, cfg.preset_name, cfg, overrides=list(HydraConfig.get().overrides.task), tags=sweep_tags()) as run:
        runtime.setup(cfg.trainer)
        metrics = train(cfg, run=run, scope=cfg.row.name)
        run.add_results(cfg.row.table, cfg.row.name, metrics)
    print(run.summary_line({cfg.row.table: table.headline}), flush=True)
    return metrics[table.headline]


if __name__ == "__main__":
    main()
