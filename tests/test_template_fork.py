"""A researcher's first step: copy the template under a new name; it must run and test as itself."""

import shutil
import subprocess
import sys
import uuid

import pytest

from shared.paths import EXPERIMENTS_DIR, REPO_ROOT

from .helpers import cli


@pytest.fixture
def forked():
    name = f"fork_{uuid.uuid4().hex[:8]}"
    target = EXPERIMENTS_DIR / name
    shutil.copytree(EXPERIMENTS_DIR / "_template", target, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        yield name
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_copied_template_runs_its_smoke_preset_and_its_own_tests(forked, tmp_path):
    assert forked in cli("list").stdout
    out = cli("reproduce", forked, "--preset", "smoke", "--outputs", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (run,) = (tmp_path / forked).iterdir()
    assert (run / "figures" / "fit.png").is_file()
    assert f"[{forked}] completed" in out.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"experiments/{forked}/tests", "-k", "not killed"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "passed" in tests.stdout
