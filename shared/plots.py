"""Matplotlib helpers: headless-safe, atomic figure saving, and the run-comparison plot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .io import atomic_path


def _headless() -> None:
    # In scripts and tests there is no display: pick Agg before pyplot is first imported.
    # In a notebook the inline backend is already chosen; leave it.
    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
        import matplotlib

        matplotlib.use("Agg")


def pyplot():
    _headless()
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path


def plot_runs(runs, metric_columns: list[str], title: str = ""):
    """Grouped bars: one group per run, one bar per ``<row>:<metric>`` column. Returns the figure."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(runs) + 2), 3.2))
    width = 0.8 / max(1, len(metric_columns))
    for i, column in enumerate(metric_columns):
        xs = [j + i * width for j in range(len(runs))]
        ax.bar(xs, runs[column], width=width, label=column)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(runs))])
    ax.set_xticklabels([f"{r.run}\n{r.preset}" for r in runs.itertuples()], fontsize=7)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_learning_curves(curves_by_run: dict[str, dict[str, tuple[list, list]]], metric: str, title: str = ""):
    """One panel per table row, one line per run: ``metric`` against the training step (from each
    run's metrics.jsonl, see ``shared.runs.learning_curves``). Returns the figure."""
    plt = pyplot()
    scopes = sorted({scope for curves in curves_by_run.values() for scope in curves})
    fig, axes = plt.subplots(1, max(1, len(scopes)), figsize=(3.2 * max(1, len(scopes)), 2.8), squeeze=False)
    for ax, scope in zip(axes[0], scopes):
        for run, curves in curves_by_run.items():
            if scope in curves:
                ax.plot(*curves[scope], label=run, lw=1)
        ax.set(title=scope or "(run)", xlabel="step", ylabel=metric)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
