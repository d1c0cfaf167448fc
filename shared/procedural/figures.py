"""Figures of generated videos scored by the detector: validity drifting over a long rollout, and a
strip of frames per row (StreamDiT and the autoregressive-video experiments draw the same two)."""

from __future__ import annotations

import numpy as np

from shared.plots import pyplot


def figure_drift(results: dict, data: dict | None, bin_frames: int):
    """Validity per ``bin_frames`` bin over the rollout, mean and spread over prompts, per row
    (``results[row]["per_frame_validity"]``: [prompts, frames]); ``data``: the real clips, dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    colours = row_colours(len(results))
    for i, (row, res) in enumerate([*results.items(), *([("data", data)] if data is not None else [])]):
        v = res["per_frame_validity"]  # [P, F]
        bins = v[:, : v.shape[1] // bin_frames * bin_frames].reshape(len(v), -1, bin_frames).mean(axis=2)
        x = (np.arange(bins.shape[1]) + 0.5) * bin_frames
        colour = "0.3" if row == "data" else colours[i]
        marker = "o" if row == "data" else "os^D"[i // 10 % 4]  # more rows than colours in a cycle: another marker
        ax.plot(x, bins.mean(0), marker=marker, ms=3, label=row, color=colour, ls="--" if row == "data" else "-")
        ax.fill_between(x, bins.mean(0) - bins.std(0), bins.mean(0) + bins.std(0), alpha=0.12, color=colour)
    ax.set(xlabel="frame of the rollout", ylabel=f"validity (mean over {bin_frames}-frame bins)", ylim=(0, 1.05), title="drift over a long rollout")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def row_colours(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10 rows, tab20 beyond (the default cycle repeats after 10,
    so a table of 15 rows drew rows 1 and 11 alike)."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def figure_strip(results: dict, data: dict | None, frames: int):
    """The first prompt's rollout (``results[row]["strip"]``: [F, 3, S, S]), every other frame of the
    first ``2 frames``, per row; ``data``: the real clip, last."""
    plt = pyplot()
    rows = [*results, *(["data"] if data is not None else [])]
    fig, axes = plt.subplots(len(rows), frames, figsize=(0.75 * frames, 0.85 * len(rows)), squeeze=False)
    for line, row in zip(axes, rows):
        strip = (data if row == "data" else results[row])["strip"]
        for k, ax in enumerate(line):
            f = min(2 * k, len(strip) - 1)
            ax.imshow(np.clip((strip[f].transpose(1, 2, 0) + 1) / 2, 0, 1), interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if line is axes[0]:
                ax.set_title(f"{f}", fontsize=7)
        line[0].set_ylabel(row, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig
