"""The STDO table: every row on every (clip, scale) of the preset, averaged over seeds.

For each clip and scale: decode, make the bicubic LR frames, cut the patch grid, label every patch
with the general model; then for each seed and row: train the row's models on the patches
(train == test, the neural-video-delivery setting), upscale every patch through its chunk's model,
score, write the bundle (its size is the row's bytes to ship) and time whole-frame upscaling.
Everything is checkpointed: a killed run resumes with ``streamlab reproduce stdo --resume RUN_DIR``.
"""

from __future__ import annotations

import numpy as np
import torch

from shared.errors import ConfigError
from shared.io import atomic_path
from shared.plots import pyplot
from shared.progress import progress
from shared.runs import Run
from shared.runtime import resolve_device

from .bundle import save_bundle
from .chunking import quantile_thresholds
from .data import h264_lowres, load_video, lowres_frames
from .evaluate import scores, upscaling_fps
from .labels import make_labels
from .method import fit_upscaler
from .patches import auto_grid, make_grid, to_frames, to_patches

CROP = 96  # HR pixels of the crops kept for the notebook's side-by-side figure


def prepare(cfg, clip_cfg, scale: int, device: str, run: Run | None = None) -> dict:
    """Frames, grid, uint8 patches and per-patch labels of one clip at one scale."""
    name = clip_cfg.name
    video = load_video(clip_cfg.get("source") or name, max_frames=clip_cfg.get("max_frames"), stride=clip_cfg.get("stride", 1), start=clip_cfg.get("start", 0))
    _, h, w = video.shape
    lr = lowres_frames(video, scale)
    if cfg.data.get("lr_crf") is not None:  # what a client decodes from an H.264 stream; every row trains and is scored on it
        lr = h264_lowres(lr, int(cfg.data.lr_crf))
    grid = make_grid(h, w, scale, *clip_cfg.grid) if clip_cfg.get("grid") else auto_grid(h, w, scale, tuple(cfg.data.lr_patch))
    lr_p, hr_p = to_patches(lr, grid.rows, grid.cols), to_patches(video.frames, grid.rows, grid.cols)
    ckpt = run.checkpoint_path(f"general_{name}_x{scale}") if run is not None else None
    labels = make_labels(cfg, lr_p, hr_p, scale, video.name, device=device, checkpoint=ckpt)
    return {"video": video, "lr": lr, "grid": grid, "lr_patches": lr_p, "hr_patches": hr_p, "labels": labels}


def run_row(row_cfg, data: dict, seed: int, device: str, run: Run, key: str) -> dict:
    """Train, score, bundle and time one row on one clip/scale/seed; the result is checkpointed."""
    return run.cached(key, lambda: _run_row(row_cfg, data, seed, device, run, key))


def _run_row(row_cfg, data: dict, seed: int, device: str, run: Run, key: str) -> dict:
    grid, n_frames = data["grid"], len(data["lr"])
    upscaler = fit_upscaler(
        row_cfg, data["lr_patches"], data["hr_patches"], data["labels"], grid, n_frames, seed=seed, device=device,
        checkpoints=run.dir / "checkpoints" / key, log=lambda m, step, scope: run.logger.log(m, step=step, scope=f"{key}/{scope}"),
    )
    sr = upscaler.upscale(data["lr_patches"], device=device)
    result = scores(sr, data["hr_patches"], grid, upscaler.chunk)
    result["params"] = upscaler.parameters
    # bicubic ships nothing; every other row ships its bundle file
    result["bytes"] = 0 if upscaler.models is None else save_bundle(run.dir / "bundles" / f"{key}.stdo", upscaler, row_cfg.model, n_frames, source=data["video"].source)
    chunk_map = upscaler.chunk_map(n_frames)
    result["fps"] = upscaling_fps(upscaler.models, chunk_map, data["lr"], grid, device=device, frames=int(row_cfg.eval.fps_frames))
    result["crop"] = _crop(sr, data, grid)
    result.pop("patch_mse")
    return result


def _crop(sr_patches: torch.Tensor, data: dict, grid) -> np.ndarray:
    """A CROP x CROP region (HR pixels) of the first frame around its hardest patch, for the figure."""
    first = to_frames(sr_patches[: grid.per_frame], grid.rows, grid.cols)[0].numpy()
    y, x = _crop_origin(data, grid)
    return first[y : y + CROP, x : x + CROP]


def _crop_origin(data: dict, grid) -> tuple[int, int]:
    hardest = int(np.argmin(data["labels"][: grid.per_frame]))
    _, i, j = grid.position(hardest)
    ph, pw = grid.hr_patch
    h, w = data["video"].shape[1:]
    size = min(CROP, h, w)
    y = int(np.clip(i * ph + ph // 2 - size // 2, 0, h - size))
    x = int(np.clip(j * pw + pw // 2 - size // 2, 0, w - size))
    return y, x


def reproduce(cfg, run: Run) -> None:
    device = resolve_device(cfg.trainer.device)
    rows = list(cfg.eval.rows)
    row_cfgs = {row: run.compose_row("stdo", row) for row in rows}
    clips = {clip.name: clip for clip in cfg.data.clips}
    if len(clips) != len(cfg.data.clips):
        raise ConfigError("data.clips: every clip needs its own name")
    settings = [(name, int(scale)) for name in clips for scale in cfg.data.scales]
    results: dict[tuple, dict] = {}
    arrays: dict[str, np.ndarray] = {}
    bar = progress(total=len(settings) * len(cfg.seeds) * len(rows), desc="stdo rows")
    for name, scale in settings:
        data = prepare(cfg, clips[name], scale, device, run)
        tag = f"{name}_x{scale}"
        arrays[f"{tag}/labels"] = data["labels"]
        arrays[f"{tag}/thresholds"] = quantile_thresholds(data["labels"], int(cfg.chunks))
        y, x = _crop_origin(data, data["grid"])
        size = min(CROP, *data["video"].shape[1:])
        arrays[f"{tag}/crop/ground_truth"] = data["video"].frames[0, y : y + size, x : x + size]
        arrays[f"{tag}/grid"] = np.array([data["grid"].rows, data["grid"].cols, *data["grid"].hr_patch])
        for seed in cfg.seeds:
            for row in rows:
                result = run_row(row_cfgs[row], data, int(seed), device, run, f"{tag}_seed{seed}_{row}")
                results[(name, scale, int(seed), row)] = result
                run.logger.log({"psnr": result["psnr"], "psnr_frame": result["psnr_frame"]}, scope=f"{tag}/seed{seed}/{row}")
                if seed == cfg.seeds[0]:
                    arrays[f"{tag}/crop/{row}"] = result["crop"]
                arrays[f"{tag}/seed{seed}/{row}/per_frame_psnr"] = np.array(result["per_frame_psnr"])
                arrays[f"{tag}/seed{seed}/{row}/psnr"] = np.array(result["psnr"])  # the notebook's paired claims
                bar.update(1)
    bar.close()
    for row in rows:
        if not run.has_row("stdo", row):
            run.add_results("stdo", row, aggregate(results, row, settings, list(cfg.seeds)))
    with atomic_path(run.dir / "arrays.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    run.save_figure(figure_gains(results, rows, settings, list(cfg.seeds)), "psnr_gain")
    run.save_figure(figure_histograms(arrays, settings, int(cfg.chunks)), "label_histograms")
    run.save_figure(figure_crops(arrays, rows, settings, results, cfg.seeds[0]), "crops")
    run.save_figure(figure_per_frame(arrays, rows, settings, list(cfg.seeds)), "per_frame")


def aggregate(results: dict, row: str, settings, seeds) -> dict:
    """The row's table cells: means over clips, scales and seeds, then one column per clip and scale."""
    def mean(metric, setting=None):
        picked = [r[metric] for (n, s, _, rw), r in results.items() if rw == row and (setting is None or (n, s) == setting)]
        return float(np.mean(picked))

    out = {
        "psnr": mean("psnr"),
        "psnr_frame": mean("psnr_frame"),
        "params": mean("params"),
        "kb_shipped": mean("bytes") / 1e3,
        "fps": mean("fps"),
    }
    if any(rw == "bicubic" for (_, _, _, rw) in results):
        out["gain_db"] = out["psnr"] - float(np.mean([r["psnr"] for (_, _, _, rw), r in results.items() if rw == "bicubic"]))
    for name, scale in settings:
        tag = f"{name}_x{scale}"
        per_seed = [results[(name, scale, s, row)]["psnr"] for s in seeds]
        out[f"psnr_{tag}"] = float(np.mean(per_seed))
        out[f"psnr_std_{tag}"] = float(np.std(per_seed))
        out[f"psnr_frame_{tag}"] = mean("psnr_frame", (name, scale))
        out[f"kb_{tag}"] = mean("bytes", (name, scale)) / 1e3
        out[f"fps_{tag}"] = mean("fps", (name, scale))
        out[f"params_x{scale}"] = mean("params", (name, scale))
    return out


def figure_gains(results, rows, settings, seeds):
    """PSNR gain over bicubic per clip and scale (mean and spread over seeds)."""
    plt = pyplot()
    learned = [r for r in rows if r != "bicubic"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(settings), 3.2))
    width = 0.8 / max(1, len(learned))
    for k, row in enumerate(learned):
        gains = np.array([[results[(n, s, seed, row)]["psnr"] - results[(n, s, seed, "bicubic")]["psnr"] if "bicubic" in rows else results[(n, s, seed, row)]["psnr"] for seed in seeds] for n, s in settings])
        ax.bar(np.arange(len(settings)) + k * width, gains.mean(1), width, yerr=gains.std(1), label=row, capsize=2)
    ax.set_xticks(np.arange(len(settings)) + width * (len(learned) - 1) / 2, [f"{n} x{s}" for n, s in settings])
    ax.set(ylabel="PSNR gain over bicubic (dB)" if "bicubic" in rows else "PSNR (dB)", title="train == test, mean-MSE PSNR (shave 4)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def figure_histograms(arrays, settings, k):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(settings), figsize=(2.8 * len(settings), 2.6), squeeze=False)
    for ax, (n, s) in zip(axes[0], settings):
        labels = arrays[f"{n}_x{s}/labels"]
        ax.hist(labels[np.isfinite(labels)], bins=40, color="0.6")
        for th in arrays[f"{n}_x{s}/thresholds"]:
            ax.axvline(th, color="red", lw=1)
        ax.set(title=f"{n} x{s}: {k} chunks", xlabel="label PSNR (dB)")
    axes[0][0].set_ylabel("patches")
    fig.tight_layout()
    return fig


def figure_crops(arrays, rows, settings, results, seed):
    plt = pyplot()
    shown = ["ground_truth"] + [r for r in ("bicubic", "single", "temporal", "stdo", "jstdo") if r in rows]
    fig, axes = plt.subplots(len(settings), len(shown), figsize=(1.9 * len(shown), 2.0 * len(settings)), squeeze=False)
    for line, (n, s) in zip(axes, settings):
        for ax, what in zip(line, shown):
            ax.imshow(arrays[f"{n}_x{s}/crop/{what}"], interpolation="nearest")
            title = "ground truth" if what == "ground_truth" else f"{what} {results[(n, s, seed, what)]['psnr']:.2f}"
            ax.set(xticks=[], yticks=[], title=title)
            ax.title.set_fontsize(8)
        line[0].set_ylabel(f"{n} x{s}")
    fig.tight_layout()
    return fig


def figure_per_frame(arrays, rows, settings, seeds):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(settings), figsize=(3.0 * len(settings), 2.6), squeeze=False)
    for ax, (n, s) in zip(axes[0], settings):
        for row in rows:
            curve = np.mean([arrays[f"{n}_x{s}/seed{seed}/{row}/per_frame_psnr"] for seed in seeds], axis=0)
            ax.plot(curve, label=row, lw=1)
        ax.set(title=f"{n} x{s}", xlabel="frame")
    axes[0][0].set_ylabel("frame PSNR (dB)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    return fig
