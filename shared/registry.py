"""The experiment registry: every ``experiments/<name>/__init__.py`` declares one ``SPEC``.

The folder name is the experiment's name, so ``cp -r experiments/_template experiments/my_method``
registers ``my_method`` with no other edit. Names starting with ``_`` are templates: listed, runnable,
and left out of ``reproduce all`` once a real experiment exists.

An experiment's ``__init__`` only declares its SPEC (no torch import), so discovery stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .errors import StreamlabError, UnknownExperiment
from .paths import EXPERIMENTS_DIR

PRESETS = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class Table:
    """One table of the paper that the experiment reproduces.

    ``rows`` are the methods (each has ``conf/experiment/<table>_<row>.yaml``); ``metrics`` are the
    columns in display order; ``headline`` is the metric ``streamlab runs`` shows side by side, and
    ``higher_is_better`` says which way it points.
    """

    title: str
    rows: tuple[str, ...]
    metrics: tuple[str, ...]
    headline: str
    higher_is_better: bool = False

    def __post_init__(self):
        if self.headline not in self.metrics:
            raise ValueError(f"headline metric {self.headline!r} is not one of metrics {self.metrics}")


@dataclass(frozen=True)
class ExperimentSpec:
    title: str
    paper: str
    description: str
    tables: dict[str, Table]
    presets: tuple[str, ...] = PRESETS
    # A short note per preset: what it runs and roughly how long (shown by `streamlab list`).
    preset_notes: dict[str, str] = field(default_factory=dict)

    @property
    def default_rows(self) -> list[str]:
        """The rows a run computes unless ``eval.rows`` says otherwise: the first table's (the other
        tables, such as StreamDiT's reference, are computed beside them). Configs leave
        ``eval.rows: ???`` so that the rows are declared here only."""
        return list(next(iter(self.tables.values())).rows)


@dataclass(frozen=True)
class Experiment:
    name: str
    spec: ExperimentSpec
    path: Path

    @property
    def package(self) -> str:
        return f"experiments.{self.name}"

    @property
    def conf_dir(self) -> Path:
        return self.path / "conf"

    @property
    def is_template(self) -> bool:
        return self.name.startswith("_")

    def module(self, name: str) -> ModuleType:
        """Import one of the experiment's modules, e.g. ``module("reproduce")``."""
        return importlib.import_module(f"{self.package}.{name}")


def discover(root: Path = EXPERIMENTS_DIR) -> dict[str, Experiment]:
    """All experiment folders below ``root``, by name."""
    found = {}
    for path in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
        if path.name == "__pycache__" or not path.name.isidentifier():
            continue
        module = importlib.import_module(f"experiments.{path.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, ExperimentSpec):
            raise StreamlabError(
                f"experiments/{path.name}/__init__.py must define SPEC = ExperimentSpec(...) "
                f"(see experiments/_template/__init__.py)"
            )
        found[path.name] = Experiment(name=path.name, spec=spec, path=path)
    return found


def get(name: str) -> Experiment:
    experiments = discover()
    if name not in experiments:
        raise UnknownExperiment(f"unknown experiment {name!r}; valid: {', '.join(experiments)} (or 'all')")
    return experiments[name]


def default_selection() -> list[Experiment]:
    """What ``reproduce all`` runs: every real experiment, or the templates while there is none."""
    experiments = list(discover().values())
    real = [e for e in experiments if not e.is_template]
    return real or experiments
