# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Compare local runs
#
# Every run under `outputs/` (or `$STREAMLAB_OUTPUTS`), across experiments, with each table's
# headline metric side by side, the overrides that make each run differ from its preset, the mean
# and standard error over seeds of each configuration, and learning curves from each run's
# `metrics.jsonl`: the comparison to make before opening wandb. Same data as `streamlab runs`.

# %% tags=["parameters"]
from shared.notebook import smoke

SMOKE = smoke()
EXPERIMENT = None  # a name to look at one experiment only

# %%
from pathlib import Path

from IPython.display import display

from shared.paths import outputs_root
from shared.plots import plot_runs
from shared.registry import discover
from shared.runs import runs_table

specs = {name: experiment.spec for name, experiment in discover().items()}
runs = runs_table(EXPERIMENT, specs=specs)
if runs.empty:
    print("No local runs yet: run `make reproduce` first.")
else:
    display(runs)

# %%
for experiment, part in ([] if runs.empty else runs.groupby("experiment", sort=False)):
    part = part[part.status == "completed"].dropna(axis=1, how="all")
    columns = [c for c in part.columns if ":" in c]
    if part.empty or not columns:
        continue
    headline = {t.headline for t in specs[experiment].tables.values()} if experiment in specs else set()
    plot_runs(part, columns, title=f"{experiment}: {', '.join(sorted(headline))} per run")  # shown inline

# %% [markdown]
# ## Mean ± standard error over seeds
# Runs of one configuration (experiment, preset, overrides) that differ only in `trainer.seed`;
# s.e. = std / sqrt(seeds). A difference between two configurations is resolved only when it
# exceeds about twice its standard error.

# %%
from shared.runs import over_seeds

seeds = over_seeds(runs) if not runs.empty else runs
if seeds.empty:
    print("No configuration has completed runs with two seeds or more (e.g. `streamlab reproduce _template trainer.seed=1`).")
else:
    display(seeds)

# %% [markdown]
# ## Learning curves
# The training loss logged by every completed run of each experiment, per table row.

# %%
from shared.plots import plot_learning_curves
from shared.runs import learning_curves

METRICS = ("train_loss", "loss")  # what the training loops log per step (the template, the others)
for experiment, part in ([] if runs.empty else runs[runs.status == "completed"].groupby("experiment", sort=False)):
    for metric in METRICS:
        curves = {run: learning_curves(Path(outputs_root()) / experiment / run, metric) for run in part.run}
        curves = {run: c for run, c in curves.items() if c}
        if curves:
            plot_learning_curves(curves, metric, title=f"{experiment}: {metric}")
            break
