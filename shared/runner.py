"""``reproduce()``: compose an experiment's config, open a run, call its ``reproduce(cfg, run)``.

This is what ``streamlab reproduce`` and the notebooks call; an experiment only provides
``experiments/<name>/reproduce.py`` with ``def reproduce(cfg, run) -> None``, and optionally
``def check_config(cfg)``, which raises a ``ConfigError`` or ``DataError`` before any run directory exists.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from . import config, registry, runtime
from .errors import ConfigError, RunError, StreamlabError
from .io import atomic_copy, atomic_write_json, atomic_write_text
from .paths import outputs_root
from .results import format_tables, load, to_csv
from .runs import Run, new_directory, timestamp


def headlines(experiment: registry.Experiment) -> dict[str, str]:
    return {name: table.headline for name, table in experiment.spec.tables.items()}


def reproduce(
    name: str,
    preset: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    outputs: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
) -> Run:
    """Run one experiment's reproduction and return the finished ``Run``.

    With ``resume=<run dir>`` the preset and overrides come from that run, completed rows are kept
    and the rest continue from their checkpoints.
    """
    experiment = registry.get(name)
    if resume is not None:
        meta_path = Path(resume) / "run.json"
        if not meta_path.is_file():
            raise RunError(f"cannot resume {resume}: not a run directory (no run.json)")
        meta = json.loads(meta_path.read_text())
        if meta["experiment"] != name:
            raise RunError(f"cannot resume {resume} as '{name}': it is a run of '{meta['experiment']}'")
        preset, overrides = meta["preset"], meta["overrides"]
    composer = partial(config.compose, experiment, preset, list(overrides))
    cfg = composer()
    try:  # a device that is not here is a mistake in the command: one line, before any run directory exists
        runtime.resolve_device(str(cfg.trainer.get("device", "auto")))
    except RuntimeError as error:
        raise ConfigError(str(error)) from None
    module = experiment.module("reproduce")
    if hasattr(module, "check_config"):  # the experiment's own checks, also before any run directory exists
        module.check_config(cfg)
    if resume is not None:
        run = Run.resume(resume, composer=composer)
    else:
        run = Run.create(experiment.name, preset, cfg, overrides=list(overrides), outputs=outputs, composer=composer,
                         command=["streamlab", "reproduce", experiment.name, "--preset", preset, *overrides])
    try:
        with run:
            runtime.setup(cfg.trainer)
            module.reproduce(cfg, run)
    finally:
        print(run.summary_line(headlines(experiment)), flush=True)
        if run.meta["status"] in ("interrupted", "failed"):
            print(f"resume with: {run.resume_command}", file=sys.stderr, flush=True)
    return run


def reproduce_many(
    names: Sequence[str] | str,
    preset: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    outputs: str | os.PathLike | None = None,
) -> tuple[list[Run], list[str], Path | None]:
    """Reproduce several experiments ('all' = the default selection), then write one combined table.

    A failing experiment does not stop the others; the failures are returned by name. The combined
    table goes to ``outputs/tables/<date-time>-<preset>/`` (results.csv, results.txt, figures/,
    runs.json linking each experiment's run directory); none is written when one failed.
    """
    if names == "all":
        selected = registry.default_selection()
    else:
        selected = [registry.get(n) for n in ([names] if isinstance(names, str) else names)]
    for experiment in selected:  # fail fast on bad presets or keys, before any long run starts
        config.compose(experiment, preset, list(overrides))
    runs, failed = [], []
    for experiment in selected:
        try:
            runs.append(reproduce(experiment.name, preset, overrides, outputs=outputs))
        except StreamlabError:
            raise
        except Exception:  # a bug in one experiment: report it, keep going with the others
            traceback.print_exc()
            failed.append(experiment.name)
    if failed:  # a combined table with holes would read as a complete one
        print(f"no combined table: {', '.join(failed)} failed", flush=True)
        return runs, failed, None
    combined = _write_combined(runs, preset, outputs, {e.name: e.spec.tables for e in selected})
    return runs, failed, combined


def _write_combined(runs: list[Run], preset: str, outputs, specs) -> Path:
    directory = new_directory(outputs_root(outputs) / "tables", f"{timestamp()}-{preset}")
    records = [r for run in runs for r in run.results]
    atomic_write_text(directory / "results.csv", to_csv(records))
    text = format_tables(load([directory / "results.csv"]), specs)
    atomic_write_text(directory / "results.txt", text + "\n")
    index = []
    for run in runs:  # the figures travel with the table: the directory stands on its own
        figures = []
        for figure in sorted((run.dir / "figures").glob("*.png")):
            figures.append(atomic_copy(figure, directory / "figures" / f"{run.experiment}-{figure.name}").name)
        index.append({"experiment": run.experiment, "run": str(run.dir), "figures": figures})
    atomic_write_json(directory / "runs.json", index)
    print("\n" + text + f"\n\ncombined table: {directory / 'results.csv'}", flush=True)
    return directory
