"""The size x k sweep collector: it reads what the runs measured, paired by seed and setting."""

import json

import numpy as np

EXPERIMENT = __package__.split(".")[1]


def test_the_sweep_collects_each_runs_paired_psnr_by_size_and_k(tmp_path, capsys):
    from shared.cli import main as streamlab

    from ..sweep import main as sweep

    for features, k, steps in ((8, 2, 3), (4, 3, 5), (4, 3, 3)):  # a budget point: (4, 3) at two step counts
        assert streamlab(["reproduce", EXPERIMENT, "--preset", "smoke", "eval.rows=[single_long,stdo]", f"model.num_residual_units={features}",
                          f"chunks={k}", f"train.steps={steps}", "seeds=[0,1]", "--outputs", str(tmp_path / "runs")]) == 0
    assert streamlab(["reproduce", EXPERIMENT, "--preset", "smoke", "eval.rows=[single,stdo]", "--outputs", str(tmp_path / "other")]) == 0
    out = tmp_path / "sweep.json"
    assert sweep([str(tmp_path / "runs" / EXPERIMENT), "--out", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    assert [(p["features"], p["k"], p["steps_per_model"]) for p in points] == [(4, 3, 3), (4, 3, 5), (8, 2, 3)]  # by size, k, then budget
    assert points[0]["params_one_model"] == points[1]["params_one_model"] < points[2]["params_one_model"]
    assert points[0]["psnr"] != points[1]["psnr"]  # the budget changes what was measured
    runs = {p.name: p for p in (tmp_path / "runs" / EXPERIMENT).iterdir()}
    for p in points:
        arrays = np.load(runs[p["run"]] / "arrays.npz")
        for setting, by_seed in p["psnr"].items():
            assert sorted(by_seed) == ["0", "1"]
            for seed, rows in by_seed.items():
                assert rows == {r: float(arrays[f"{setting}/seed{seed}/{r}/psnr"]) for r in ("single_long", "stdo")}
    assert "stdo - single_long" in capsys.readouterr().out
    assert sweep([str(tmp_path / "other" / EXPERIMENT), "--out", str(tmp_path / "x.json")]) == 2  # a run without single_long
    assert "single_long" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
