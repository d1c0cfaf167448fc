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
# headline metric side by side: the comparison to make before opening wandb. Same data as
# `streamlab runs`.

# %% tags=["parameters"]
from shared.notebook import smoke

SMOKE = smoke()
EXPERIMENT = None  # a name to look at one experiment only

# %%
from IPython.display import display

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
