"""The GPU pass (env/gpu/pass.sh), run here as its dry run, its wheels, and the publisher of what it returns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared import gpu_publish
from shared.notebook import gpu_results

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("ring_decode", "flex_prefill", "stdo", "streamdit", "splat", "queen")


def run_pass(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "env/gpu/pass.sh", "--dry-run", "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=os.environ | {"PYTHON": sys.executable} | env, check=False)


@pytest.fixture(scope="module")
def dry_pass(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dry_pass")
    done = run_pass(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_dry_run_runs_every_step_and_reports_it_in_at_most_eight_files(dry_pass):
    files = sorted(p.name for p in dry_pass.iterdir())
    assert len(files) <= 8 and {"gpu_pass.json", "pass.log", "junit_gpu.xml", "junit_gsplat.xml"} <= set(files), files
    report = json.loads((dry_pass / "gpu_pass.json").read_text())
    assert report["dry_run"] is True and report["schema"] == gpu_publish.SCHEMA
    assert {name: s["status"] for name, s in report["steps"].items()} == dict.fromkeys(STEPS, "ok")
    assert report["machine_status"]["status"] == "ok"
    assert report["other"]["tests_gpu"]["status"] == "ok" and report["other"]["tests_gsplat"]["status"] == "ok"
    for key in ("python", "torch", "triton", "commit", "gsplat", "hydra-core"):
        assert report["provenance"][key], key
    assert report["ceilings"]["copy_bytes_per_s"] > 0 and report["ceilings"]["matmul_flops"] > 0
    # every GPU test was collected (each file imports under the GPU image's package set) and skipped here
    gpu = report["tests"]["gpu"]
    assert gpu["tests"] >= 80 and gpu["errors"] == gpu["failures"] == 0 and gpu["skipped"] == gpu["tests"]
    assert {c["file"] for c in gpu["cases"]} >= {"tests/kernels/test_ring_decode.py", "experiments/streamdit/tests/test_bench.py"}


def test_the_dry_run_measures_what_the_gpu_pass_will(dry_pass):
    steps = {name: s["figures"] for name, s in json.loads((dry_pass / "gpu_pass.json").read_text())["steps"].items()}
    ring = steps["ring_decode"]
    triton = [r for r in ring["rows"] if r["impl"].startswith("triton")]
    assert triton and {r["impl"] for r in ring["rows"]} >= {"reference", "sdpa_prerotated"}
    assert max(r["rel_err_vs_float64"] for r in ring["rows"]) < 1e-5  # float32, the kernel under the interpreter
    assert ring["target"]["met"] is None  # a dry run claims nothing
    for r in steps["flex_prefill"]["rows"]:
        assert r["flex_rel_err"] < 1e-5 and r["sdpa_rel_err"] < 1e-5 and 0 < r["visible_fraction"] < 1
    for variant in ("eager", "cuda_graph", "compiled"):
        s = steps["streamdit"][variant]
        assert s["fps"] == pytest.approx(s["video_frames_per_step"] / s["seconds_per_step"])
    assert steps["stdo"]["x2"]["parameters"] != steps["stdo"]["x4"]["parameters"]  # the tail grows with the scale
    assert steps["splat"]["parity"]["within_tolerance"] and steps["splat"]["parity"]["image_max_abs_diff"] == 0
    queen = steps["queen"]["residual_frame"]
    assert queen["decode_max_abs_error"] < 1e-4 and queen["seconds_per_residual_frame"] > 0


def test_a_spent_budget_skips_the_remaining_steps_and_still_merges(tmp_path):
    done = run_pass(tmp_path, PASS_BUDGET_S="32")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_pass.json").read_text())
    statuses = {name: s["status"] for name, s in report["steps"].items()}
    assert "skipped: budget spent" in statuses.values(), statuses
    assert report["provenance"]["torch"]


def test_pass_sh_names_every_file_that_holds_gpu_tests():
    """A new GPU test file must be added to the pass, or no GPU ever runs it."""
    text = (ROOT / "env/gpu/pass.sh").read_text()
    named = set(re.findall(r"[\w/]+/test_\w+\.py|tests/test_\w+\.py", text))
    holding = {str(p.relative_to(ROOT)) for folder in ("tests", "experiments", "kernels", "shared") for p in (ROOT / folder).rglob("test_*.py")
               if re.search(r"^(@pytest\.mark\.gpu|pytestmark = pytest\.mark\.gpu)", p.read_text(), re.MULTILINE)}
    assert holding and holding <= named, holding - named


def test_the_absent_packages_are_unimportable_in_the_dry_run():
    env = os.environ | {"PYTHONPATH": str(ROOT / "env/gpu/dry_run")}
    done = subprocess.run([sys.executable, "-c", "import wandb"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1 and "absent on the GPU machine" in done.stderr
    done = subprocess.run([sys.executable, "-c", "import torch, omegaconf"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr


# ---- the wheels -----------------------------------------------------------------------------------

def test_wheels_sh_fetches_every_missing_package_for_cpython_312_under_the_size_limit(tmp_path):
    from packaging.tags import Tag
    from packaging.utils import canonicalize_name, parse_wheel_filename

    dest = tmp_path / "whl"
    done = subprocess.run(["bash", "env/gpu/wheels.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                          env=os.environ | {"WHEELS_DIR": str(dest), "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-2000:]
    size = float(re.search(r"([\d.]+) MiB in", done.stdout).group(1))
    assert 0 < size < 48
    wheels = {canonicalize_name(parse_wheel_filename(p.name)[0]): parse_wheel_filename(p.name)[3] for p in dest.glob("*.whl")}
    needed = {"hydra-core", "omegaconf", "antlr4-python3-runtime", "gsplat", "constriction", "av", "jiwer", "rapidfuzz", "soundfile"}
    assert needed <= set(wheels), needed - set(wheels)
    machine = {Tag(interpreter, abi, platform) for interpreter in ("cp312", "py3", "py312", "cp311", "cp39", "cp38")
               for abi in ("cp312", "abi3", "none") for platform in ("any", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                                                      "manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux1_x86_64")}
    for name, tags in wheels.items():
        assert tags & machine, (name, tags)
    assert "device call" in done.stdout


# ---- the publisher ---------------------------------------------------------------------------------

def as_if_from_a_gpu(dry_pass: Path, tmp_path: Path, gpu: str = "a GPU in a test") -> Path:
    """The dry run's report marked as a GPU's: this tests where figures go, not what they are."""
    report = json.loads((dry_pass / "gpu_pass.json").read_text())
    report["dry_run"] = False
    report["provenance"]["gpu"] = gpu
    out = tmp_path / f"returned-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    (out / "gpu_pass.json").write_text(json.dumps(report))
    return out


def notebooks(tmp_path: Path) -> Path:
    root = tmp_path / "notebooks"
    for name in gpu_publish.SHARES:
        (root / name / "results").mkdir(parents=True)
    return root


def test_a_dry_run_or_a_missing_report_is_refused_with_one_line(dry_pass, tmp_path):
    for folder, words in ((dry_pass, "dry run"), (tmp_path, "does not exist")):
        done = subprocess.run([sys.executable, "-m", "shared.gpu_publish", str(folder), "--notebooks", str(notebooks(tmp_path / words))],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list((tmp_path / "dry run").rglob("figures.csv"))


def test_each_experiment_gets_its_figures_and_tests_with_provenance(dry_pass, tmp_path):
    returned, root = as_if_from_a_gpu(dry_pass, tmp_path), notebooks(tmp_path)
    written = gpu_publish.publish(returned, root)
    assert set(written) == set(gpu_publish.SHARES)
    report = json.loads((returned / "gpu_pass.json").read_text())
    figures = gpu_results(root / "streamdit" / "results")
    eager = figures[(figures.figure == "time per buffer step") & figures.setting.str.endswith("eager")]
    assert eager.value.item() == pytest.approx(1e3 * report["steps"]["streamdit"]["figures"]["eager"]["seconds_per_step"])
    assert eager.paper.item() == 482 and set(figures.step) == {"streamdit"}
    prov = json.loads((root / "streamdit" / "results" / "gpu" / "provenance.json").read_text())
    assert prov["device"] == "a GPU in a test" and prov["commit"] == report["provenance"]["commit"] and prov["torch"]
    assert prov["tests"]["cases"] and all(c["file"].startswith("experiments/streamdit/") for c in prov["tests"]["cases"])
    core = json.loads((root / "streaming_llm" / "results" / "gpu" / "provenance.json").read_text())
    assert {c["file"] for c in core["tests"]["cases"]} == {"tests/kernels/test_ring_decode.py"}
    assert set(gpu_results(root / "streaming_llm" / "results").step) == {"ring_decode", "flex_prefill"}
    assert set(gpu_results(root / "queen" / "results").step) == {"splat", "queen"}


def test_another_pass_replaces_a_published_one_only_when_asked(dry_pass, tmp_path, capsys):
    root = notebooks(tmp_path)
    gpu_publish.publish(as_if_from_a_gpu(dry_pass, tmp_path, "first"), root)
    gpu_publish.publish(as_if_from_a_gpu(dry_pass, tmp_path, "first"), root)  # the same pass again: no change
    second = as_if_from_a_gpu(dry_pass, tmp_path, "second")
    with pytest.raises(gpu_publish.RunError, match="--replace"):
        gpu_publish.publish(second, root)
    assert json.loads((root / "stdo/results/gpu/provenance.json").read_text())["device"] == "first"
    gpu_publish.publish(second, root, replace=True)
    assert json.loads((root / "stdo/results/gpu/provenance.json").read_text())["device"] == "second"
    capsys.readouterr()
    assert gpu_results(tmp_path / "elsewhere") is None and "No GPU pass published" in capsys.readouterr().out
