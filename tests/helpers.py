"""Helpers shared by the cross-cutting tests."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from shared.paths import REPO_ROOT

STREAMLAB = str(Path(sys.executable).parent / "streamlab")


def digest(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory``, by relative path: to prove nothing was touched."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed ``streamlab`` console script."""
    return subprocess.run([STREAMLAB, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=REPO_ROOT)


def foreign_imports(source: str, own: str, module_path: str) -> list[str]:
    """Imports in ``source`` (a file of experiment ``own``) that reach another experiment.

    ``module_path`` is the dotted module of the file, e.g. ``experiments.x.tests.test_a``; relative
    imports are resolved against it.
    """
    bad = []
    package = module_path.rsplit(".", 1)[0].split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "experiments" and (len(parts) < 2 or parts[1] != own):
                bad.append(name)
    return bad
