"""Reproduce the table: every row of SPEC.tables (or those eval.rows names), trained in one run, plus the figure.

Called by ``streamlab reproduce _template [--preset P]`` through shared.runner, which composes
the config, opens the run directory and records provenance. A resumed run skips finished rows.
"""

from __future__ import annotations

from shared.logger import read_metrics
from shared.plots import pyplot
from shared.runs import Run

from . import SPEC
from .train import train


def reproduce(cfg, run: Run) -> None:
    table = SPEC.tables["fit"]
    for row in cfg.eval.rows:  # the SPEC's rows unless eval.rows picks some
        if run.has_row("fit", row):
            continue
        metrics = train(run.compose_row("fit", row), run=run, scope=row)
        run.add_results("fit", row, {m: metrics[m] for m in table.metrics})
    run.save_figure(figure_fit(run), "fit")


def figure_fit(run: Run):
    """Left: test MSE over training per row. Right: final test MSE over the noise floor (1 = optimal)."""
    plt = pyplot()
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(9, 3.2))
    records = read_metrics(run.dir / "metrics.jsonl")
    for row in run.cfg.eval.rows:
        by_step = {r["step"]: r["test_mse"] for r in records if r.get("scope") == row and "test_mse" in r}
        steps = sorted(by_step)
        curves.plot(steps, [by_step[s] for s in steps], label=row)
    noise_var = run.cfg.data.noise_std**2
    curves.axhline(noise_var, color="k", ls="--", lw=1, label="noise floor")
    curves.set(xlabel="step", ylabel="test MSE", yscale="log", title="learning curves")
    curves.legend(fontsize=8)
    finals = {r["row"]: r["value"] for r in run.results if r["metric"] == "mse_over_floor"}
    bars.bar(list(finals), list(finals.values()), color="tab:blue")
    bars.axhline(1.0, color="k", ls="--", lw=1)
    bars.set(ylabel="test MSE / noise variance", yscale="log", title=f"final fit ({run.preset} preset)")
    fig.tight_layout()
    return fig
