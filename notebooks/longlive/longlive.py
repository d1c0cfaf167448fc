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
# # Autoregressive streaming video on one causal host
#
# Self Forcing (Huang et al., 2025), LongLive, Deep Forcing and StreamDiffusionV2 stream video the
# same way: a **causal** diffusion transformer generates a chunk of frames in a few denoising steps
# while attending to earlier frames through a KV cache. Here one small host (16x16 px frames,
# patch 4, 2-frame chunks, 4 layers of width 64, a 3D RoPE on pre-RoPE cached keys) is built on the
# streaming core's `KVCache` and trained on procedural clips whose objects a colour detector reads
# back (`shared/procedural`).
#
# **Table `self_forcing` (this notebook, so far).** Three students with the same architecture,
# initialisation (a bidirectional teacher trained first) and 4-step sampler: **teacher forcing**
# (clean context), **diffusion forcing** (independently noised chunks), **self forcing** (its own
# KV-cached rollouts, a distribution-matching loss against the teacher). Each streams the same
# held-out prompts for 10x its 16-frame training length with a rolling window of frames.
# The LongLive, Deep Forcing and StreamDiffusionV2 tables are not built yet (see the README).

# %% tags=["parameters"]
import os

from shared.notebook import smoke

SMOKE = smoke()  # STREAMLAB_SMOKE=1: tiny models, a few steps: plumbing only (CI)
# None: show the results published in results/ (seconds). A preset name ("cpu", "paper") runs it
# now into outputs/ (see the README for how long); PUBLISH = True then copies that run into results/.
PRESET = "smoke" if SMOKE else None
PUBLISH = False
OVERRIDES = []
# LONGLIVE_RUN=<run dir>: show a completed run of `streamlab reproduce longlive` instead
SHOW_RUN = os.environ.get("LONGLIVE_RUN")

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Image, display

from shared.notebook import publish, show

EXPERIMENT = Path.cwd().name  # this notebook's folder names its experiment (a fork runs itself)

shown = show(EXPERIMENT, PRESET, OVERRIDES, run_dir=SHOW_RUN)
ours = shown.table()
value = ours.set_index(["table", "row", "metric"])["value"]
rows = list(dict.fromkeys(ours[ours.table == "self_forcing"].row))
arrays = np.load(shown.file("arrays.npz"))

# %% [markdown]
# ## Students by training recipe
# `validity_Nx`: prompted objects found at a plausible size over prompted + spurious objects, per
# frame, averaged over the last 16 frames of an N x 16-frame rollout; `drift_10x`: validity over
# the first 16 frames minus over the last 16 of 160; `dynamic_10x`: object speed over the data's;
# `boundary_jump`: pixel change across chunk boundaries over the change inside chunks (1 = seamless);
# `ms_per_frame`: one stream in steady state on this machine.

# %%
METRICS = ["validity_1x", "validity_4x", "validity_10x", "drift_10x", "dynamic_10x", "boundary_jump", "ms_per_frame"]
table = pd.DataFrame({m: [value.get(("self_forcing", r, m), np.nan) for r in rows] for m in METRICS}, index=rows)
display(table.round(3))

# %% [markdown]
# ## The claim: self forcing piles up less error over long rollouts
# Drift paired by prompt (same prompts, same noise), self forcing minus each baseline, with its
# standard error over prompts: met only when the difference is below -2 s.e. (one training seed).

# %%
claims = []
for key in (k for k in arrays.files if k.startswith("claim/")):
    mean, se = arrays[key]
    verdict = "met" if mean < -2 * se else ("contradicted" if mean > 2 * se else "not resolved")
    claims.append({"comparison": key.split("/")[1].replace("_minus_", " minus "), "drift difference": round(float(mean), 3),
                   "s.e.": round(float(se), 3), "verdict": verdict})
display(pd.DataFrame(claims))

# %% [markdown]
# ## Validity over the rollout and the first prompt's frames

# %%
display(Image(filename=str(shown.figure("drift"))))
display(Image(filename=str(shown.figure("strip"))))

# %% [markdown]
# ## Training
# Loss at the start and end of each model's training and its time on this machine (self forcing:
# the critic's flow-matching loss; its generator is updated every fifth iteration).

# %%
names = sorted({k.split("/")[1] for k in arrays.files if k.startswith("train/")})
display(pd.DataFrame({n: {k: float(arrays[f"train/{n}/{k}"]) for k in ("loss_first", "loss_last", "seconds", "steps")} for n in names}).T.round(4))
assert np.isfinite(ours.value).all()

# %%
if PUBLISH:
    print("published to", publish(shown.run, Path("results"), extras=["arrays.npz"]))
