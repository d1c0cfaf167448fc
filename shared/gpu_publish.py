"""Publish what a GPU pass returned into the notebooks' committed results:

    python -m shared.gpu_publish DIR [--notebooks notebooks] [--replace]

DIR is the folder the device call returned (``gpu_pass.json`` from ``bash env/gpu/pass.sh``, with
its junit reports). Each experiment's share goes to ``notebooks/<name>/results/gpu/``:

- ``figures.csv``: tidy, one figure a row (step, figure, setting, value, unit), with the paper's
  number and setting where the paper reports one, and the issue's target where there is one;
- ``provenance.json``: device, driver, CUDA, torch, Triton, Python, commit, date, the ceilings the
  ratios are against, each step's status and time, and the experiment's own GPU tests.

A dry run's figures (``pass.sh --dry-run``: tiny sizes on a CPU) are refused, and so is replacing a
published pass by another one unless ``--replace`` says so. The notebooks show these files through
``shared.notebook.gpu_results``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from .errors import RunError
from .io import atomic_path, atomic_write_json

SCHEMA = 1
COLUMNS = ("step", "figure", "setting", "value", "unit", "paper", "paper_setting", "target")

# Which pass steps and which GPU test files belong to which experiment's notebook. The streaming
# core's kernels (ring decode, FlexAttention prefill) go with StreamingLLM, the core's reference user.
SHARES = {
    "streaming_llm": {"steps": ("ring_decode", "flex_prefill"), "tests": ("tests/kernels/test_ring_decode.py",)},
    "streamdit": {"steps": ("streamdit",), "tests": ("experiments/streamdit/",)},
    "stdo": {"steps": ("stdo",), "tests": ("experiments/stdo/",)},
    "queen": {"steps": ("splat", "queen"), "tests": ("tests/kernels/test_splat.py", "experiments/queen/")},
    "careless_whisper": {"steps": (), "tests": ("experiments/careless_whisper/",)},
}


def _row(step, figure, setting, value, unit, paper=None, paper_setting=None, target=None) -> dict:
    return {"step": step, "figure": figure, "setting": setting, "value": value, "unit": unit, "paper": paper,
            "paper_setting": paper_setting, "target": target}


# ---- one function per step: its figures as tidy rows ---------------------------------------------

def rows_ring_decode(fig: dict) -> list[dict]:
    out = []
    for r in fig.get("rows", []):
        setting = f"{r['impl']}, d {r['head_dim']}, heads {r['heads']}, {r['dtype']}, {r['slots']} slots"
        out += [_row("ring_decode", "K/V read bandwidth", setting, r["kv_GBps"], "GB/s"),
                _row("ring_decode", "share of the copy bandwidth", setting, r["fraction_of_copy"], "fraction"),
                _row("ring_decode", "time per decode step", setting, r["ms"], "ms"),
                _row("ring_decode", "max relative error vs float64", setting, r["rel_err_vs_float64"], "relative")]
    target = fig.get("target") or {}
    if target.get("worst_fraction_of_copy") is not None:
        out.append(_row("ring_decode", "worst share of the copy bandwidth, bf16, d 64 and 128, >= 16k slots", target.get("judged_on", ""),
                        target["worst_fraction_of_copy"], "fraction", target=">= 0.70 (issue 15)"))
        out.append(_row("ring_decode", "the same, best of the tiles swept", "per shape", target.get("best_tile_worst_fraction_of_copy"), "fraction"))
    return out


def rows_flex_prefill(fig: dict) -> list[dict]:
    out = []
    for r in fig.get("rows", []):
        setting = f"{r['mask']} {r['mask_spec']}, T {r['tokens']}, heads {r['heads']}, d {r['head_dim']}, {r['dtype']}"
        out += [_row("flex_prefill", "FlexAttention prefill time", setting, r["flex_ms"], "ms"),
                _row("flex_prefill", "dense-mask SDPA prefill time", setting, r["sdpa_dense_ms"], "ms"),
                _row("flex_prefill", "FlexAttention speed-up over dense-mask SDPA", setting, r["flex_speedup_vs_sdpa"], "x"),
                _row("flex_prefill", "FlexAttention relative error", f"{setting}, against {r['errors_against']}", r["flex_rel_err"], "relative"),
                _row("flex_prefill", "FlexAttention throughput on the visible blocks", setting, r["flex_tflops_on_visible"], "TFLOP/s")]
    return out


def rows_streamdit(fig: dict) -> list[dict]:
    out = []
    paper_setting = "StreamDiT 4B, 512p, one H100 (paper section 5.4)"
    for variant in ("eager", "cuda_graph", "compiled"):
        r = fig.get(variant)
        if not r or "seconds_per_step" not in r:
            continue
        setting = f"{r['arch']} stand-in (random weights), {r['res']} px, c = {r['chunk']}, {r['dtype']}, {variant}"
        out += [_row("streamdit", "time per buffer step", setting, 1e3 * r["seconds_per_step"], "ms", 482, paper_setting, "<= 385 ms (issue 15)"),
                _row("streamdit", "frames per second", setting, r["fps"], "FPS", 16, paper_setting, ">= 20 FPS (issue 15)"),
                _row("streamdit", "share of the measured bf16 matmul peak", setting, r["share_of_matmul_peak"], "fraction")]
    return out


def rows_stdo(fig: dict) -> list[dict]:
    out = []
    for scale in ("x2", "x4"):
        r = fig.get(scale)
        if not r:
            continue
        setting = f"WDSR-A {scale} ({r['parameters']:,} parameters)"
        out += [_row("stdo", "training step", f"{setting}, batch {r['batch']}, LR patch {r['lr_patch_wh']}", r["train_step_ms"], "ms"),
                _row("stdo", "1080p upscale, fp32", setting, r["upscale_fp32_fps"], "FPS", 28, "paper abstract: 28 FPS on a phone (model and scale not given)"),
                _row("stdo", "model FLOPs per 1080p frame", setting, r["gflops_per_1080p_frame"], "GFLOP")]
        if "upscale_bf16_autocast_fps" in r:
            out.append(_row("stdo", "1080p upscale, bf16 autocast", setting, r["upscale_bf16_autocast_fps"], "FPS"))
    return out


def rows_splat(fig: dict) -> list[dict]:
    out = []
    parity = fig.get("parity") or {}
    setting = f"{parity.get('backend')} against {parity.get('against')}"
    for key, value in parity.items():
        if key.endswith("_diff"):
            tolerance = "< 5e-3" if key.startswith(("image", "alpha")) else "< 2e-2 relative"
            out.append(_row("splat", key.replace("_", " "), setting, value, "max abs" if key.endswith("max_abs_diff") else "relative",
                            target=tolerance))
    for r in fig.get("bench", []):
        out.append(_row("splat", "render forward + backward", f"{r['backend']}, {r['width']}x{r['height']}, {r['gaussians']:,} Gaussians",
                        r["ms_forward_backward"], "ms"))
    return out


def rows_queen(fig: dict) -> list[dict]:
    r = fig.get("residual_frame")
    if not r:
        return []
    setting = (f"synthetic scene, {r['resolution'][0]}x{r['resolution'][1]}, {r['cameras']} cameras, {r['gaussians']:,} Gaussians, "
               f"{r['residual_epochs']} residual epochs, {r['backend']}")
    paper_setting = "N3DV, 1352x1014, one A100 (paper Table 1)"
    return [_row("queen", "training time per residual frame", setting, r["seconds_per_residual_frame"], "s", "4-5", paper_setting),
            _row("queen", "rendering", setting, r["render_fps"], "FPS", "250-350", paper_setting),
            _row("queen", "PSNR", setting, r["psnr"], "dB"),
            _row("queen", "decoded vs trainer, max abs", setting, r["decode_max_abs_error"], "max abs"),
            _row("queen", "residual frame size", setting, r["bytes_residual_frame"], "bytes")]


ROWS = {"ring_decode": rows_ring_decode, "flex_prefill": rows_flex_prefill, "streamdit": rows_streamdit, "stdo": rows_stdo,
        "splat": rows_splat, "queen": rows_queen}


# ---- reading and writing --------------------------------------------------------------------------

def load_pass(directory: str | Path) -> tuple[dict, str]:
    """The pass's report and its sha256; one-line errors for what cannot be published."""
    path = Path(directory) / "gpu_pass.json"
    if not path.is_file():
        raise RunError(f"{path} does not exist: give the folder the GPU pass returned (bash env/gpu/pass.sh writes gpu_pass.json)")
    data = path.read_bytes()
    try:
        report = json.loads(data)
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); was the transfer cut off?") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise RunError(f"{path} is not a GPU pass report of schema {SCHEMA}")
    if report.get("dry_run"):
        raise RunError(f"{path} is a dry run (tiny sizes on a CPU): its figures mean nothing and are not published")
    if not (report.get("provenance") or {}).get("gpu"):
        raise RunError(f"{path} names no GPU in its provenance: the pass did not run on one, nothing published")
    return report, hashlib.sha256(data).hexdigest()


def share(report: dict, digest: str, name: str) -> tuple[list[dict], dict]:
    """One experiment's figures and provenance."""
    spec = SHARES[name]
    rows = [row for step in spec["steps"] for row in ROWS[step](((report["steps"].get(step) or {}).get("figures")) or {})]
    cases = [dict(c, report=group) for group, summary in (report.get("tests") or {}).items() if summary
             for c in summary.get("cases", []) if (c.get("file") or "").startswith(spec["tests"])]
    prov = report.get("provenance") or {}
    provenance = {
        "experiment": name, "source": "bash env/gpu/pass.sh, published with python -m shared.gpu_publish", "date": report.get("date"),
        "device": prov.get("gpu"), "driver": prov.get("driver"), "cuda": prov.get("cuda"), "torch": prov.get("torch"),
        "triton": prov.get("triton"), "python": prov.get("python"), "gsplat": prov.get("gsplat"), "commit": prov.get("commit"),
        "dirty": prov.get("dirty"), "ceilings": report.get("ceilings"), "pass_sha256": digest,
        "steps": {step: {k: v for k, v in (report["steps"].get(step) or {}).items() if k != "figures"} for step in spec["steps"]},
        "tests": {"passed": sum(c["outcome"] == "passed" for c in cases), "failed": [c["test"] for c in cases if c["outcome"] in ("failure", "error")],
                  "skipped": sum(c["outcome"] == "skipped" for c in cases), "cases": cases},
    }
    return rows, provenance


def publish(directory: str | Path, notebooks: str | Path = "notebooks", replace: bool = False) -> dict[str, Path]:
    """Write every experiment's share; returns {experiment: its results/gpu folder}."""
    report, digest = load_pass(directory)
    notebooks = Path(notebooks)
    missing = [name for name in SHARES if not (notebooks / name).is_dir()]
    if missing:
        raise RunError(f"{notebooks} has no notebook folder for {', '.join(missing)}: run from the repository root or pass --notebooks")
    if not replace:
        for name in SHARES:
            old = notebooks / name / "results" / "gpu" / "provenance.json"
            if old.is_file() and json.loads(old.read_text()).get("pass_sha256") != digest:
                raise RunError(f"{old.parent} holds another GPU pass ({json.loads(old.read_text()).get('date')}); add --replace to publish this one over it")
    written = {}
    for name in SHARES:
        rows, provenance = share(report, digest, name)
        destination = notebooks / name / "results" / "gpu"
        with atomic_path(destination / "figures.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_json(destination / "provenance.json", provenance)
        written[name] = destination
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.gpu_publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="the folder the GPU pass returned (holds gpu_pass.json)")
    parser.add_argument("--notebooks", default="notebooks", help="the notebooks folder (default: notebooks)")
    parser.add_argument("--replace", action="store_true", help="publish over a different, earlier GPU pass")
    args = parser.parse_args(argv)
    try:
        written = publish(args.directory, args.notebooks, args.replace)
    except RunError as error:
        print(f"gpu_publish: {error}", file=sys.stderr)
        return 2
    for name, path in written.items():
        with open(path / "figures.csv", newline="") as f:
            count = sum(1 for _ in csv.DictReader(f))
        print(f"{name}: {count} figures -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
