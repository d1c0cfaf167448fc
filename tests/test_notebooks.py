"""Notebooks: pairs never drift, each has a parameters cell, and each runs at the smoke preset.

Execution happens in memory (nothing is saved) with STREAMLAB_SMOKE=1 and a temporary outputs
root; the committed results beside each notebook must come out untouched.
"""


import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from shared.paths import NOTEBOOKS_DIR
from shared.registry import discover

from .helpers import digest

# Experiment notebooks first: compare_runs then has runs to compare.
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*/*.ipynb"), key=lambda p: (p.parent.name == "compare_runs", str(p)))
SCRIPTS = sorted(NOTEBOOKS_DIR.glob("*/*.py"))


def cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def drift(py_path) -> list[str]:
    """Differences between a .py notebook and its .ipynb twin (empty when in step)."""
    script = cells(jupytext.read(py_path))
    notebook = cells(nbformat.read(py_path.with_suffix(".ipynb"), as_version=4))
    problems = [f"{len(script)} cells in .py, {len(notebook)} in .ipynb"] if len(script) != len(notebook) else []
    problems += [f"cell {i} differs" for i, (a, b) in enumerate(zip(script, notebook, strict=False)) if a != b]  # lengths checked above
    return problems


def test_every_notebook_is_a_pair():
    assert {p.with_suffix("") for p in NOTEBOOKS} == {p.with_suffix("") for p in SCRIPTS}


def test_every_experiment_and_compare_runs_has_a_notebook():
    folders = {p.parent.name for p in NOTEBOOKS}
    assert set(discover()) | {"compare_runs"} <= folders


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.parent.name)
def test_pair_has_not_drifted(script):
    assert drift(script) == [], f"{script} and its .ipynb differ: run `make notebooks-sync`"


def test_drift_check_catches_an_edit(tmp_path):
    source = SCRIPTS[0]
    copy = tmp_path / source.name
    copy.write_text(source.read_text().replace("# %%", "# %%\nx = 'edited'", 1))
    (tmp_path / source.with_suffix(".ipynb").name).write_bytes(source.with_suffix(".ipynb").read_bytes())
    assert drift(copy) != []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_notebook_has_a_parameters_cell_with_smoke_switch(notebook):
    nb = nbformat.read(notebook, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "SMOKE" in params[0].source




@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_notebook_runs_at_smoke_preset(notebook, monkeypatch):
    monkeypatch.setenv("STREAMLAB_SMOKE", "1")
    before = digest(notebook.parent)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    assert digest(notebook.parent) == before, "a smoke run changed committed files beside the notebook"


@pytest.mark.parametrize("notebook", [n for n in NOTEBOOKS if n.parent.name != "compare_runs"], ids=lambda p: p.parent.name)
def test_notebook_opens_on_the_published_results_in_seconds_without_a_run(notebook, monkeypatch):
    """Run All with the default parameters shows the committed results/ (it used to start the cpu
    preset, 8 to 36 minutes, and then rewrite tracked files)."""
    import os
    import time
    from pathlib import Path

    monkeypatch.setenv("STREAMLAB_SMOKE", "0")
    before = digest(notebook.parent)
    runs_before = set(Path(os.environ["STREAMLAB_OUTPUTS"]).glob("*/*/run.json"))
    nb = nbformat.read(notebook, as_version=4)
    start = time.monotonic()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == [] and time.monotonic() - start < 60
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "stream")
    assert "published results: preset" in text
    assert digest(notebook.parent) == before
    assert set(Path(os.environ["STREAMLAB_OUTPUTS"]).glob("*/*/run.json")) == runs_before  # no run started


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_committed_notebooks_carry_no_progress_frames_or_machine_paths(notebook):
    """careless_whisper's notebook once held 1,655 tqdm outputs and this machine's paths."""
    from shared.paths import REPO_ROOT

    nb = nbformat.read(notebook, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "stream" and o.get("name") == "stderr"], "run `make notebooks-sync`"
    text = nbformat.writes(nb)
    assert str(REPO_ROOT) not in text and "/root/" not in text and "/home/" not in text


def test_cleaning_strips_stderr_paths_and_embedded_images(tmp_path):
    from shared.notebook import clean_outputs
    from shared.paths import REPO_ROOT

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="100%|####| 3/3 [00:01<00:00]"),
                    nbformat.v4.new_output("stream", name="stdout", text=f"run: {REPO_ROOT}/outputs/x\\n")]
    nb.cells.append(cell)
    path = tmp_path / "n.ipynb"
    cell.outputs.append(nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=" * 1000, "text/plain": "<Figure>"}))
    nbformat.write(nb, path)
    assert clean_outputs(path) and not clean_outputs(path)
    out, figure = nbformat.read(path, as_version=4).cells[0].outputs
    assert out.text == "run: <repo>/outputs/x\\n"
    assert dict(figure.data) == {"text/plain": "<Figure>"}  # the image is in results/, not base64 in the notebook
