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


def _exists(base: DictConfig, key: str) -> bool:
    """Whether ``key`` is in the config, a mandatory value (``???``) included."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(base, parent, default=None) if parent else base
    return isinstance(node, DictConfig) and leaf in node.keys()  # `in` alone skips a ??? value


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
        if not _exists(base, key):
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


def _parsed(overrides: Sequence[str]):
    return [o for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.key_or_group.startswith("hydra")]


def _flat_keys(node, prefix: str = "") -> list[str]:
    """Leaf keys of a plain nested mapping, dotted."""
    if not isinstance(node, dict) or not node:
        return [prefix] if prefix else []
    return [key for k, v in node.items() for key in _flat_keys(v, f"{prefix}.{k}" if prefix else str(k))]


def row_settings(experiment: Experiment) -> dict[str, list[str]]:
    """What each table row's file sets: {config key or group: [rows]}. A row that picks a config
    group (``override /model: mlp``) sets the group; one that writes values sets those keys."""
    settings: dict[str, list[str]] = {}
    for table, spec in experiment.spec.tables.items():
        for row in spec.rows:
            path = experiment.conf_dir / "experiment" / f"{table}_{row}.yaml"
            if not path.is_file():
                continue
            data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
            keys = [str(k).split()[-1].strip("/") for entry in data.pop("defaults", []) if isinstance(entry, dict) for k in entry]
            data.pop("row", None)  # the row's own name, not a setting
            for key in [*keys, *_flat_keys(data)]:
                settings.setdefault(key, []).append(row)
    return settings


def _check_row_conflicts(experiment: Experiment, base: DictConfig, overrides: Sequence[str]) -> None:
    """An override of what a table row sets would silently turn every row into the same thing
    (``model=linear`` trains three linear models labelled constant, linear and mlp): refuse it,
    unless ``override_rows=true`` asks for exactly that."""
    parsed = _parsed(overrides)
    if any(o.key_or_group == "override_rows" and str(o.value()).lower() == "true" for o in parsed):
        return
    chosen = next((o.value() for o in parsed if o.key_or_group == "eval.rows"), None)
    rows = [str(r) for r in chosen] if isinstance(chosen, list) else experiment.spec.default_rows
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or key in ("eval.rows", "override_rows"):
            continue
        options = _group_options(experiment, key)
        if options and str(override.value()) not in options:  # an unknown option is the first thing to say
            raise ConfigError(f"unknown {key} {override.value()!r} for experiment '{experiment.name}'; valid: {', '.join(options)}")
        hit = {row for setting, names in row_settings(experiment).items() for row in names if setting == key or setting.startswith(key + ".")}
        setters = [row for row in rows if row in hit]  # in the table's order
        if setters:
            value = str(override.value())
            suggest = value if value in [r for t in experiment.spec.tables.values() for r in t.rows] else setters[0]
            raise ConfigError(
                f"'{override.input_line}' changes what table rows set ('{key}' is set by rows {', '.join(setters)} of '{experiment.name}'): "
                f"run one row with eval.rows=[{suggest}], or add override_rows=true to apply it to every row anyway"
            )


_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list [a, b]"}


def _check_override_types(base: DictConfig, overrides: Sequence[str], experiment: Experiment) -> None:
    """A value of the wrong type is refused before any run starts (``optim.steps=abc`` used to fail
    deep inside the training loop): the type is the one the composed config holds. A ``kind`` key
    of a config group must name one of the group's options."""
    for override in _parsed(overrides):
        key = override.key_or_group
        if override.is_delete() or override.is_sweep_override() or key in ("eval.rows",):
            continue
        if not _exists(base, key) or OmegaConf.is_missing(base, key):
            continue
        current, value = OmegaConf.select(base, key), override.value()
        if value is None:  # null: optional settings; the experiment's code says what it accepts
            continue
        if isinstance(current, bool):
            expected = bool
        elif isinstance(current, int):
            expected = int
        elif isinstance(current, float):
            expected = float
        elif isinstance(current, str):
            expected = str
        elif OmegaConf.is_list(current):
            expected = list
        else:
            continue
        ok = (isinstance(value, bool) if expected is bool else
              isinstance(value, int) and not isinstance(value, bool) if expected is int else
              isinstance(value, int | float) and not isinstance(value, bool) if expected is float else
              isinstance(value, list) if expected is list else value is not None)
        if not ok:
            raise ConfigError(f"'{override.input_line}': {key} must be {_TYPES[expected]} (it is {current!r} in '{experiment.name}')")
        group, _, leaf = key.rpartition(".")
        if leaf == "kind" and group and "." not in group:
            choices = _group_options(experiment, group)
            kinds = sorted({str(OmegaConf.load(experiment.conf_dir / group / f"{c}.yaml").get("kind", c)) for c in choices
                            if (experiment.conf_dir / group / f"{c}.yaml").is_file()})
            if kinds and str(value) not in kinds:
                raise ConfigError(f"'{override.input_line}': unknown {key} for '{experiment.name}'; valid: {', '.join(kinds)}")


def _fill_and_check_rows(experiment: Experiment, cfg: DictConfig) -> None:
    """``eval.rows: ???`` is the SPEC's rows; named rows must be the SPEC's."""
    if "eval" not in cfg or "rows" not in cfg.eval.keys():  # `in` alone skips a ??? value
        return
    if OmegaConf.is_missing(cfg.eval, "rows"):
        cfg.eval.rows = experiment.spec.default_rows
    valid = [r for t in experiment.spec.tables.values() for r in t.rows]
    unknown = [str(r) for r in cfg.eval.rows if str(r) not in valid]
    if unknown:
        raise ConfigError(f"eval.rows: unknown rows {', '.join(unknown)} for '{experiment.name}'; valid: {', '.join(experiment.spec.default_rows)}")


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
            _check_override_types(base, overrides, experiment)
            _check_row_conflicts(experiment, base, overrides)
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
    _fill_and_check_rows(experiment, cfg)
    if cfg.get("preset_name") != preset:
        raise ConfigError(
            f"conf/preset/{preset}.yaml of '{experiment.name}' must set preset_name: {preset} (it sets {cfg.get('preset_name')!r})"
        )
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    """The fully resolved config as plain Python (what a run records)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
