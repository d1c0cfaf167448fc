"""The template's own claims: rows in the right order, the MLP near the noise floor, exact resume."""

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared import config, registry
from shared.results import read_csv

NAME = Path(__file__).resolve().parents[1].name  # this experiment's folder: a fork tests itself
EXPERIMENT = registry.get(NAME)
make_data = importlib.import_module(f"experiments.{NAME}.data").make_data
target_function = importlib.import_module(f"experiments.{NAME}.data").target_function
batch_indices = importlib.import_module(f"experiments.{NAME}.train").batch_indices


def test_data_noise_matches_the_declared_floor():
    data = make_data(dim=4, n_train=20000, n_test=10, noise_std=0.1, seed=0)
    residual = data.y_train - target_function(data.x_train)
    assert residual.var().item() == pytest.approx(0.01, rel=0.05)


def test_batches_are_a_pure_function_of_seed_and_step():
    assert torch.equal(batch_indices(1000, 32, seed=3, step=7), batch_indices(1000, 32, seed=3, step=7))
    assert not torch.equal(batch_indices(1000, 32, seed=3, step=7), batch_indices(1000, 32, seed=3, step=8))


def test_smoke_reproduction_orders_rows_and_nears_the_floor(smoke_run):
    floor = {r["row"]: r["value"] for r in smoke_run.results if r["metric"] == "mse_over_floor"}
    assert floor["mlp"] < floor["linear"] < floor["constant"]
    assert floor["constant"] > 10  # the function has far more variance than the noise
    assert 0.8 < floor["mlp"] < 2.5  # close to the floor, and not below it (no leakage)


def _run_cli(*args, env):
    return subprocess.Popen([sys.executable, "-m", "shared", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL a run after its first checkpoint; --resume must end where an uninterrupted run ends."""
    env = {**os.environ, "STREAMLAB_OUTPUTS": str(tmp_path), "STREAMLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    args = ["reproduce", NAME, "--preset", "smoke", "optim.steps=1500", "trainer.checkpoint_every=50", "trainer.threads=1"]

    victim = _run_cli(*args, env=env)
    deadline = time.monotonic() + 120
    checkpoints = tmp_path / NAME
    while not list(checkpoints.glob("*/checkpoints/linear.pt")):  # the second row has started
        assert victim.poll() is None, victim.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (killed,) = checkpoints.iterdir()
    assert '"status": "running"' in (killed / "run.json").read_text()

    resumed = _run_cli("reproduce", NAME, "--resume", str(killed), env=env)
    assert resumed.wait() == 0, resumed.stdout.read()
    fresh = _run_cli(*args, env=env)
    assert fresh.wait() == 0, fresh.stdout.read()

    (fresh_dir,) = [d for d in checkpoints.iterdir() if d != killed]
    got = {(r["row"], r["metric"]): r["value"] for r in read_csv(killed / "results.csv") if r["metric"] != "train_seconds"}
    want = {(r["row"], r["metric"]): r["value"] for r in read_csv(fresh_dir / "results.csv") if r["metric"] != "train_seconds"}
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    assert '"attempts": 2' in (killed / "run.json").read_text()


def test_every_row_config_selects_its_model():
    """Each row runs the model its own file picks (a row may be named apart from its model, as a
    fork's `mlp_deep` row with `override /model: mlp` would be), and carries its own name."""
    from omegaconf import OmegaConf

    for row in EXPERIMENT.spec.tables["fit"].rows:
        cfg = config.compose(EXPERIMENT, "smoke", row=("fit", row))
        picked = OmegaConf.load(EXPERIMENT.conf_dir / "experiment" / f"fit_{row}.yaml").defaults[0]["override /model"]
        assert cfg.model.kind == OmegaConf.load(EXPERIMENT.conf_dir / "model" / f"{picked}.yaml").kind and cfg.row.name == row


@pytest.mark.slow
def test_paper_preset_reaches_the_noise_floor(tmp_path):
    """Full scale (minutes on a CPU): the MLP gets within 10% of the Bayes-optimal error."""
    from shared.runner import reproduce

    run = reproduce(NAME, "paper", outputs=tmp_path)
    floor = {r["row"]: r["value"] for r in run.results if r["metric"] == "mse_over_floor"}
    assert 0.9 < floor["mlp"] < 1.1, floor
