"""``streamlab new NAME --from EXPERIMENT``: start a method from an existing experiment.

Copies ``experiments/<from>/`` and ``notebooks/<from>/`` under the new name and renames every
reference to the old experiment *as a module or a path* (``experiments.<from>``,
``experiments/<from>``, ``notebooks/<from>``, ``streamlab reproduce <from>``), in code, configs,
READMEs, docstrings and notebooks. Tests import their own experiment relatively and notebooks take
their experiment from their folder, so the fork tests and runs itself. Published results and their
provenance are not copied (they are the original's), and the copied notebook's outputs are cleared.
Table and row names stay as they are: a bare word such as ``queen`` may be a table name; the
remaining mentions are listed for the researcher to review.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import ConfigError
from .paths import EXPERIMENTS_DIR, NOTEBOOKS_DIR

TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".ipynb", ".toml", ".cfg", ".json"}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def _renamed(text: str, source: str, name: str) -> str:
    word = r"(?![A-Za-z0-9_])"
    for pattern, replacement in (
        (rf"\bexperiments\.{re.escape(source)}{word}", f"experiments.{name}"),
        (rf"\bexperiments/{re.escape(source)}{word}", f"experiments/{name}"),
        (rf"\bnotebooks/{re.escape(source)}{word}", f"notebooks/{name}"),
        (rf"\bstreamlab reproduce {re.escape(source)}{word}", f"streamlab reproduce {name}"),
        (rf"\bmake reproduce EXP={re.escape(source)}{word}", f"make reproduce EXP={name}"),
    ):
        text = re.sub(pattern, replacement, text)
    return text


def fork(name: str, source: str, experiments: Path = EXPERIMENTS_DIR, notebooks: Path = NOTEBOOKS_DIR) -> dict:
    """Make experiment ``name`` from ``source``; returns what was written and what to review."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"experiment name {name!r}: lowercase letters, digits and _, starting with a letter (it becomes a Python package)")
    if not (experiments / source / "__init__.py").is_file():
        valid = sorted(p.parent.name for p in experiments.glob("*/__init__.py"))
        raise ConfigError(f"no experiment {source!r} to start from; valid: {', '.join(valid)}")
    for target in (experiments / name, notebooks / name):
        if target.exists():
            raise ConfigError(f"{target} exists already; pick another name")
    written = []
    shutil.copytree(experiments / source, experiments / name, ignore=_IGNORE)
    written.append(experiments / name)
    if (notebooks / source).is_dir():
        shutil.copytree(notebooks / source, notebooks / name, ignore=shutil.ignore_patterns("results", "__pycache__", ".ipynb_checkpoints"))
        for path in sorted((notebooks / name).glob(f"{source}.*")):  # notebooks/<from>/<from>.py -> <name>.py
            path.rename(path.with_name(name + path.suffix))
        written.append(notebooks / name)
    review = {}
    for folder in written:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
            text = path.read_text(encoding="utf-8")
            new = _renamed(text, source, name)
            if path.suffix == ".ipynb":
                new = _cleared(new)
            if new != text:
                path.write_text(new, encoding="utf-8")
            left = len(re.findall(rf"(?<![A-Za-z0-9_]){re.escape(source)}(?![A-Za-z0-9_])", new))
            if left:
                review[str(path)] = left
    return {"written": [str(p) for p in written], "review": review}


def _cleared(notebook_json: str) -> str:
    """A notebook without outputs: the copied ones show the original experiment's numbers."""
    import nbformat

    nb = nbformat.reads(notebook_json, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nbformat.writes(nb) + "\n"
