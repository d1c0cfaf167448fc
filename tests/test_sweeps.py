"""Hydra multirun on one table row: every sweep point becomes its own run directory."""

import json
import os
import subprocess
import sys

from omegaconf import OmegaConf

from shared.paths import REPO_ROOT
from shared.results import read_csv


def test_local_multirun_sweep_writes_one_run_per_point(tmp_path):
    env = {**os.environ, "STREAMLAB_OUTPUTS": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "experiments._template.train", "-m", "+experiment=fit_mlp", "preset=smoke", "model.width=8,16", "trainer.threads=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "_template").iterdir())
    assert len(runs) == 2
    widths = sorted(OmegaConf.load(r / "config.yaml").model.width for r in runs)
    assert widths == [8, 16]
    params = sorted(next(x["value"] for x in read_csv(r / "results.csv") if x["metric"] == "params") for r in runs)
    assert params[0] < params[1]
    assert not (REPO_ROOT / "multirun").exists() and not (tmp_path / "multirun").exists()
    # the sweep's runs carry it as tags (wandb groups them by these), one job number each
    tags = [json.loads((r / "run.json").read_text())["tags"] for r in runs]
    assert len({t[0] for t in tags}) == 1 and tags[0][0].startswith("sweep:") and sorted(t[1] for t in tags) == ["job:0", "job:1"]
