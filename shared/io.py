"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Each writer writes to a temporary file in the destination's directory, flushes it to disk and
renames it over the destination (``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files; results follow the user's umask
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_copy(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
    return Path(destination)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, from_user: bool = False) -> Any:
    """The one loading policy for torch files, so that no call site picks ``weights_only`` by itself.

    A checkpoint a run wrote itself (``atomic_torch_save`` into its own directory) is trusted and
    loaded in full: it may hold RNG states, numpy arrays and configs. A file a user hands in (an
    STDO bundle, say) is loaded with ``weights_only=True``, so that loading it cannot run code.
    Any file that cannot be read is a ``DataError`` naming it, in one line.
    """
    import torch

    from .errors import DataError

    try:
        return torch.load(path, map_location=map_location, weights_only=from_user)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as err:  # a truncated zip, not a torch file, pickled code in a user's file: one message
        message = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {message})") from err


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file, for checkpoints that a kill must not corrupt."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
