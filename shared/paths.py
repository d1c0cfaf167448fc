"""Where things live. Paths never depend on the current directory (notebooks run elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def outputs_root(override: str | os.PathLike | None = None) -> Path:
    """Root of all run directories: ``override``, else ``$STREAMLAB_OUTPUTS``, else ``<repo>/outputs``."""
    chosen = override or os.environ.get("STREAMLAB_OUTPUTS") or REPO_ROOT / "outputs"
    return Path(chosen).expanduser().resolve()
