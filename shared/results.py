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
