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
# **Tables.** `self_forcing`: three students with the same architecture, initialisation (a
# bidirectional teacher trained first) and 4-step sampler: **teacher forcing** (clean context),
# **diffusion forcing** (independently noised chunks), **self forcing** (its own KV-cached rollouts,
# a distribution-matching loss against the teacher); each streams the same held-out prompts for 10x
# its 16-frame training length with a rolling window of frames. `longlive`: the self-forcing student
# under LongLive's short window with and without a frame sink; `longlive_switch`: a prompt switch
# with the cache kept, cleared or re-cached; `deep_forcing`: deep sink (re-aligned or not) against a
# rolling window and a shallow sink at 12x the training length. `streamdiffusion_v2`: four tools on
# the shipped student (not rows of the run): SLO-aware batching, the pipeline over ranks, the stream
# batch, the motion-aware noise controller and the sink tokens, each paired against its strongest baseline.

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
def table_of(name):
    names = list(dict.fromkeys(ours[ours.table == name].row))
    metrics = list(dict.fromkeys(ours[ours.table == name].metric))
    return pd.DataFrame({m: [value.get((name, r, m), np.nan) for r in names] for m in metrics}, index=names)


display(table_of("self_forcing").round(3))

# %% [markdown]
# ## LongLive: a frame sink inside a short window, and what to do with the cache at a prompt switch
# `frames_seen`: frames a chunk attends to (the attention cost); `ms_per_frame` just after the first
# 16 frames and `ms_per_frame_last` over the last 16 of 160 (flat cost: equal). At the switch
# (frame 48 of 96, object 0 changes colour): `frames_to_follow` until the detector sees the new prompt
# for two frames in a row (censored at the 48 frames left), `followed` the share of prompts that did,
# `switch_jump` the pixel change across the switch over the clip's median change per frame.

# %%
display(table_of("longlive").round(3))
display(table_of("longlive_switch").round(3))
display(Image(filename=str(shown.figure("switch_strip"))))

# %% [markdown]
# ## Deep Forcing: deep sink at 12x the training length
# Training-free on the self-forcing student: 8 of the 16 frames a chunk sees are the first frames,
# their RoPE positions moved to sit just before the window (`deep_sink`) or left where they were
# (`deep_sink_unaligned`), against a rolling window and a 2-frame shallow sink.

# %%
display(table_of("deep_forcing").round(3))

# %% [markdown]
# ## The claims, paired by prompt
# Each difference is row minus baseline on the same prompts and noise, with its standard error over
# prompts (one training seed): "lower" / "higher" only beyond 2 s.e., else not resolved. Drift and
# frames to follow: lower is better; motion (dynamic): higher is better.

# %%
claims = []
for key in (k for k in arrays.files if k.startswith("claim/")):
    mean, se = arrays[key]
    verdict = "lower" if mean < -2 * se else ("higher" if mean > 2 * se else "not resolved")
    claims.append({"comparison": key.split("/")[1].replace("_minus_", " minus "), "metric": key.split("/")[2], "difference": round(float(mean), 3),
                   "s.e.": round(float(se), 3), "verdict": verdict})
display(pd.DataFrame(claims))

# %% [markdown]
# ## The claims over training seeds
# The same claims over several trainings of every model (`trainer.seed`), each scored on the same
# held-out prompts and noise. Each claim is written so that the paper's direction is positive (drift
# and frames to follow: baseline minus method; motion: method minus baseline). Per seed, the mean
# paired difference over prompts with its s.e.; over seeds, the mean of the seeds' means with the
# s.e. **across seeds** (it holds the training-to-training spread); "met" beyond 2 s.e. in the paper's
# direction, "contradicted" beyond 2 s.e. against it, and no verdict with fewer than 3 seeds. The
# last column pools every (prompt, seed) pair (the prompts' noise alone). Published copies: `results/`
# (trainer.seed 0) and `results/seeds/seed<k>/`
# (`streamlab reproduce longlive --preset cpu trainer.threads=1 trainer.seed=<k>`, about 40 minutes on
# one thread); `LONGLIVE_SEED_RUNS=dir1:dir2` reads finished runs instead.

# %%
import yaml

from shared.results import across_seeds

SEED_CLAIMS = [  # (method, baseline, per-prompt array, sign, claim): sign * (method - baseline) > 0 is the paper's direction
    ("self_forcing", "diffusion_forcing", "drift_per_prompt", -1, "self forcing drifts less than diffusion forcing"),
    ("self_forcing", "teacher_forcing", "drift_per_prompt", -1, "self forcing drifts less than teacher forcing"),
    ("sink_window", "short_window", "drift_per_prompt", -1, "(LongLive) a frame sink drifts less in the same window"),
    ("sink_window_long_tuned", "sink_window", "drift_per_prompt", -1, "(LongLive) streaming long tuning drifts less"),
    ("switch_recache", "switch_keep", "delays", -1, "(LongLive) re-cache follows a new prompt sooner than keep"),
    ("switch_recache", "switch_clear", "delays", -1, "(LongLive) re-cache follows sooner than clearing the cache"),
    ("deep_sink", "rolling", "drift_per_prompt", -1, "(Deep Forcing) a deep sink drifts less than a rolling window"),
    ("deep_sink", "rolling", "dynamic_per_prompt", +1, "(Deep Forcing) a deep sink keeps more motion"),
    ("deep_sink", "deep_sink_unaligned", "drift_per_prompt", -1, "(Deep Forcing) re-aligned sink positions drift less"),
    ("compressed", "deep_sink", "drift_per_prompt", -1, "(Deep Forcing) participative compression drifts less at equal budget"),
]
seed_dirs = [Path(d) for d in os.environ["LONGLIVE_SEED_RUNS"].split(":")] if os.environ.get("LONGLIVE_SEED_RUNS") else \
    sorted(Path("results/seeds").glob("seed*"))
first = Path("results") if SMOKE else shown.dir  # a smoke run scores other prompts: the published cpu seeds only
runs = [first] + [d for d in seed_dirs if (d / "arrays.npz").is_file() and d.resolve() != first.resolve()]
configs = {d: yaml.safe_load((d / "config.yaml").read_text()) for d in runs}
assert len({(c["eval"]["seed"], c["eval"]["prompts"]) for c in configs.values()}) == 1, "the runs scored different prompts"
by_seed = {int(c["trainer"]["seed"]): np.load(d / "arrays.npz") for d, c in configs.items()}
assert len(by_seed) == len(runs), "two of the runs share a training seed"


def claims_over_seeds(by_seed: dict, seed_claims: list) -> None:
    """Per seed and over seeds (``across_seeds``), each claim in the paper's direction."""
    over_seeds, per_seed = [], []
    for method, baseline, key, sign, claim in seed_claims:
        scored = {seed: sign * (arr[f"{method}/{key}"] - arr[f"{baseline}/{key}"]) for seed, arr in by_seed.items()
                  if f"{method}/{key}" in arr.files and f"{baseline}/{key}" in arr.files}
        c = across_seeds(scored)
        per_seed += [{"claim": claim, "seed": seed, "difference": f"{s['mean']:+.3f} ± {s['se']:.3f}", "prompts": s["n"]} for seed, s in c["per_seed"].items()]
        over_seeds.append({"claim": claim, "metric": key.removesuffix("_per_prompt"), "difference (paper's direction +)": f"{c['mean']:+.3f} ± {c['se']:.3f}",
                           "seeds": c["seeds"], "verdict": c["verdict"],
                           "pooled over prompt x seed pairs": f"{c['pooled_mean']:+.3f} ± {c['pooled_se']:.3f} ({c['pairs']})"})
    display(pd.DataFrame(per_seed).pivot(index="claim", columns="seed", values="difference").loc[[c[-1] for c in seed_claims]])
    display(pd.DataFrame(over_seeds))


claims_over_seeds(by_seed, SEED_CLAIMS)

# %% [markdown]
# ## Deep Forcing's variants over training seeds
# The deep-forcing rows again, with three more: `deep_sink_gap` (the official code's re-aligned sink
# ends one chunk before the window, s* = f_cur - L_tail - S) against `deep_sink_short` (the sink
# adjacent to the window) at the same 5-frame window (the gap must fit the 16-frame horizon), and
# `compressed_tokens` (participative compression keeping single tokens, as the official code does)
# against the frame-level `compressed` and the deep sink at the same 14-frame budget. Scored on the
# very self-forcing students of the three seeds (`models_from`; seed 0 retrained from the same
# commit's recipe), published in `results/deep_forcing/seed<k>/`
# (`streamlab reproduce longlive --preset cpu trainer.threads=1 trainer.seed=<k> 'eval.rows=[rolling,shallow_sink,deep_sink,deep_sink_unaligned,compressed,deep_sink_short,deep_sink_gap,compressed_tokens]' models_from=<that seed's run>`).

# %%
VARIANT_CLAIMS = [
    ("deep_sink_gap", "deep_sink_short", "drift_per_prompt", -1, "(Deep Forcing) the code's one-chunk sink gap drifts less than an adjacent sink"),
    ("deep_sink_gap", "deep_sink_short", "dynamic_per_prompt", +1, "(Deep Forcing) the code's one-chunk sink gap keeps more motion"),
    ("compressed_tokens", "deep_sink", "drift_per_prompt", -1, "(Deep Forcing) token-level compression drifts less at equal budget"),
    ("compressed_tokens", "deep_sink", "dynamic_per_prompt", +1, "(Deep Forcing) token-level compression keeps more motion"),
    ("compressed_tokens", "compressed", "drift_per_prompt", -1, "token-level compression drifts less than frame-level"),
]
variant_dirs = sorted(Path("results/deep_forcing").glob("seed*"))
if variant_dirs:
    variants = {int(yaml.safe_load((d / "config.yaml").read_text())["trainer"]["seed"]): np.load(d / "arrays.npz") for d in variant_dirs}
    rows_df = ["rolling", "shallow_sink", "deep_sink", "deep_sink_unaligned", "compressed", "deep_sink_short", "deep_sink_gap", "compressed_tokens"]
    display(pd.DataFrame({seed: {row: float(np.mean(arr[f"{row}/drift_per_prompt"])) for row in rows_df} for seed, arr in variants.items()})
            .rename(columns=lambda s: f"drift 12x, seed {s}").round(3))
    claims_over_seeds(variants, VARIANT_CLAIMS)

# %% [markdown]
# ## StreamDiffusionV2 (table `streamdiffusion_v2`)
# Each component against its strongest fair baseline of the same tool run, gathered from the four
# tools' published JSON by `python -m experiments.longlive streamdiffusion_v2` (each row names the
# commit its JSON came from). Effects are differences (null 0) or ratios (null 1) with their standard
# errors; "met" / "contradicted" when beyond 2 s.e. on the better / worse side of the null; a measured
# side the paper claims nothing about (the stream batch's latency, its quality against the sampler
# the student was trained with) reads "better" / "worse". The sections below show each tool's rows.

# %%
from experiments.longlive.streamdiffusion_v2 import table as sdv2_table

sdv2_claims, sdv2_missing = sdv2_table(Path("results"))
sdv2 = pd.DataFrame([{"row": c.row, "against": c.against, "metric": c.metric, "better": c.better,
                      "effect": c.effect_text, "s.e.": f"{c.se:.2g}",
                      "verdict": c.verdict, "source": f"{c.source} ({c.commit})"} for c in sdv2_claims])
display(sdv2.set_index(["row", "against", "metric"]))
for line in sdv2_missing:
    print("not in the table (no file):", line)

# %% [markdown]
# ## StreamDiffusionV2: SLO-aware batching and the motion-aware noise controller
# Both are tools on the shipped self-forcing student, published as JSON beside the run
# (`python -m experiments.longlive serving --seeds 0 1 2 3 4 5 6 7 8 9 --out results/serving.json`,
# `python -m experiments.longlive v2v --clips 32 --seeds 0 1 2 3 4 --json results/v2v.json`; the
# README gives their commits). Serving: one simulated worker, paired over arrival seeds. Video-to-video:
# an edit (object 0 recoloured) of slow (0.5x) and fast (2x) held-out clips; each chunk's input is
# noised to a strength and denoised; rows are fixed strengths, one fixed strength matched to the
# controller's mean, and the controller (less noise for more motion). Position error (px) against the
# input's true positions: lower is better; edit (share of frames following the new prompt): higher;
# seams (change across chunk boundaries over the change inside): lower. Verdicts beyond 2 s.e.

# %%
import json

import matplotlib.pyplot as plt


def verdict(mean, se):
    return "lower" if mean < -2 * se else ("higher" if mean > 2 * se else "not resolved")


served = Path("results/serving.json")
if served.is_file():
    serving = json.loads(served.read_text())
    display(pd.DataFrame({s: {k: float(np.mean(v)) for k, v in r.items()} for s, r in serving["per_seed"].items()}).T.round(3))
    display(pd.DataFrame([{"comparison": name, "metric": k, "difference": round(m, 3), "s.e.": round(se, 3), "verdict": verdict(m, se)}
                          for name, c in serving["paired"].items() for k, (m, se) in c.items()]))
v2v_file = Path("results/v2v.json")
if v2v_file.is_file():
    v2v = json.loads(v2v_file.read_text())
    metrics = ("strength", "position_error", "found", "edit", "seams")
    display(pd.DataFrame([{"row": row, "speed": speed, **{k: float(np.nanmean(r[k])) for k in metrics}}
                          for row, by_speed in v2v["rows"].items() for speed, r in by_speed.items()]).set_index(["row", "speed"]).round(3))
    display(pd.DataFrame([{"comparison": name, "metric": k, "difference": round(m, 4), "s.e.": round(se, 4), "verdict": verdict(m, se)}
                          for name, c in v2v["paired"].items() for k, (m, se) in c.items() if k in ("position_error", "edit", "seams")]))
    fig, axes = plt.subplots(1, len(v2v["speeds"]), figsize=(4.5 * len(v2v["speeds"]), 3.4), sharey=True)
    for ax, speed in zip(np.atleast_1d(axes), v2v["speeds"]):
        for row, by_speed in v2v["rows"].items():
            r = by_speed[f"{speed:g}"]
            ax.scatter(np.mean(r["edit"]), np.nanmean(r["position_error"]), marker="*" if row == "motion" else "o", s=80 if row == "motion" else 30)
            ax.annotate(row, (np.mean(r["edit"]), np.nanmean(r["position_error"])), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(title=f"input speed {speed:g}x", xlabel="edit (higher is better)")
    np.atleast_1d(axes)[0].set_ylabel("position error, px (lower is better)")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## StreamDiffusionV2: the stream batch
# `python -m experiments.longlive stream_batch` (published as `results/stream_batch.json`; the README
# gives its commit). n rows = n denoising levels in flight, **one forward per chunk** over all rows,
# each level with its own KV cache (no clean context pass), against the two sequential samplers on
# the same clips and noise: `self_forcing` (the sampler the student was trained with: n steps plus a
# context pass per chunk) and `levels` (n steps, per-level caches: the stream batch's own outputs,
# equal in the run). Strength 0.8 = 2 levels (StreamDiffusionV2's default), 1.0 = text-to-video's 4
# (there the input is not seen, so position error does not apply). Timings are one thread of a
# shared 2-core CPU: read the ratios (paired over timing passes), not the milliseconds.

# %%
sb_file = Path("results/stream_batch.json")
if sb_file.is_file():
    sb = json.loads(sb_file.read_text())
    keys = ("ms_per_frame", "latency_ms", "first_frame_ms", "position_error", "edit", "seams")
    display(pd.DataFrame([{"strength/viewers": name, "sampler": row, **{k: float(np.nanmean(r[k])) for k in keys}}
                          for name, s in sb["settings"].items() for row, r in s["rows"].items()]).set_index(["strength/viewers", "sampler"]).round(3))
    display(pd.DataFrame([{"strength/viewers": name, "ratio": pair, "metric": k, "ratio mean": round(m, 3), "s.e.": round(se, 3),
                           "verdict": verdict(m - 1, se)} for name, s in sb["settings"].items() for pair, c in s["ratios"].items() for k, (m, se) in c.items()]))
    display(pd.DataFrame([{"strength/viewers": name, "stream_batch - self_forcing": k, "difference": round(m, 3), "s.e.": round(se, 3), "pairs": n,
                           "verdict": verdict(m, se)} for name, s in sb["settings"].items() for k, (m, se, n) in s["paired"].items()]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    names = list(sb["settings"])
    for j, row in enumerate(("self_forcing", "levels", "stream_batch")):
        for ax, key in zip(axes, ("ms_per_frame", "latency_ms")):
            ax.bar(np.arange(len(names)) + 0.27 * (j - 1), [np.mean(sb["settings"][n]["rows"][row][key]) for n in names], width=0.27, label=row)
    for ax, label in zip(axes, ("ms per frame (throughput; lower is better)", "ms from a chunk's entry to its frames")):
        ax.set_xticks(range(len(names)), [f"strength {n.split('/')[0]}, {n.split('/')[1]} viewer(s)" for n in names], fontsize=7)
        ax.set_ylabel(label)
    axes[0].legend()
    fig.tight_layout()
    plt.show()

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
