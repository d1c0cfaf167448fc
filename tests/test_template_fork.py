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


@pytest.fixture
def queen_fork():
    name = f"myqueen_{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        shutil.rmtree(EXPERIMENTS_DIR / name, ignore_errors=True)
        shutil.rmtree(REPO_ROOT / "notebooks" / name, ignore_errors=True)


def test_a_fork_renames_itself_and_its_tests_test_the_fork(queen_fork):
    """queen's tests used to import experiments.queen, so a fork's tests tested the original."""
    import json

    out = cli("new", queen_fork, "--from", "queen")
    assert out.returncode == 0, out.stderr
    folder, notebook = EXPERIMENTS_DIR / queen_fork, REPO_ROOT / "notebooks" / queen_fork
    assert queen_fork in cli("list").stdout
    code = "\n".join(p.read_text() for p in [*folder.rglob("*.py"), *folder.rglob("*.md"), *notebook.glob("*.py")])
    assert "experiments.queen" not in code and "experiments/queen" not in code and "notebooks/queen" not in code
    assert not (notebook / "results").exists()  # the original's published numbers stay with it
    assert (notebook / f"{queen_fork}.py").is_file() and (notebook / f"{queen_fork}.ipynb").is_file()
    cells = json.loads((notebook / f"{queen_fork}.ipynb").read_text())["cells"]
    assert all(not c.get("outputs") for c in cells)
    # break one line of the fork's codec: the fork's own tests must see it, the original's must not
    codec = folder / "codec.py"
    codec.write_text(codec.read_text().replace("astype(np.int64) + lo\n", "astype(np.int64) + lo + 1\n", 1))

    def tests(experiment):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"experiments/{experiment}/tests", "-k", "coder"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)

    assert tests(queen_fork).returncode == 1
    assert tests("queen").returncode == 0


def test_a_new_name_must_be_a_package_name_and_new(tmp_path):
    for args, needle in ((["new", "My-Exp"], "lowercase letters"), (["new", "queen", "--from", "_template"], "exists already"),
                         (["new", "fresh", "--from", "nothing"], "no experiment 'nothing'")):
        out = cli(*args)
        assert out.returncode == 2 and needle in out.stderr and out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("script", sorted((REPO_ROOT / "notebooks").glob("*/*.py")), ids=lambda p: p.parent.name)
def test_each_notebook_runs_the_experiment_of_its_own_folder(script):
    text = script.read_text()
    if "reproduce(" not in text:
        return  # compare_runs looks at every experiment
    assert "EXPERIMENT = Path.cwd().name" in text and "reproduce(EXPERIMENT" in text
    assert f'reproduce("{script.parent.name}"' not in text
