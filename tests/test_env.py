"""The environment: exact pins, one source of truth for pip and conda, an idempotent setup."""

import importlib.metadata
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shared.paths import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path) -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path}: '{line}' is not pinned exactly (name==version)"
        pins[canonical(match[1])] = match[2]
    return pins


REQUIREMENTS = read_pins("env/requirements.txt")
LOCK = read_pins("env/constraints.txt")
EXTRA = {**read_pins("env/requirements-nodeps.txt"), **read_pins("env/requirements-cpu.txt")}


def test_torch_is_pinned_exactly_to_the_cpu_wheel_version():
    assert REQUIREMENTS["torch"] == "2.13.0"
    assert LOCK["torch"] == "2.13.0"


def test_every_direct_requirement_is_locked_at_the_same_version():
    for name, version in REQUIREMENTS.items():
        assert LOCK.get(name) == version, f"{name}: requirements {version} vs lock {LOCK.get(name)}"


@pytest.mark.parametrize("name", sorted({**REQUIREMENTS, **EXTRA}))
def test_installed_versions_match_the_pins(name):
    import torch

    pins = {**REQUIREMENTS, **EXTRA}
    if name == "triton" and torch.version.cuda is not None:
        pytest.skip("CUDA torch brings its own triton; env/requirements-cpu.txt applies to CPU builds only")
    installed = importlib.metadata.version(name).split("+")[0]  # torch reports 2.13.0+cpu
    assert installed == pins[name], f"{name}: installed {installed}, pinned {pins[name]}; run `make setup`"


def test_extra_pin_files_never_contradict_the_lock():
    for name, version in EXTRA.items():
        assert LOCK.get(name, version) == version, name


def test_conda_environment_delegates_to_the_same_pins():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in conda
    assert "-r env/requirements.txt" in pip and "-c env/constraints.txt" in pip and "-e ." in pip
    # Any package named on the conda side must not contradict the pip pins.
    for spec in conda:
        name, _, version = spec.partition("=")
        if canonical(name) in LOCK and version:
            assert version.lstrip("=") == LOCK[canonical(name)], spec
    assert all(entry.startswith(("-r ", "-c ", "-e ")) or PIN.match(entry) for entry in pip)


def test_python_version_agrees_everywhere():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in pyproject
    assert "sys.version_info[:2] != (3, 11)" in (REPO_ROOT / "env/setup.sh").read_text()


def test_setup_is_a_fast_no_op_when_nothing_changed():
    # The first call may install (an input such as pyproject.toml changed since the last setup);
    # the second, with nothing changed in between, must skip all work.
    subprocess.run(["bash", "env/setup.sh"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    start = time.monotonic()
    out = subprocess.run(["bash", "env/setup.sh"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "up to date" in out.stdout
    assert time.monotonic() - start < 10


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / ".ci/run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make reproduce" in first_block and "make test" in first_block


def test_make_test_lints_first_and_the_tree_is_lint_clean():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^test: setup lint$", makefile, re.MULTILINE) and "ruff check ." in makefile
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "--quiet", "."], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
