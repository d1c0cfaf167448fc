"""The tidy results table: one metric value per row, the exchange format of every run.

Notebooks and ``streamlab reproduce`` pivot it into the paper's layout with ``pivot``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

COLUMNS = ("experiment", "table", "row", "metric", "value", "preset", "git_sha", "dirty", "device", "date", "run")


def to_csv(records: Iterable[Mapping]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({c: record.get(c, "") for c in COLUMNS})
    return buffer.getvalue()


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Records of a results.csv, with ``value`` as float."""
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    for record in records:
        record["value"] = float(record["value"])
    return records


def load(paths: Iterable[str | os.PathLike]):
    """Several results.csv files as one pandas DataFrame."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in paths if Path(p).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))


def pivot(df):
    """Wide view: one line per (experiment, table, row), one column per metric, rows in run order."""
    wide = df.pivot_table(index=["experiment", "table", "row"], columns="metric", values="value", aggfunc="first", sort=False)
    wide.columns.name = None
    return wide


def format_value(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def format_tables(df, specs: Mapping | None = None) -> str:
    """Plain-text tables, one per (experiment, table), metric columns in the SPEC's order."""
    if df.empty:
        return "(no results)"
    blocks = []
    for (experiment, table), part in df.groupby(["experiment", "table"], sort=False):
        wide = pivot(part).droplevel(["experiment", "table"])
        spec_table = specs.get(experiment, {}).get(table) if specs else None
        title = f"{experiment} / {table}"
        if spec_table is not None:
            ordered = [m for m in spec_table.metrics if m in wide.columns]
            wide = wide[ordered + [m for m in wide.columns if m not in ordered]]
            title += f": {spec_table.title}"
        preset = ", ".join(sorted(set(map(str, part["preset"]))))
        blocks.append(f"{title}  [preset {preset}]\n" + wide.to_string(float_format=format_value))
    return "\n\n".join(blocks)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample sd / sqrt n); the s.e. is NaN for fewer than two values.
    For a paired claim pass the differences (a - b on the same prompts, clips or seeds)."""
    import numpy as np

    x = np.asarray(list(values), dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def arrays_by_seed(run_dirs: Iterable[str | os.PathLike]) -> dict[int, dict]:
    """Published run copies (each a folder with ``config.yaml`` and ``arrays.npz``) -> ``{trainer.seed:
    {array name: array}}``. Runs of one seed that scored other rows on that seed's models (``models_from``)
    join into one entry; an array two of them hold is refused, as the pairing would depend on the order."""
    import numpy as np
    import yaml

    by_seed: dict[int, dict] = {}
    for run in map(Path, run_dirs):
        seed = int(yaml.safe_load((run / "config.yaml").read_text())["trainer"]["seed"])
        more, have = dict(np.load(run / "arrays.npz")), by_seed.setdefault(seed, {})
        if twice := sorted(more.keys() & have.keys()):
            raise ValueError(f"{run} holds {twice[0]}, which another run of seed {seed} holds too")
        have |= more
    return by_seed


def across_seeds(differences: Mapping[int, Iterable[float]], margin: float = 0.0, min_seeds: int = 3) -> dict:
    """A claim judged over training seeds. ``differences``: per training seed, the paired
    differences (a - b, one per prompt/clip; the claim says positive) on the same prompts.

    Per seed: the mean over prompts, its s.e. and the prompts' sd. Over seeds: the mean of the
    seeds' means with the standard error of that mean **across seeds** (it holds the spread between
    trainings, which the prompts' s.e. does not). Verdict: "met" when ``mean + margin`` exceeds
    2 s.e., "contradicted" when it is below -2 s.e., else "not resolved"; with fewer than
    ``min_seeds`` seeds always "not resolved". ``pooled``: mean and s.e. over every (prompt, seed)
    pair, the prompts' noise alone (the power of the table, not a verdict)."""
    import numpy as np

    per_seed, pairs = {}, []
    for seed, d in sorted(differences.items()):
        d = np.asarray(d, dtype=np.float64)
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        per_seed[seed] = {"mean": float(d.mean()), "se": sd / math.sqrt(len(d)), "sd": sd, "n": len(d)}
        pairs.append(d)
    means = np.array([s["mean"] for s in per_seed.values()])
    mean = float(means.mean()) if len(means) else math.nan
    se = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan
    if len(means) < min_seeds:
        verdict = f"not resolved (fewer than {min_seeds} seeds)"
    else:
        verdict = "met" if mean + margin > 2 * se else "contradicted" if mean + margin < -2 * se else "not resolved"
    pooled = np.concatenate(pairs) if pairs else np.zeros(0)
    return {"mean": mean, "se": se, "seeds": len(means), "margin": margin, "verdict": verdict, "per_seed": per_seed,
            "pooled_mean": float(pooled.mean()) if len(pooled) else math.nan,
            "pooled_se": float(pooled.std(ddof=1) / math.sqrt(len(pooled))) if len(pooled) > 1 else math.nan, "pairs": len(pooled)}
