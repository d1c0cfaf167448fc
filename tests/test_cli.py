"""The `streamlab` command as a user meets it: list, reproduce twice, runs, sync, and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from shared.registry import discover

from .helpers import STREAMLAB, cli, digest


def test_list_shows_registered_experiments():
    out = cli("list")
    assert out.returncode == 0 and "_template" in out.stdout and "smoke, cpu, paper" in out.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["reproduce", "nope"], "unknown experiment 'nope'; valid: _template"),
        (["reproduce", "_template", "--preset", "huge"], "unknown preset 'huge'"),
        (["reproduce", "_template", "--preset", "smoke", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["reproduce", "_template", "model=transformer"], "valid: constant, linear, mlp"),
        (["reproduce", "all", "--preset", "huge"], "unknown preset 'huge'"),
        (["runs", "--experiment", "nope"], "unknown experiment 'nope'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (["reproduce", "_template", "--resume", "/no/such/run"], "not a run directory"),
        (["reproduce", "_template", "--preset", "smoke", "trainer.device=cuda:99"], "trainer.device=cuda:99 but"),
        (["reproduce", "_template", "--preset", "smoke", "model=linear"], "run one row with eval.rows=[linear]"),
        (["reproduce", "_template", "--preset", "smoke", "optim.steps=abc"], "optim.steps must be an integer"),
        (["reproduce", "_template", "--preset", "smoke", "model.kind=rnn"], "valid: constant, linear, mlp"),
        (["reproduce", "all", "--preset", "smoke", "trainer.seed=abc"], "trainer.seed must be an integer"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, needle, tmp_path):
    out = cli(*args, "--outputs", str(tmp_path)) if args[0] in ("reproduce", "runs") else cli(*args)
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not any(tmp_path.iterdir()), "a rejected command must not create a run directory"


def test_reproduce_twice_keeps_both_runs_and_runs_lists_them(tmp_path):
    outputs = ["--outputs", str(tmp_path)]
    first = cli("reproduce", "_template", "--preset", "smoke", *outputs)
    assert first.returncode == 0, first.stderr
    (run1,) = (tmp_path / "_template").iterdir()
    before = digest(run1)
    second = cli("reproduce", "_template", "--preset", "smoke", *outputs)
    assert second.returncode == 0, second.stderr
    run2 = next(d for d in (tmp_path / "_template").iterdir() if d != run1)
    assert digest(run1) == before, "the first run was modified by the second"
    # the one-line summary at the end, and the combined table
    summary = [line for line in second.stdout.splitlines() if line.startswith("[_template] completed")]
    assert len(summary) == 1 and str(run2) in summary[0] and "mlp mse_over_floor=" in summary[0]
    assert "_template / fit" in second.stdout
    tables = sorted((tmp_path / "tables").iterdir())
    assert len(tables) == 2 and all((t / "results.csv").is_file() and (t / "figures" / "_template-fit.png").is_file() for t in tables)
    runs = cli("runs", *outputs)
    assert runs.returncode == 0 and run1.name in runs.stdout and run2.name in runs.stdout
    assert "mlp:mse_over_floor" in runs.stdout and "completed" in runs.stdout
    assert json.loads((run2 / "run.json").read_text())["status"] == "completed"


def test_sync_finds_offline_runs_and_asks_for_a_key(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "no-netrc")}
    assert cli("sync", "--dry-run", "--outputs", str(tmp_path), env=env).stdout.startswith("nothing to sync")
    made = cli("reproduce", "_template", "--preset", "smoke", "--outputs", str(tmp_path), env=env)
    assert made.returncode == 0, made.stderr
    (offline,) = tmp_path.glob("_template/*/wandb/offline-run-*")
    dry = cli("sync", "--dry-run", "--outputs", str(tmp_path), env=env)
    assert dry.returncode == 0 and f"would sync {offline}" in dry.stdout
    real = cli("sync", "--outputs", str(tmp_path), env=env)
    assert real.returncode == 2 and "no wandb API key configured" in real.stderr and "syncing" not in real.stdout
    # a reader that leaves early (`| head -0`) is no error and no traceback
    piped = subprocess.Popen([STREAMLAB, "sync", "--dry-run", "--outputs", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, **env})
    piped.stdout.close()  # closed before the command (still importing) writes its first line
    err = piped.stderr.read()
    assert piped.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_reproduce_all_runs_every_real_experiment_and_leaves_templates_out(tmp_path):
    from shared.registry import default_selection

    out = cli("reproduce", "all", "--preset", "smoke", "--outputs", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    expected = {e.name for e in default_selection()}
    assert {d.name for d in tmp_path.iterdir() if d.name != "tables"} == expected
    if any(not name.startswith("_") for name in expected):
        assert "_template" not in expected
    (table,) = (tmp_path / "tables").iterdir()
    combined = (table / "results.csv").read_text()
    assert all(f"\n{name}," in combined for name in expected)


def test_sigterm_marks_the_run_interrupted_and_resumable(tmp_path):
    env = {**os.environ, "STREAMLAB_PROGRESS": "0"}
    args = [STREAMLAB, "reproduce", "_template", "--preset", "smoke", "--outputs", str(tmp_path), "optim.steps=100000", "trainer.checkpoint_every=50"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("_template/*/checkpoints/constant.pt")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    (run,) = (tmp_path / "_template").iterdir()
    assert proc.returncode == 130 and f"resume with: streamlab reproduce _template --resume {run.resolve()}" in err, err
    assert "<" not in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("name", sorted(discover()))
def test_an_experiment_module_lists_its_tools_instead_of_starting_a_run(name):
    """``python -m experiments.<name>`` alone used to start the cpu preset (up to 36 minutes)."""
    for argv in ([], ["--help"]):
        done = subprocess.run([sys.executable, "-m", f"experiments.{name}", *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "reproduce" in done.stdout, done.stderr
        tools = re.findall(r"^  (\w+)  ", done.stdout, re.MULTILINE)
        assert tools[-1] == "reproduce"
    wrong = subprocess.run([sys.executable, "-m", f"experiments.{name}", "frobnicate"], capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode == 2 and "unknown tool 'frobnicate'" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    # a flag still means reproduce: here a preset that does not exist, refused before any run starts
    flag = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--preset", "nope"], capture_output=True, text=True, timeout=60, check=False)
    assert flag.returncode == 2 and "nope" in flag.stderr


def test_a_tools_bad_input_is_one_line_and_exit_2_whether_called_as_a_function_or_through_its_experiment(tmp_path, capsys):
    from shared.cli import experiment_main, one_line_errors, refuse_overwrite, tool_command
    from shared.errors import ConfigError

    @one_line_errors("demo tool")
    def main(argv=None):
        if argv == ["--bug"]:
            raise ValueError("a bug is a traceback, not a usage error")
        refuse_overwrite(tmp_path / "kept.json" if argv == ["--out"] else None, "--out")
        if argv:
            raise ConfigError("--frames must be positive")
        return 0

    (tmp_path / "kept.json").write_text("{}")
    assert main([]) == 0
    assert main(["--frames", "0"]) == 2 and capsys.readouterr().err == "demo tool: --frames must be positive\n"
    assert main(["--out"]) == 2 and f"{tmp_path / 'kept.json'} exists; choose another --out" in capsys.readouterr().err
    assert (tmp_path / "kept.json").read_text() == "{}"
    with pytest.raises(ValueError):
        main(["--bug"])
    assert tool_command("experiments.demo", "t", ["--a", "1"]) == ["python", "-m", "experiments.demo", "t", "--a", "1"]
    # a tool that raises without its own handler still answers in one line through `python -m experiments.<name> <tool>`
    done = subprocess.run([sys.executable, "-m", "experiments.longlive", "pipeline", "--ranks", "0"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == ["longlive pipeline: --streams, --chunks, --repeats and --ranks must be positive"]
    assert experiment_main("experiments.longlive", {"t": ("tests.test_cli:_a_tool_without_a_handler", "")}, ["t", "x"]) == 2
    assert capsys.readouterr().err == "python -m experiments.longlive t: no data for ['x']\n"


def _a_tool_without_a_handler(argv):
    from shared.errors import DataError

    raise DataError(f"no data for {argv}")


def test_the_tools_each_experiment_offers_are_listed():
    for name, tools in {"stdo": ["fit", "upscale", "sweep"], "careless_whisper": ["transcribe", "generalise", "paired"], "streamdit": ["bench"]}.items():
        out = subprocess.run([sys.executable, "-m", f"experiments.{name}"], capture_output=True, text=True, timeout=60, check=True).stdout
        assert re.findall(r"^  (\w+)  ", out, re.MULTILINE) == [*tools, "reproduce"], out
    fit = subprocess.run([sys.executable, "-m", "experiments.stdo", "fit", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert fit.returncode == 0 and "--scale" in fit.stdout


def test_a_failed_experiment_leaves_no_combined_table(tmp_path, monkeypatch):
    """A combined table with a hole would read as a complete one."""
    from shared import runner

    def broken(name, *args, **kwargs):
        raise RuntimeError("a bug inside the experiment")

    monkeypatch.setattr(runner, "reproduce", broken)
    runs, failed, combined = runner.reproduce_many(["_template"], "smoke", outputs=tmp_path)
    assert failed == ["_template"] and combined is None and not (tmp_path / "tables").exists()
