"""What a result came from: code version, environment and hardware, recorded with every run."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache

from .paths import REPO_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state() -> dict:
    """``sha``, ``dirty`` and, when dirty, the ``diff`` against HEAD and the untracked files.

    Untracked (not ignored) files count as dirty: a new experiment folder that was never committed
    is exactly the kind of change a result must not hide.
    """
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": "unknown", "dirty": None, "diff": "", "untracked": []}
    status = _git("status", "--porcelain") or ""
    untracked = [line[3:] for line in status.splitlines() if line.startswith("?? ")]
    dirty = bool(status.strip())
    diff = (_git("diff", "HEAD", "--no-color") or "") if dirty else ""
    return {"sha": sha.strip(), "dirty": dirty, "diff": diff, "untracked": untracked}


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str = "cpu") -> str:
    """A short human-readable name of the device a run computed on, e.g. ``cuda:NVIDIA H100 80GB HBM3``."""
    if str(device).startswith("cuda"):
        import torch

        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu:{os.cpu_count()}x {cpu_name()}"


def hardware() -> dict:
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "hostname": socket.gethostname()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        info["torch"] = None
    return info


def packages() -> dict[str, str]:
    """Every installed distribution and its version (the run's equivalent of ``pip freeze``)."""
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[name.lower()] = dist.version
    return dict(sorted(versions.items()))


def collect(command: list[str] | None = None) -> dict:
    """Everything above, plus when and how the run was started. The git diff is returned separately."""
    git = git_state()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "git": {k: v for k, v in git.items() if k != "diff"},
        "git_diff": git["diff"],
        "python": sys.version,
        "platform": platform.platform(),
        "hardware": hardware(),
        "packages": packages(),
    }


def tool_stamp(command: list[str]) -> dict:
    """The short provenance a tool writes into its JSON result: commit, whether the tree was dirty,
    the command, torch's version and the UTC date (a run directory gets ``collect`` instead)."""
    import torch

    git = git_state()
    return {"commit": git["sha"], "dirty": git["dirty"], "command": list(command), "torch": torch.__version__,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_tool_result(path, result: dict, command: list[str]) -> None:
    """A tool's JSON result, stamped (``tool_stamp`` merged over any provenance the tool recorded
    itself, e.g. its measurement settings) and written atomically: a crash leaves no half file."""
    from .io import atomic_write_json

    result["provenance"] = {**result.get("provenance", {}), **tool_stamp(command)}
    atomic_write_json(path, result)
