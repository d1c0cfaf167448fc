"""``models_from=<run dir>``: score new rows on the very models a finished run trained.

An experiment whose rows need trained models lists the config keys a trained model depends on
(``training_keys``). ``check_models_from`` (from the experiment's ``check_config``, before any run
directory exists) refuses a source run that trained with other settings or another seed;
``reuse_checkpoints`` copies that run's finished checkpoints into the new run, where the trainers'
resume finds them done, so nothing retrains. A model the source lacks trains here as usual.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from omegaconf import OmegaConf

from .errors import ConfigError
from .io import atomic_path


def _agree(theirs, mine) -> bool:
    """Equal settings; a setting the other run's code did not have yet (a key added since, such as a
    new model's own options) is not a difference."""
    if isinstance(theirs, dict) and isinstance(mine, dict):
        return all(_agree(theirs[k], mine[k]) for k in theirs.keys() & mine.keys())
    return theirs == mine


def check_models_from(cfg, training_keys: Iterable[str]) -> None:
    """Refuse (one line) a ``models_from`` that is not a run directory or trained with other
    ``training_keys`` settings or another ``trainer.seed``; nothing to check without one."""
    if not cfg.get("models_from"):
        return
    source = Path(str(cfg.models_from))
    if not (source / "config.yaml").is_file():
        raise ConfigError(f"models_from={source}: not a run directory (no config.yaml)")
    mine, theirs = (OmegaConf.to_container(c, resolve=True) for c in (cfg, OmegaConf.load(source / "config.yaml")))
    differ = [k for k in training_keys if not _agree(theirs.get(k), mine.get(k))]
    if theirs["trainer"]["seed"] != mine["trainer"]["seed"]:
        differ.append("trainer.seed")
    if differ:
        raise ConfigError(f"models_from={source} trained with other {', '.join(differ)}; run with that run's settings or train anew")


def reuse_checkpoints(cfg, names: Iterable[str], run) -> list[str]:
    """Copy ``models_from``'s checkpoints ``model_<name>.pt`` into ``run`` (never over one the run
    already has); returns the names copied."""
    if not cfg.get("models_from"):
        return []
    source, copied = Path(str(cfg.models_from)), []
    for name in sorted(names):
        src, dst = source / "checkpoints" / f"model_{name}.pt", run.checkpoint_path(f"model_{name}")
        if src.is_file() and not dst.is_file():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            copied.append(name)
    return copied
