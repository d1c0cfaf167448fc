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
# # Template: regression to a known function
#
# The forkable template's table. Each row fits a model to `y = f(x) + noise` with known noise
# variance; the noise variance is the Bayes-optimal test error, so `mse_over_floor` = 1 is a perfect
# fit. This notebook only calls experiment code (`experiments/_template`), loads its records, plots
# and asserts.
#
# Run it at the `cpu` preset (about 10 s on 2 cores). CI runs it with `STREAMLAB_SMOKE=1`; a smoke
# run never overwrites the committed results in `results/`.

# %% tags=["parameters"]
from shared.notebook import smoke

SMOKE = smoke()  # STREAMLAB_SMOKE=1 -> smoke preset (CI)
# None: show the results published in results/ (seconds). A preset name ("cpu", "paper") runs it
# now into outputs/ (see the README for how long); PUBLISH = True then copies that run into results/.
PRESET = "smoke" if SMOKE else None
PUBLISH = False
OVERRIDES = []  # Hydra overrides, e.g. ["trainer.seed=1"]

# %%
from pathlib import Path

from IPython.display import Image, display

from shared.notebook import publish, show, with_reference

EXPERIMENT = Path.cwd().name  # this notebook's folder names its experiment (a fork runs itself)

shown = show(EXPERIMENT, PRESET, OVERRIDES)

# %% [markdown]
# ## The table, beside the reference
# The reference is theoretical rather than a paper's: the Bayes-optimal error (`mse_over_floor` = 1).

# %%
ours = shown.table()
reference = [{"row": "bayes-optimal", "metric": "mse_over_floor", "value": 1.0, "setting": "noise variance", "source": "theory"}]
table = with_reference(ours, reference)
display(table.round(4))

# %%
display(Image(filename=str(shown.figure("fit"))))

# %% [markdown]
# ## What the template claims
# The MLP beats the linear model, which beats the constant; the MLP comes close to the noise floor
# (within 1.5x at the cpu preset, 2.5x at smoke) and not suspiciously below it (which would mean
# leakage).

# %%
floor = ours[ours.metric == "mse_over_floor"].set_index("row")["value"]
assert floor["mlp"] < floor["linear"] < floor["constant"], floor
assert 0.8 < floor["mlp"] < (2.5 if SMOKE else 1.5), floor["mlp"]
print(f"mlp test MSE = {floor['mlp']:.3f} x noise floor; linear {floor['linear']:.1f}x; constant {floor['constant']:.1f}x")

# %%
if PUBLISH:
    print("published to", publish(shown.run, Path("results")))
