"""Run directories, atomic writes, provenance, the metric log and the results table."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from shared import logger as logger_module
from shared import provenance
from shared.errors import RunError
from shared.io import atomic_path, atomic_write_text
from shared.logger import read_metrics, resolve_wandb_mode
from shared.results import COLUMNS, read_csv
from shared.runs import RECORD_FILES, Run, list_runs, runs_table

from .helpers import digest

CFG = OmegaConf.create({"trainer": {"device": "cpu"}, "logger": {"wandb": {"mode": "disabled"}}, "x": 1})




def test_runs_in_the_same_second_never_share_a_directory(tmp_path):
    first = Run.create("exp", "smoke", CFG, outputs=tmp_path)
    with first:
        first.add_results("t", "a", {"m": 1.5})
    before = digest(first.dir)
    second = Run.create("exp", "smoke", CFG, outputs=tmp_path)
    with second:
        second.add_results("t", "a", {"m": 2.5})
    assert first.dir != second.dir and first.dir.parent == second.dir.parent
    assert digest(first.dir) == before
    for run in (first, second):
        for name in RECORD_FILES:
            assert (run.dir / name).is_file(), name
    assert list_runs("exp", tmp_path) == [first.dir, second.dir]


def test_run_records_status_results_and_summary(tmp_path):
    with Run.create("exp", "cpu", CFG, outputs=tmp_path, overrides=["x=1"]) as run:
        run.logger.log({"loss": 0.5}, step=10, scope="a")
        run.add_results("t", "a", {"m": 0.25, "n": 3})
    meta = json.loads((run.dir / "run.json").read_text())
    assert meta["status"] == "completed" and meta["overrides"] == ["x=1"] and meta["preset"] == "cpu"
    rows = read_csv(run.dir / "results.csv")
    assert [r["metric"] for r in rows] == ["m", "n"] and rows[0]["value"] == 0.25
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["git_sha"] == provenance.git_state()["sha"] and rows[0]["device"].startswith("cpu:")
    records = read_metrics(run.dir / "metrics.jsonl")
    assert records[0]["loss"] == 0.5 and records[0]["step"] == 10 and records[0]["scope"] == "a"
    assert records[-1]["summary"] == {"m": 0.25, "n": 3}
    assert OmegaConf.load(run.dir / "config.yaml").x == 1
    line = run.summary_line({"t": "m"})
    assert line.startswith("[exp] completed") and "a m=0.25" in line and str(run.dir) in line and "\n" not in line


def test_failed_run_is_marked_failed_and_can_resume_but_a_completed_one_cannot(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with Run.create("exp", "cpu", CFG, outputs=tmp_path) as run:
            run.add_results("t", "a", {"m": 1})
            raise ZeroDivisionError("a bug mid-run")
    meta = json.loads((run.dir / "run.json").read_text())
    assert meta["status"] == "failed" and "ZeroDivisionError" in meta["error"]
    with Run.resume(run.dir) as resumed:
        assert resumed.has_row("t", "a") and not resumed.has_row("t", "b")
        resumed.add_results("t", "b", {"m": 2})
    assert [r["row"] for r in read_csv(run.dir / "results.csv")] == ["a", "b"]
    meta = json.loads((run.dir / "run.json").read_text())
    assert meta["status"] == "completed" and "error" not in meta and meta["attempts"] == 2
    assert resumed.resume_command == f"streamlab reproduce exp --resume {run.dir}"
    with pytest.raises(RunError, match="already completed"):
        Run.resume(run.dir)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_atomic_writes_follow_the_umask_not_mkstemps_private_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644


def test_read_metrics_skips_a_line_truncated_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]


def test_provenance_of_a_dirty_tree_carries_its_diff(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    clean = provenance.git_state()
    assert clean["dirty"] is False and clean["diff"] == "" and len(clean["sha"]) == 40
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("")
    dirty = provenance.git_state()
    assert dirty["dirty"] is True and dirty["sha"] == clean["sha"]
    assert "+x = 2" in dirty["diff"] and dirty["untracked"] == ["new.py"]


def test_provenance_records_packages_and_hardware():
    record = provenance.collect(["cmd"])
    assert record["packages"]["torch"].startswith("2.13.0")
    assert record["hardware"]["torch"].startswith("2.13.0") and record["hardware"]["cuda_available"] in (True, False)
    assert record["command"] == ["cmd"]


@pytest.mark.parametrize(
    "env,configured,key,expected",
    [
        ({}, None, False, "offline"),
        ({}, None, True, "online"),
        ({"WANDB_MODE": "online"}, None, False, "offline"),
        ({"WANDB_MODE": "disabled"}, None, True, "disabled"),
        ({"WANDB_MODE": "offline"}, "online", True, "offline"),
        ({"WANDB_MODE": "online"}, "disabled", True, "disabled"),
        ({}, "dryrun", True, "offline"),
    ],
)
def test_wandb_mode_resolution(monkeypatch, env, configured, key, expected):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(logger_module, "wandb_api_key_configured", lambda: key)
    assert resolve_wandb_mode(configured) == expected


def test_tests_run_with_wandb_disabled(tmp_path):
    with Run.create("exp", "cpu", OmegaConf.create({"trainer": {"device": "cpu"}}), outputs=tmp_path) as run:
        assert run.logger.mode == "disabled"
    assert not (run.dir / "wandb").exists()


def test_runs_table_puts_headline_metrics_side_by_side(tmp_path):
    from shared.registry import ExperimentSpec, Table

    spec = ExperimentSpec("t", "p", "d", {"fit": Table("t", ("a", "b"), ("err", "time"), headline="err")})
    for value in (1.0, 0.5):
        with Run.create("exp", "cpu", CFG, outputs=tmp_path) as run:
            run.add_results("fit", "a", {"err": value, "time": 9.0})
            run.add_results("fit", "b", {"err": 2 * value, "time": 9.0})
    table = runs_table("exp", tmp_path, {"exp": spec})
    assert list(table["a:err"]) == [1.0, 0.5] and list(table["b:err"]) == [2.0, 1.0]
    assert "a:time" not in table.columns and set(table.status) == {"completed"}
    assert all(math.isfinite(v) for v in table["seconds"])


def test_cached_work_is_computed_once_and_read_back_after_a_resume(tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"psnr": 31.5, "curve": np.arange(4.0)}

    with pytest.raises(KeyboardInterrupt):
        with Run.create("exp", "cpu", CFG, outputs=tmp_path) as run:
            first = run.cached("row_a", work)
            raise KeyboardInterrupt
    with Run.resume(run.dir) as resumed:
        again = resumed.cached("row_a", work)
        other = resumed.cached("row_b", work)
    assert len(calls) == 2 and again["psnr"] == first["psnr"] == other["psnr"]
    assert np.array_equal(again["curve"], first["curve"])


class _Payload:
    """A pickled object: loading it from a user's file could run code."""


def test_one_checkpoint_policy_trusts_a_runs_own_files_and_not_a_users(tmp_path):
    import torch

    from shared.errors import DataError
    from shared.io import atomic_torch_save, load_checkpoint

    own = tmp_path / "own.pt"
    atomic_torch_save(own, {"step": 3, "rng": torch.get_rng_state(), "curve": np.arange(3.0), "note": _Payload()})
    state = load_checkpoint(own)
    assert state["step"] == 3 and np.array_equal(state["curve"], np.arange(3.0)) and isinstance(state["note"], _Payload)
    with pytest.raises(DataError, match="own.pt: not a readable checkpoint"):
        load_checkpoint(own, from_user=True)  # weights only: the pickled object is refused
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")
    assert torch.equal(load_checkpoint(tmp_path / "weights.pt", from_user=True)["w"], torch.ones(2))
    (tmp_path / "cut.pt").write_bytes(own.read_bytes()[:100])
    for path, words in ((tmp_path / "cut.pt", "not a readable checkpoint"), (tmp_path / "none.pt", "no such file")):
        with pytest.raises(DataError, match=words) as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value)


def test_a_resumed_run_continues_the_same_wandb_run_with_every_rows_metrics(tmp_path, monkeypatch):
    """Offline wandb: the interrupted attempt and the resumed one log to one run id, which then holds
    every row (it used to start a second run of the same name, neither holding the whole table)."""
    import experiments._template.reproduce as template
    from shared.runner import reproduce

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    real_train = template.train

    def interrupted_at_the_second_row(cfg, **kwargs):
        if cfg.row.name == "linear":
            raise KeyboardInterrupt
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(template, "train", interrupted_at_the_second_row)
    with pytest.raises(KeyboardInterrupt):
        reproduce("_template", "smoke", ["trainer.seed=3"], outputs=tmp_path)
    (run_dir,) = (tmp_path / "_template").iterdir()
    first = json.loads((run_dir / "run.json").read_text())
    assert first["status"] == "interrupted" and first["wandb_mode"] == "offline"
    monkeypatch.setattr(template, "train", real_train)
    reproduce("_template", resume=run_dir, outputs=tmp_path)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "completed" and meta["wandb_id"] == first["wandb_id"]
    attempts = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(attempts) == 2 and all(d.name.endswith(f"-{meta['wandb_id']}") for d in attempts), attempts
    logged = b"".join(p.read_bytes() for d in attempts for p in d.glob("*.wandb"))
    for row in ("constant", "linear", "mlp"):
        assert f"fit/{row}/mse_over_floor".encode() in logged, row  # each row's result reached the one run
        assert (run_dir / "configs" / f"fit_{row}.yaml").is_file()
    assert b"preset:smoke" in logged and b"override:trainer.seed=3" in logged and b"figures/fit" in logged


def test_runs_of_one_configuration_give_a_mean_and_standard_error_over_seeds(tmp_path):
    from shared.registry import discover
    from shared.runner import reproduce
    from shared.runs import learning_curves, over_seeds, runs_table

    for seed in (0, 1, 2):
        reproduce("_template", "smoke", [f"trainer.seed={seed}"], outputs=tmp_path)
    reproduce("_template", "smoke", ["optim.lr=0.02"], outputs=tmp_path)  # another configuration, one seed
    table = runs_table("_template", tmp_path, {n: e.spec for n, e in discover().items()})
    assert sorted(table.seed) == [0, 0, 1, 2] and set(table.overrides) == {"", "optim.lr=0.02"}
    (line,) = over_seeds(table).to_dict("records")  # the lr run has one seed: no line
    values = table[table.overrides == ""]["mlp:mse_over_floor"]
    assert line["seeds"] == 3 and line["overrides"] == ""
    assert line["mlp:mse_over_floor mean"] == pytest.approx(values.mean())
    assert line["mlp:mse_over_floor se"] == pytest.approx(values.std(ddof=1) / math.sqrt(3))
    printed = subprocess.run([sys.executable, "-m", "shared.cli", "runs", "--outputs", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "mean ± s.e. over 3 seeds, smoke: " in printed and "overrides" in printed and "optim.lr=0.02" in printed
    curves = learning_curves(tmp_path / "_template" / table.run.iloc[0], "train_loss")
    assert set(curves) == {"constant", "linear", "mlp"}
    steps, losses = curves["mlp"]
    assert steps == sorted(steps) and len(steps) > 3 and losses[-1] < losses[0]


def test_a_run_records_the_command_that_makes_it_again(tmp_path):
    """From a notebook sys.argv is ipykernel_launcher: shared.runner names the streamlab command;
    a run started otherwise (a Hydra train entry) records its own process's command."""
    from shared.errors import RunError
    from shared.notebook import publish
    from shared.runner import reproduce

    run = reproduce("_template", "smoke", ["trainer.seed=2"], outputs=tmp_path)
    prov = json.loads((run.dir / "provenance.json").read_text())
    assert prov["command"] == ["streamlab", "reproduce", "_template", "--preset", "smoke", "trainer.seed=2"] and prov["process"] == sys.argv
    own = Run.create("exp", "cpu", CFG, outputs=tmp_path)
    assert json.loads((own.dir / "provenance.json").read_text())["command"] == sys.argv
    own.logger.close()
    with pytest.raises(RunError, match="nothing to publish"):
        publish(None, tmp_path / "results")


def test_a_published_run_reads_back_like_the_run_itself(tmp_path):
    """The notebooks show a run or its published copy through the same names (shared.notebook.show)."""
    from shared.errors import RunError
    from shared.notebook import Shown, publish, show
    from shared.runner import reproduce

    with pytest.raises(RunError, match="no results published"):
        show("_template", None, results_dir=tmp_path / "nothing")
    run = reproduce("_template", "cpu", ["trainer.seed=4", "optim.steps=60"], outputs=tmp_path / "outputs")  # smoke runs are never published
    published = publish(run, tmp_path / "results")
    live, copy = Shown(run.dir, run=run), show("_template", None, results_dir=published)
    assert copy.published and not live.published
    assert copy.table().equals(live.table()) and copy.figure("fit").read_bytes() == live.figure("fit").read_bytes()
    assert copy.config() == live.config() and copy.config().trainer.seed == 4  # the config is published with the numbers
    prov = copy.provenance()
    assert prov["command"] == ["streamlab", "reproduce", "_template", "--preset", "cpu", "trainer.seed=4", "optim.steps=60"]
    assert copy.describe().startswith("published results: preset cpu trainer.seed=4 optim.steps=60")
    with pytest.raises(RunError, match="missing"):
        copy.file("arrays.npz")


def test_paper_numbers_sit_beside_ours_per_row_and_metric():
    import pandas as pd

    from shared.notebook import with_reference

    ours = pd.DataFrame([{"row": r, "metric": m, "value": v, "preset": "cpu"} for r, m, v in
                         (("sink", "ppl", 13.8), ("sink", "ms", 4.0), ("dense", "ppl", 628.0), ("dense", "ms", 9.0))])
    reference = [{"row": "sink", "metric": "ppl", "value": 5.40, "setting": "Llama-2-13B, PG-19", "source": "paper"},
                 {"row": "optimum", "metric": "ppl", "value": 1.0, "setting": "theory", "source": "theory"}]
    table = with_reference(ours, reference)
    assert len(table) == 5  # four of ours, one reference line we do not run; no NaN-padded line per source
    assert table.loc[("sink", "ppl"), "ours (StreamLab, cpu preset)"] == 13.8 and table.loc[("sink", "ppl"), "reference"] == 5.40
    assert table.loc[("sink", "ppl"), "reference setting"] == "Llama-2-13B, PG-19" and pd.isna(table.loc[("dense", "ms"), "reference"])
    assert pd.isna(table.loc[("optimum", "ppl"), "ours (StreamLab, cpu preset)"])


def test_a_tool_stamp_names_commit_command_torch_and_date():
    import datetime as dt

    import torch

    from shared.provenance import git_state, tool_stamp

    stamp = tool_stamp(["python", "-m", "x", "--y"])
    assert stamp["command"] == ["python", "-m", "x", "--y"] and stamp["torch"] == torch.__version__
    assert stamp["commit"] == git_state()["sha"] and isinstance(stamp["dirty"], bool)
    assert abs(dt.datetime.strptime(stamp["date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_a_tool_result_keeps_the_tools_own_provenance_under_the_stamp_and_is_written_whole(tmp_path):
    from shared.provenance import write_tool_result

    out = tmp_path / "r.json"
    write_tool_result(out, {"rows": [1.5, 2.5], "provenance": {"rounds": 3, "commit": "stale"}}, ["python", "-m", "x", "t", "--a"])
    written = json.loads(out.read_text())
    assert written["rows"] == [1.5, 2.5] and written["provenance"]["rounds"] == 3  # the tool's own settings stay
    assert written["provenance"]["command"] == ["python", "-m", "x", "t", "--a"] and written["provenance"]["commit"] != "stale"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left beside it


def test_runs_of_one_seed_join_and_a_row_scored_twice_is_refused(tmp_path):
    import numpy as np

    from shared.results import arrays_by_seed

    def run(name, seed, **arrays):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"trainer:\n  seed: {seed}\n")
        np.savez(tmp_path / name / "arrays.npz", **arrays)
        return tmp_path / name

    a, b, c = np.arange(3.0), np.arange(3.0) + 0.5, np.arange(3.0) - 2
    runs = [run("s1", 1, fifo=a), run("s1_plain", 1, plain=b), run("s2", 2, fifo=c)]
    by_seed = arrays_by_seed(runs)
    assert sorted(by_seed) == [1, 2] and sorted(by_seed[1]) == ["fifo", "plain"] and sorted(by_seed[2]) == ["fifo"]
    assert np.array_equal(by_seed[1]["plain"], b) and np.array_equal(by_seed[2]["fifo"], c)
    with pytest.raises(ValueError, match="fifo"):
        arrays_by_seed([*runs, run("s1_again", 1, fifo=b)])


def test_mean_se_is_the_sample_sd_over_root_n():
    import math

    from shared.results import mean_se

    mean, se = mean_se([1.0, 2.0, 4.0, 7.0])  # deviations -2.5 -1.5 0.5 3.5: sum of squares 21, / 3 = 7
    assert mean == 3.5 and se == pytest.approx(math.sqrt(7) / 2, rel=1e-12)
    assert mean_se(x for x in (2.0, 4.0)) == (3.0, pytest.approx(1.0))
    one = mean_se([5.0])
    assert one[0] == 5.0 and math.isnan(one[1])
    assert all(math.isnan(v) for v in mean_se([]))


def test_a_claim_over_seeds_uses_the_spread_between_trainings():
    """Three seeds whose prompt-level differences are tight but whose means disagree: the pooled
    s.e. is small, the across-seed s.e. is not, and the verdict follows the across-seed one."""
    import numpy as np

    from shared.results import across_seeds

    rng = np.random.default_rng(5)
    offsets = {0: 0.04, 1: -0.01, 2: 0.02}  # training-to-training spread
    diffs = {s: o + 0.002 * rng.standard_normal(37) for s, o in offsets.items()}
    out = across_seeds(diffs)
    means = np.array([d.mean() for d in diffs.values()])
    assert out["mean"] == pytest.approx(means.mean()) and out["seeds"] == 3 and out["pairs"] == 111
    assert out["se"] == pytest.approx(means.std(ddof=1) / np.sqrt(3))
    assert out["per_seed"][1]["se"] == pytest.approx(diffs[1].std(ddof=1) / np.sqrt(37))
    pooled = np.concatenate(list(diffs.values()))
    assert out["pooled_se"] == pytest.approx(pooled.std(ddof=1) / np.sqrt(111)) and out["pooled_se"] < out["se"] / 5
    assert out["verdict"] == "not resolved"  # 0.0167 +- 0.0145: inside 2 s.e. though every prompt-level s.e. is tiny
    assert across_seeds({s: d + 0.05 for s, d in diffs.items()})["verdict"] == "met"
    assert across_seeds({s: d - 0.05 for s, d in diffs.items()})["verdict"] == "contradicted"
    assert across_seeds({s: d - 0.05 for s, d in diffs.items()}, margin=0.1)["verdict"] == "met"  # within a margin
    assert across_seeds({0: diffs[0] + 1, 1: diffs[1] + 1})["verdict"].startswith("not resolved (fewer than 3")
