"""One run = one new directory, never overwritten.

    outputs/<experiment>/<YYYYmmdd-HHMMSS>-<preset>[-N]/
      run.json          status (running | completed | failed), timings, summary, wandb mode
      config.yaml       the resolved config
      provenance.json   git sha and dirty flag, command, python, packages, hardware
      git.diff          only when the working tree was dirty
      metrics.jsonl     every logged metric (the record; wandb mirrors it)
      results.csv       the tidy results table
      figures/          matplotlib figures
      checkpoints/      atomic checkpoints, so a killed run resumes (``Run.resume``)
      wandb/            wandb's offline files, if wandb was not disabled

Every file is written atomically; the directory is created with an exclusive ``mkdir``, so two runs
started in the same second get ``-2``, ``-3`` suffixes instead of sharing a directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import provenance, runtime
from .errors import RunError
from .io import atomic_torch_save, atomic_write_json, atomic_write_text, load_checkpoint
from .logger import MetricLogger, read_metrics
from .paths import outputs_root
from .results import COLUMNS, read_csv, to_csv

RECORD_FILES = ("run.json", "config.yaml", "provenance.json", "metrics.jsonl", "results.csv")


def new_directory(parent: Path, stem: str) -> Path:
    """Create ``parent/stem`` (or ``stem-2``, ``stem-3``, ...) with an exclusive mkdir: never an existing one."""
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"could not create a new directory {stem} under {parent}")


def timestamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class Run:
    """A run directory and the objects that write into it. Use as a context manager.

    ``compose_row(table, row)`` gives a table row's config on top of this run's preset and overrides,
    so a reproduction runs every row of its tables inside one run.
    """

    def __init__(self, directory: Path, meta: dict, cfg: DictConfig, composer: Callable[..., DictConfig] | None = None):
        self.dir = directory
        self.meta = meta
        self.cfg = cfg
        self._composer = composer
        self._records: list[dict] = read_csv(directory / "results.csv") if (directory / "results.csv").is_file() else []
        self._git = meta["git"]
        self._device = provenance.device_name(runtime.resolve_device(str(cfg.get("trainer", {}).get("device", "auto"))))
        logger_cfg = cfg.get("logger", {}) if cfg is not None else {}
        wandb_cfg = logger_cfg.get("wandb", {}) or {}
        self.logger = MetricLogger(
            directory,
            name=f"{meta['experiment']}/{directory.name}",
            group=meta["experiment"],
            config=OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {},
            mode=wandb_cfg.get("mode"),
            project=wandb_cfg.get("project", "streamlab"),
            entity=wandb_cfg.get("entity"),
            tags=(f"preset:{meta['preset']}", *(f"override:{o}" for o in meta.get("overrides", ())), *meta.get("tags", ())),
            run_id=meta.setdefault("wandb_id", secrets.token_hex(4)),  # kept in run.json: a resume continues this run
            job_type=meta["experiment"],
        )
        self.meta["wandb_mode"] = self.logger.mode
        self._write_meta()

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        experiment: str,
        preset: str,
        cfg: DictConfig,
        *,
        overrides: list[str] | tuple[str, ...] = (),
        outputs: str | os.PathLike | None = None,
        composer: Callable[..., DictConfig] | None = None,
        tags: tuple[str, ...] = (),
        command: list[str] | None = None,
    ) -> Run:
        directory = new_directory(outputs_root(outputs) / experiment, f"{timestamp()}-{preset}")
        # ``command``: what makes this run again when the process does not say it (a notebook's kernel
        # says only ipykernel_launcher; shared.runner passes the streamlab command); else the process's own
        prov = provenance.collect(command=command)
        prov["process"] = list(sys.argv)
        diff = prov.pop("git_diff")
        atomic_write_text(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_json(directory / "provenance.json", prov)
        if diff:
            atomic_write_text(directory / "git.diff", diff)
        atomic_write_text(directory / "results.csv", to_csv([]))
        meta = {
            "experiment": experiment,
            "preset": preset,
            "overrides": list(overrides),
            "status": "running",
            "started": prov["date"],
            "git": prov["git"],
            "attempts": 1,
            "tags": list(tags),
        }
        return cls(directory, meta, cfg, composer)

    @classmethod
    def resume(cls, directory: str | os.PathLike, composer: Callable[..., DictConfig] | None = None) -> Run:
        """Reopen a run that did not complete; finished rows are kept, the rest run again from their checkpoints."""
        directory = Path(directory).resolve()
        meta_path = directory / "run.json"
        if not meta_path.is_file():
            raise RunError(f"{directory} is not a run directory (no run.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("status") == "completed":
            raise RunError(f"run {directory} already completed; start a new run instead of resuming it")
        cfg = OmegaConf.load(directory / "config.yaml")
        meta["status"] = "running"
        meta["attempts"] = meta.get("attempts", 1) + 1
        return cls(directory, meta, cfg, composer)

    # ---- writing ---------------------------------------------------------------------------
    @property
    def experiment(self) -> str:
        return self.meta["experiment"]

    @property
    def preset(self) -> str:
        return self.meta["preset"]

    def compose_row(self, table: str, row: str) -> DictConfig:
        """A table row's resolved config; recorded in the run (``configs/<table>_<row>.yaml``) and in wandb."""
        if self._composer is None:
            raise RunError("this run was created without a config composer; use shared.runner.reproduce")
        cfg = self._composer(row=(table, row))
        path = self.dir / "configs" / f"{table}_{row}.yaml"
        if not path.is_file():
            atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
            self.logger.config({"rows": {f"{table}/{row}": OmegaConf.to_container(cfg, resolve=True)}})
        return cfg

    def has_row(self, table: str, row: str) -> bool:
        """True when results for this row are already recorded (a resumed run skips it)."""
        return any(r["table"] == table and r["row"] == row for r in self._records)

    def add_results(self, table: str, row: str, metrics: Mapping[str, float]) -> None:
        """Record a table row's metrics (rewrites results.csv atomically) and mirror them as a summary."""
        date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for metric, value in metrics.items():
            self._records.append(
                {
                    "experiment": self.experiment,
                    "table": table,
                    "row": row,
                    "metric": metric,
                    "value": float(value),
                    "preset": self.preset,
                    "git_sha": self._git["sha"],
                    "dirty": self._git["dirty"],
                    "device": self._device,
                    "date": date,
                    "run": self.dir.name,
                }
            )
        atomic_write_text(self.dir / "results.csv", to_csv(self._records))
        self.logger.summary(metrics, scope=f"{table}/{row}")

    @property
    def results(self) -> list[dict]:
        return list(self._records)

    def save_figure(self, fig, name: str) -> Path:
        from .plots import save_figure

        path = save_figure(fig, self.dir / "figures" / f"{name}.png")
        self.logger.image(name, path)
        return path

    def checkpoint_path(self, name: str) -> Path:
        return self.dir / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, name: str, state: Any) -> Path:
        path = self.checkpoint_path(name)
        atomic_torch_save(path, state)
        return path

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, saved as ``checkpoints/result_<key>.pt``: a resumed run loads a finished
        piece of work (one row on one clip, one chunk size) instead of doing it again."""
        path = self.checkpoint_path(f"result_{key}")
        if path.is_file():
            return load_checkpoint(path)
        value = compute()
        self.save_checkpoint(f"result_{key}", value)
        return value

    def _write_meta(self) -> None:
        atomic_write_json(self.dir / "run.json", self.meta)

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Run:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None
        if not failed:
            self.logger.artifact(f"{self.experiment}-results", "results", [self.dir / "results.csv"])
        self.logger.close(failed=failed)
        self.meta["status"] = "interrupted" if exc_type is KeyboardInterrupt else ("failed" if failed else "completed")
        if failed:
            self.meta["error"] = f"{exc_type.__name__}: {exc}"
        else:  # a resumed run that completes no longer carries the error of the attempt before
            self.meta.pop("error", None)
        self.meta["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.meta["duration_s"] = round(self.meta.get("duration_s", 0.0) + time.monotonic() - self._t0, 2)
        self._write_meta()

    def summary_line(self, headline: Mapping[str, str] | None = None) -> str:
        """One line for the end of a run: where it is and its headline numbers."""
        parts = [f"[{self.experiment}] {self.meta['status']} in {self.meta.get('duration_s', 0):.1f}s"]
        for table, metric in (headline or {}).items():
            for r in self._records:
                if r["table"] == table and r["metric"] == metric:
                    parts.append(f"{r['row']} {metric}={r['value']:.4g}")
        parts.append(f"-> {self.dir}")
        return " | ".join(parts)

    @property
    def resume_command(self) -> str:
        return f"streamlab reproduce {self.experiment} --resume {self.dir}"


# ---- reading runs back ------------------------------------------------------------------------
def list_runs(experiment: str | None = None, outputs: str | os.PathLike | None = None) -> list[Path]:
    """Run directories (those with a run.json), oldest first."""
    root = outputs_root(outputs)
    if not root.is_dir():
        return []
    pattern = f"{experiment}/*/run.json" if experiment else "*/*/run.json"
    return sorted((p.parent for p in root.glob(pattern)), key=lambda d: (d.name, d.parent.name))


def runs_table(experiment: str | None = None, outputs: str | os.PathLike | None = None, specs: Mapping | None = None):
    """One line per run with its headline metrics side by side (what ``streamlab runs`` prints).

    ``specs`` maps experiment name -> ExperimentSpec; a table's headline metric becomes columns
    ``<row>:<metric>``. Without a spec every metric of the run is shown.
    """
    import pandas as pd

    lines = []
    for directory in list_runs(experiment, outputs):
        meta = json.loads((directory / "run.json").read_text())
        line = {
            "experiment": meta.get("experiment", directory.parent.name),
            "run": directory.name,
            "preset": meta.get("preset"),
            "status": meta.get("status"),
            "commit": (meta.get("git", {}).get("sha") or "")[:8] + ("+dirty" if meta.get("git", {}).get("dirty") else ""),
            "seconds": meta.get("duration_s"),
            # what differs from the preset (the seed apart: runs that differ only in it are one configuration)
            "overrides": " ".join(o for o in meta.get("overrides", []) if not o.startswith(SEED_KEY + "=")),
            "seed": _seed(directory),
        }
        spec = (specs or {}).get(line["experiment"])
        results = read_csv(directory / "results.csv") if (directory / "results.csv").is_file() else []
        for r in results:
            table = spec.tables.get(r["table"]) if spec else None
            if table is None or r["metric"] == table.headline:
                line[f"{r['row']}:{r['metric']}"] = r["value"]
        lines.append(line)
    return pd.DataFrame(lines)


def sweep_tags() -> tuple[str, ...]:
    """Inside a Hydra multirun job: the sweep (its folder's name) and the job number, as wandb tags,
    so that a sweep's runs can be found together; () elsewhere."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):  # not inside a Hydra app
        return ()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ()
    return (f"sweep:{Path(hydra_cfg.sweep.dir).name}", f"job:{hydra_cfg.job.num}")


SEED_KEY = "trainer.seed"


def _seed(directory: Path) -> int | None:
    """The run's training seed, from its resolved config (an override or the preset's default)."""
    path = directory / "config.yaml"
    if not path.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(path), SEED_KEY, default=None)
    return None if value is None else int(value)


def over_seeds(runs) -> Any:
    """Completed runs of one configuration (experiment, preset, overrides) across seeds: for each
    metric column the mean and its standard error (std / sqrt(n), n = seeds), with n; one line per
    configuration that has at least two seeds."""
    import pandas as pd

    done = runs[runs.status == "completed"] if "status" in runs else runs
    metrics = [c for c in done.columns if ":" in c]
    lines = []
    for (experiment, preset, overrides), part in done.groupby(["experiment", "preset", "overrides"], sort=False):
        if part.seed.nunique() < 2:
            continue
        line = {"experiment": experiment, "preset": preset, "overrides": overrides, "seeds": part.seed.nunique()}
        for column in metrics:
            values = part[column].dropna()
            if len(values) >= 2:
                line[f"{column} mean"] = values.mean()
                line[f"{column} se"] = values.std(ddof=1) / len(values) ** 0.5
        lines.append(line)
    return pd.DataFrame(lines)


def learning_curves(directory: str | os.PathLike, metric: str) -> dict[str, tuple[list, list]]:
    """{scope (a table row): (steps, values)} of ``metric`` from a run's metrics.jsonl."""
    curves: dict[str, tuple[list, list]] = {}
    for record in read_metrics(Path(directory) / "metrics.jsonl"):
        if metric in record and record.get("step") is not None:
            steps, values = curves.setdefault(record.get("scope") or "", ([], []))
            steps.append(record["step"])
            values.append(record[metric])
    return curves


__all__ = ["Run", "RECORD_FILES", "COLUMNS", "list_runs", "runs_table", "over_seeds", "learning_curves", "sweep_tags"]
