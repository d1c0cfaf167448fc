"""The StreamingLLM table: every method at the preset's cache size, a cache-size sweep for the
window and sink methods, per-token NLL curves (saved as nll.npz) and the Figure-3-style plot."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np

from shared.io import atomic_path
from shared.plots import pyplot
from shared.runs import Run

from .data import token_stream
from .evaluate import stream_nll
from .model import load


def reproduce(cfg, run: Run) -> None:
    model, encode = load(cfg.model)
    ids = token_stream(encode, list(cfg.data.texts), cfg.data.n_tokens)
    curves = {}
    table = "perplexity"
    for row in cfg.eval.rows:
        if run.has_row(table, row):  # a resumed run keeps the rows it finished
            continue
        row_cfg = run.compose_row(table, row)
        sizes = [row_cfg.eval.cache] + (list(row_cfg.eval.sweep) if row in ("window", "sink") else [])
        for cache in sizes:
            result = stream_nll(
                model, ids, row_cfg.method, cache, backend=row_cfg.eval.backend, desc=f"{row} cache {cache}", dense_one_pass=row_cfg.eval.dense_one_pass
            )
            curves[f"{row}@{cache}"] = result.nll.numpy()
            metrics = result.summary()
            if cache == row_cfg.eval.cache:
                run.add_results(table, row, metrics)
            else:
                run.add_results(table, row, {f"ppl_after_fill@{cache}": metrics["ppl_after_fill"], f"ms_per_token@{cache}": metrics["ms_per_token"]})
            run.logger.log({**metrics, "n_tokens": len(ids)}, scope=f"{row}@{cache}")
    with atomic_path(run.dir / "nll.npz") as tmp:
        np.savez(tmp, **curves)
    trained = model.config.max_position_embeddings
    run.save_figure(figure_ppl_over_stream(curves, cfg.eval.cache, cfg.eval.smooth, trained_window=trained), "ppl_over_stream")
    if cfg.eval.sweep:
        run.save_figure(figure_cache_sweep(curves), "cache_sweep")


def figure_ppl_over_stream(curves: dict, cache: int, smooth: int, trained_window: int | None = None):
    """Running perplexity (exp of a moving-average NLL) over stream position, one line per method;
    the model's training window is marked when the stream runs past it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    kernel = np.ones(smooth) / smooth
    for name, nll in curves.items():
        if not name.endswith(f"@{cache}"):
            continue
        ax.plot(np.arange(smooth, len(nll) + 1), np.exp(np.convolve(nll, kernel, mode="valid")), label=name.split("@")[0], lw=1.2)
    ax.axvline(cache, color="k", ls=":", lw=1, label=f"cache full ({cache})")
    length = max(len(nll) for nll in curves.values())
    if trained_window is not None and trained_window < length:
        ax.axvline(trained_window, color="tab:red", ls="--", lw=1, label=f"training window ({trained_window})")
    ax.set(xlabel="stream position (tokens)", ylabel=f"perplexity ({smooth}-token moving window)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_cache_sweep(curves: dict):
    """Perplexity after the cache fills against cache size, for window and sink, with dense
    attention scored on the same tokens (the dense run's NLL from the same position on)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    sizes = sorted({int(name.split("@")[1]) for name in curves if name.startswith("sink@")})
    dense = next((nll for name, nll in curves.items() if name.startswith("dense@")), None)
    for method, style in (("window", "o-"), ("sink", "s-")):
        ax.plot(sizes, [np.exp(curves[f"{method}@{c}"][c:].mean()) for c in sizes], style, label=method)
    if dense is not None:
        ax.plot(sizes, [np.exp(dense[c:].mean()) for c in sizes], "k--", label="dense (same tokens)")
    ax.set(xlabel="cache size S (entries)", ylabel="perplexity after the cache fills", xscale="log", yscale="log")
    ax.set_xticks(sizes, [str(c) for c in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the log axis' own labels overlapped ours
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
