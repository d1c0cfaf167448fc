"""Densification after frame 1, measured: an object enters mid-stream; how well is it shown?

    python -m experiments.queen entering [--seeds 3 4 5 6] [--preset cpu] [--out FILE] [key=value ...]

For each scene seed the embedded scene gets an object of ``data.entering`` Gaussians that appears at
the middle frame (frame-1 Gaussians never saw it), and QUEEN streams it twice, with and without
densification within frames (``residual.densify.enabled``), the same seed for both. Reported per
seed and as paired differences with their standard errors: PSNR on the new object's pixels (test
camera, every frame from its entry, rendered from the decoded bytes), PSNR of whole frames, and
MB per residual frame. A difference counts only beyond 2 s.e. (else "not resolved").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shared import registry
from shared.config import compose
from shared.errors import DataError
from shared.metrics import psnr

from . import codec
from .claims import mean_se
from .data import load_scene
from .model import render_gaussians
from .stream import stream

DEFAULTS = ["data.entering=60", "data.n_frames=4"]


@torch.no_grad()
def object_psnr(frames, scene) -> float:
    """Mean PSNR over the frames where the entering object is present, on the pixels it covers
    (ground-truth alpha > 0.5) in the test camera."""
    truth, cam = scene.truth, scene.cameras[scene.test_cameras[0]]
    values = []
    for t, g in enumerate(frames):
        present = truth.frames[t].index(truth.entering)
        if float(torch.sigmoid(present.opacity_logit).max()) < 0.5:
            continue
        pixels = render_gaussians(present, cam, scene.background)[1] > 0.5
        if pixels.any():
            image = render_gaussians(g, cam, scene.background, backend="auto")[0].clamp(0, 1)
            values.append(psnr(image[pixels], scene.image(t, scene.test_cameras[0])[pixels]))
    if not values:
        raise DataError("the entering object covers no pixel of the test camera in any frame; choose another data.seed or data.entering")
    return float(np.mean(values))


def run_seed(package: str, preset: str, overrides: list[str], seed: int, directory: Path) -> dict:
    out = {}
    for name, enabled in (("without", False), ("with", True)):
        cfg = compose(registry.get(package), preset, [*overrides, f"data.seed={seed}", f"residual.densify.enabled={enabled}"], row=("queen", "queen"))
        scene = load_scene(cfg)
        if scene.truth is None or scene.truth.entering is None:
            raise DataError("needs the embedded scene with data.entering > 0 (a real N3DV scene has no known entering object)")
        result = stream(scene, cfg, directory / f"seed{seed}_{name}", scope=f"seed {seed}, {name} densification")
        frames = list(codec.decode_stream(directory / f"seed{seed}_{name}"))
        out[name] = {
            "object_psnr": object_psnr(frames, scene), "psnr": result["psnr"], "mb_per_residual_frame": result["mb_per_residual_frame"],
            "gaussians_last_frame": result["per_frame"][-1]["n_gaussians"],
        }
    return out


def summarise(per_seed: dict[int, dict]) -> dict:
    def diff(metric):
        d = [v["with"][metric] - v["without"][metric] for v in per_seed.values()]
        mean, se = mean_se(d)
        return {"mean": mean, "se": se, "beyond_2se": bool(abs(mean) > 2 * se)}

    return {metric: diff(metric) for metric in ("object_psnr", "psnr", "mb_per_residual_frame")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help=f"config overrides (after the defaults {' '.join(DEFAULTS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here (refuses to overwrite)")
    args = parser.parse_args(argv)
    package = __package__.rpartition(".")[2]
    try:
        if args.out is not None and args.out.exists():
            raise DataError(f"{args.out} exists; choose another --out (results are never overwritten)")
        if len(args.seeds) < 2:
            raise DataError("at least two --seeds: a paired difference needs a standard error")
        overrides = [*DEFAULTS, *args.overrides]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            per_seed = {s: run_seed(package, args.preset, overrides, s, Path(tmp)) for s in args.seeds}
    except DataError as err:
        print(f"queen entering: {err}", file=sys.stderr)
        return 2
    from shared.provenance import collect

    provenance = {k: v for k, v in collect(["python", "-m", f"experiments.{package}", "entering", *(argv if argv is not None else sys.argv[1:])]).items()
                  if k in ("date", "command", "git", "hardware")}
    result = {"preset": args.preset, "overrides": overrides, "seeds": per_seed, "with_minus_without": summarise(per_seed),
              "seconds": time.perf_counter() - start, "provenance": provenance}
    for seed, v in per_seed.items():
        print(f"seed {seed}: object PSNR {v['without']['object_psnr']:.2f} -> {v['with']['object_psnr']:.2f} dB, "
              f"PSNR {v['without']['psnr']:.2f} -> {v['with']['psnr']:.2f} dB, "
              f"MB/residual frame {v['without']['mb_per_residual_frame']:.4f} -> {v['with']['mb_per_residual_frame']:.4f}")
    if args.out is not None:
        from shared.io import atomic_write_json

        atomic_write_json(args.out, result)
    print(f"{len(per_seed)} seeds in {result['seconds'] / 60:.1f} min; densification minus none, paired over seeds: " + ", ".join(
        f"{m} {d['mean']:+.4g} ± {d['se']:.2g} ({'beyond 2 s.e.' if d['beyond_2se'] else 'not resolved'})" for m, d in result["with_minus_without"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
