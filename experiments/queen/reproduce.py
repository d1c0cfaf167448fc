"""The QUEEN table: each row streams the whole video (resumable per frame), writes its bitstream,
and reports quality on the held-out camera, size from the bytes, and speed; then the figures."""

from __future__ import annotations

import numpy as np

from shared.errors import ConfigError
from shared.io import atomic_path
from shared.plots import pyplot
from shared.runs import Run

from .data import load_scene
from .stream import stream
from .train import QUANTIZED


def check_config(cfg) -> None:
    """What would fail minutes into a run, refused before it starts (shared.runner calls this)."""
    if cfg.sh_degree not in (0, 1, 2, 3):
        raise ConfigError(f"sh_degree={cfg.sh_degree}: spherical harmonics of degree 0 to 3 only (the renderers' range)")
    if not cfg.data.root and cfg.data.n_cameras < 2:
        raise ConfigError(f"data.n_cameras={cfg.data.n_cameras}: at least 2 (camera 0 is held out for testing, the others train)")
    cap = cfg.get("max_steps_per_frame")
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ConfigError(f"max_steps_per_frame={cap}: a positive number of steps, or null for no cap")
    unknown = sorted(set(cfg.method.float_attributes) - set(QUANTIZED))
    if unknown or (cfg.method.float_attributes and not cfg.method.quantize):
        raise ConfigError(f"method.float_attributes={list(cfg.method.float_attributes)}: some of {', '.join(QUANTIZED)}, "
                          "on a quantized row (method.quantize=true)")
    if not cfg.data.root and min(cfg.data.width, cfg.data.height) < 4:
        raise ConfigError(f"data.width={cfg.data.width}, data.height={cfg.data.height}: at least 4 pixels a side")


def reproduce(cfg, run: Run) -> None:
    scene = load_scene(cfg)
    per_frame = {}
    for row in cfg.eval.rows:
        row_cfg = run.compose_row("queen", row)
        result = stream(scene, row_cfg, run.dir / "bitstream" / row, run=run, scope=row)
        if not run.has_row("queen", row):
            run.add_results("queen", row, {k: v for k, v in result.items() if k not in ("per_frame", "extras")})
        per_frame[row] = result
    save_arrays(run, scene, per_frame)
    run.save_figure(figure_curves(per_frame), "per_frame")
    if "queen" in per_frame and per_frame["queen"]["extras"]["gate_open"]:
        run.save_figure(figure_gates(per_frame["queen"]["extras"], scene), "gates")
    run.save_figure(figure_renders(per_frame, scene), "renders")


def save_arrays(run: Run, scene, per_frame: dict) -> None:
    """Per-frame curves and test-view renders (uint8) for the notebook."""
    arrays = {"ground_truth": np.stack([(scene.image(t, scene.test_cameras[0]).cpu().numpy() * 255).round().astype(np.uint8) for t in range(scene.n_frames)])}
    for row, result in per_frame.items():
        arrays[f"{row}/renders"] = np.stack(result["extras"]["renders"])
        for key in ("psnr", "bytes", "estimate_bytes", "train_seconds"):
            arrays[f"{row}/{key}"] = np.array([r[key] for r in result["per_frame"]])
    ex = per_frame.get("queen", {}).get("extras", {})
    for t, (open_, dyn, means) in enumerate(zip(ex.get("gate_open", []), ex.get("dynamic", []), ex.get("means_test", []))):
        arrays[f"gates/frame{t + 1}/open"] = open_
        arrays[f"gates/frame{t + 1}/means_test"] = means
        if dyn is not None:
            arrays[f"gates/frame{t + 1}/dynamic"] = dyn
    with atomic_path(run.dir / "per_frame.npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def figure_curves(per_frame: dict):
    plt = pyplot()
    fig, (ax_size, ax_psnr) = plt.subplots(1, 2, figsize=(9, 3.2))
    for row, result in per_frame.items():
        frames = [r["frame"] for r in result["per_frame"]]
        ax_size.plot(frames, [r["bytes"] / 1e3 for r in result["per_frame"]], marker="o", label=row)
        ax_psnr.plot(frames, [r["psnr"] for r in result["per_frame"]], marker="o", label=row)
    ax_size.set(xlabel="frame", ylabel="kB on disk", yscale="log", title="per-frame size (frame 0 = keyframe)")
    ax_psnr.set(xlabel="frame", ylabel="test-view PSNR (dB)", title="per-frame quality")
    ax_size.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_gates(extras: dict, scene):
    """The test view per residual frame with every Gaussian's centre: open gates in red."""
    plt = pyplot()
    n = len(extras["gate_open"])
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.4), squeeze=False)
    for t, ax in enumerate(axes[0]):
        ax.imshow(scene.image(t, scene.test_cameras[0]).cpu().numpy())
        means, open_ = extras["means_test"][t], extras["gate_open"][t]
        ax.scatter(means[~open_, 0] - 0.5, means[~open_, 1] - 0.5, s=2, c="white", alpha=0.5)
        ax.scatter(means[open_, 0] - 0.5, means[open_, 1] - 0.5, s=4, c="red")
        ax.set(title=f"frame {t + 1}: {open_.mean():.0%} open", xticks=[], yticks=[])
        ax.set_xlim(-0.5, scene.cameras[0].width - 0.5)
        ax.set_ylim(scene.cameras[0].height - 0.5, -0.5)
    fig.tight_layout()
    return fig


def figure_renders(per_frame: dict, scene):
    plt = pyplot()
    last = scene.n_frames - 1
    rows = list(per_frame)
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(2.6 * (len(rows) + 1), 2.4))
    axes[0].imshow(scene.image(last, scene.test_cameras[0]).cpu().numpy())
    axes[0].set(title=f"ground truth, frame {last}", xticks=[], yticks=[])
    for ax, row in zip(axes[1:], rows):
        ax.imshow(per_frame[row]["extras"]["renders"][last])
        ax.set(title=f"{row}: {per_frame[row]['per_frame'][last]['psnr']:.1f} dB", xticks=[], yticks=[])
    fig.tight_layout()
    return fig
