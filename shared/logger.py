"""MetricLogger: every metric goes to the run's ``metrics.jsonl`` (the record) and is mirrored to wandb.

wandb mode, in order: ``logger=none`` (disabled), ``$WANDB_MODE`` if set, the config's
``logger.wandb.mode``, else online;
online falls back to offline when no API key is configured (``WANDB_API_KEY`` or ``wandb login``).
The tests set ``WANDB_MODE=disabled``. Offline runs live inside the run directory
(``<run>/wandb/offline-run-*``) and ``streamlab sync`` uploads them later.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

WANDB_MODES = ("online", "offline", "disabled")


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(configured: str | None = None) -> str:
    if configured == "disabled":  # logger=none is an explicit choice; the environment cannot turn it on
        return "disabled"
    mode = os.environ.get("WANDB_MODE") or configured or "online"
    mode = {"dryrun": "offline", "run": "online", "false": "disabled", "off": "disabled"}.get(mode, mode)
    if mode not in WANDB_MODES:
        raise ValueError(f"unknown wandb mode {mode!r}; valid: {', '.join(WANDB_MODES)}")
    if mode == "online" and not wandb_api_key_configured():
        mode = "offline"
    return mode


def _plain(value: Any) -> Any:
    """Tensors, numpy scalars and the like become JSON numbers."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    return value


class MetricLogger:
    """Append-only metric log for one run, mirrored to wandb.

    ``log(metrics, step=, scope=)``: a ``scope`` (a table row, say) prefixes the keys in wandb and
    gets its own step axis, so several rows trained inside one run each have clean curves.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        name: str,
        group: str,
        config: Mapping | None = None,
        mode: str | None = None,
        project: str = "streamlab",
        entity: str | None = None,
        tags: tuple[str, ...] = (),
        run_id: str | None = None,
        job_type: str | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")
        self.mode = resolve_wandb_mode(mode)
        self._scopes: set[str] = set()
        self._wandb_run = None
        if self.mode != "disabled":
            import wandb

            # A resumed StreamLab run continues the same wandb run (the id is kept in run.json), so
            # one wandb run holds the whole table, as metrics.jsonl does.
            self._wandb_run = wandb.init(
                project=project,
                entity=entity,
                name=name,
                group=group,
                job_type=job_type,
                tags=[t[:64] for t in tags],  # wandb's limit on a tag
                config=dict(config or {}),
                dir=str(self.run_dir),
                mode=self.mode,
                id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(silent=True),
            )

    def log(self, metrics: Mapping[str, Any], step: int | None = None, scope: str | None = None) -> None:
        values = {k: _plain(v) for k, v in metrics.items()}
        record = {"time": round(time.time(), 3), "scope": scope, "step": step, **values}
        self._file.write(json.dumps(record, default=str) + "\n")
        if self._wandb_run is not None:
            prefix = f"{scope}/" if scope else ""
            payload = {f"{prefix}{k}": v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if scope:
                if scope not in self._scopes:
                    self._wandb_run.define_metric(f"{scope}/step")
                    self._wandb_run.define_metric(f"{scope}/*", step_metric=f"{scope}/step")
                    self._scopes.add(scope)
                if step is not None:
                    payload[f"{scope}/step"] = step
                self._wandb_run.log(payload)
            else:
                self._wandb_run.log(payload, step=step)

    def summary(self, metrics: Mapping[str, Any], scope: str | None = None) -> None:
        """Final values (one per metric): a ``summary`` record here, the run summary in wandb."""
        values = {k: _plain(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"time": round(time.time(), 3), "scope": scope, "summary": values}, default=str) + "\n")
        if self._wandb_run is not None:
            prefix = f"{scope}/" if scope else ""
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._wandb_run.summary[f"{prefix}{k}"] = v

    def config(self, values: Mapping[str, Any]) -> None:
        """Add to the run's config (each table row's resolved config, say)."""
        if self._wandb_run is not None:
            self._wandb_run.config.update(dict(values), allow_val_change=True)

    def image(self, name: str, path: str | os.PathLike) -> None:
        """A saved figure, shown in wandb as an image (the file in the run directory is the record)."""
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({f"figures/{name}": wandb.Image(str(path))})

    def artifact(self, name: str, kind: str, paths: list[str | os.PathLike]) -> None:
        """Files of the run (results.csv) as a versioned wandb artifact."""
        if self._wandb_run is not None:
            import wandb

            artifact = wandb.Artifact(name, type=kind)
            for path in paths:
                artifact.add_file(str(path))
            self._wandb_run.log_artifact(artifact)

    @property
    def wandb_dir(self) -> str | None:
        return getattr(self._wandb_run, "dir", None) if self._wandb_run is not None else None

    def close(self, failed: bool = False) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish(exit_code=1 if failed else 0)
            self._wandb_run = None
        if not self._file.closed:
            self._file.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a ``metrics.jsonl`` (a truncated last line from a killed run is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
