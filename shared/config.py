"""Hydra composition for experiments, with errors a user can act on.

Each experiment owns ``conf/`` (primary ``config.yaml``, ``model/``, ``data/``, ``preset/``,
``experiment/<table>_<row>.yaml``); reusable groups (logger, paths, trainer, launcher) come from
``shared/conf`` through the search path ``pkg://shared.conf`` declared in each primary config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .registry import Experiment

_MISSING = object()


def _group_options(experiment: Experiment, group: str) -> list[str]:
    """Options of a config group, from the experiment's conf/ and shared/conf."""
    from .paths import REPO_ROOT

    dirs = [experiment.conf_dir / group, REPO_ROOT / "shared" / "conf" / group]
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def row_override(table: str, row: str) -> str:
    return f"+experiment={table}_{row}"


def _check_override_keys(base: DictConfig, overrides: Sequence[str], experiment: str) -> None:
    """Name an unknown key, and the valid ones beside it, before Hydra's multi-line message can."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(f"cannot parse override: {str(err).splitlines()[0]}") from None
    for override in parsed:
        if override.is_add() or override.is_force_add() or override.is_delete():
            continue
        key = override.key_or_group
        if key.startswith("hydra"):
            continue
        if OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            parent = key
            while parent and not isinstance(OmegaConf.select(base, parent, default=None), DictConfig):
                parent = parent.rpartition(".")[0]
            node = OmegaConf.select(base, parent) if parent else base
            valid = sorted(str(k) for k in node.keys())
            where = f"under '{parent}'" if parent else "at the top level"
            raise ConfigError(
                f"unknown config key '{key}' for experiment '{experiment}'; valid keys {where}: "
                f"{', '.join(map(str, valid))} (use +{key}=... to add a new key)"
            )


def compose(
    experiment: Experiment,
    preset: str = "cpu",
    overrides: Sequence[str] = (),
    row: tuple[str, str] | None = None,
) -> DictConfig:
    """The experiment's config at ``preset``, with a table row (``(table, row)``) and user overrides.

    Order of precedence, lowest first: primary config and groups, preset, row file, user overrides.
    """
    presets = experiment.spec.presets
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r} for experiment '{experiment.name}'; valid: {', '.join(presets)}")
    if not (experiment.conf_dir / "preset" / f"{preset}.yaml").is_file():
        raise ConfigError(f"experiment '{experiment.name}' declares preset {preset!r} but has no conf/preset/{preset}.yaml")
    fixed = [f"preset={preset}"]
    if row is not None:
        table, name = row
        if table not in experiment.spec.tables or name not in experiment.spec.tables[table].rows:
            valid = [f"{t}/{r}" for t, tab in experiment.spec.tables.items() for r in tab.rows]
            raise ConfigError(f"unknown row {table}/{name} for '{experiment.name}'; valid: {', '.join(valid)}")
        fixed.append(row_override(table, name))
    try:
        with initialize_config_dir(config_dir=str(experiment.conf_dir), version_base="1.3", job_name=experiment.name):
            base = hydra_compose("config", overrides=fixed)
            _check_override_keys(base, overrides, experiment.name)
            cfg = hydra_compose("config", overrides=[*fixed, *overrides])
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        missing = re.search(r"Could not find '([^']+)/([^'/]+)'", first_line)
        if missing:
            group, option = missing.groups()
            raise ConfigError(
                f"unknown {group} {option!r} for experiment '{experiment.name}'; valid: {', '.join(_group_options(experiment, group))}"
            ) from None
        raise ConfigError(f"config error in experiment '{experiment.name}': {first_line}") from None
    if cfg.get("preset_name") != preset:
        raise ConfigError(
            f"conf/preset/{preset}.yaml of '{experiment.name}' must set preset_name: {preset} (it sets {cfg.get('preset_name')!r})"
        )
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    """The fully resolved config as plain Python (what a run records)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
