"""Where does "k small models beat one model at equal compute" hold? A model size x k sweep.

Run the grid with ``streamlab reproduce`` (rows ``single_long`` and ``stdo`` only, one clip and
scale, the cpu preset's seeds), then collect the runs into one JSON the notebook reads:

    for size in 4 8 16 32; do for k in 2 4; do
      streamlab reproduce stdo --preset cpu trainer.threads=1 model.num_residual_units=$size chunks=$k \\
        'data.scales=[2]' 'data.clips=[{name: carphone, max_frames: 16, stride: 1}]' \\
        'eval.rows=[single_long,stdo]' --outputs outputs/stdo_sweep
    done; done
    python -m experiments.stdo sweep outputs/stdo_sweep/stdo --out notebooks/stdo/results/size_k_sweep.json

The budget axis: the same command with ``train.steps=<n>`` (steps per chunk model; ``single_long``
gets k x n), e.g. 1200 and 4800 at 4 features and k = 2.

Per run: features per block, k, steps per model, parameters of one model, and per seed and setting the paper's
PSNR of both rows (paired: same seed, clip, labels and patches). The general model that labels the
patches has the swept size too (it is the preset's model), so each point's chunks come from its own
labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from shared.errors import StreamlabError

ROWS = ("single_long", "stdo")


def collect(run_dirs: list[Path]) -> dict:
    """Completed runs -> {"points": [...]} sorted by (size, k); runs of other rows are refused."""
    import yaml

    from shared.results import read_csv

    points = []
    for run in run_dirs:
        meta = json.loads((run / "run.json").read_text())
        if meta.get("status") != "completed":
            continue
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        arrays = np.load(run / "arrays.npz")
        settings = sorted({k.split("/")[0] for k in arrays.files if "/seed" in k})
        seeds = sorted({int(k.split("/")[1].removeprefix("seed")) for k in arrays.files if "/seed" in k})
        missing = [f"{s}/seed{x}/{r}/psnr" for s in settings for x in seeds for r in ROWS if f"{s}/seed{x}/{r}/psnr" not in arrays.files]
        if missing:
            raise StreamlabError(f"{run}: no {missing[0]} (run the sweep with 'eval.rows=[single_long,stdo]')")
        table = {(r["row"], r["metric"]): r["value"] for r in read_csv(run / "results.csv")}
        points.append({
            "features": int(cfg["model"]["num_residual_units"]), "blocks": int(cfg["model"]["num_blocks"]), "k": int(cfg["chunks"]),
            "steps_per_model": int(cfg["train"]["steps"]), "params_one_model": int(table[("single_long", "params")]),
            "run": run.name, "commit": meta["git"]["sha"], "dirty": meta["git"]["dirty"],
            "psnr": {s: {str(x): {r: float(arrays[f"{s}/seed{x}/{r}/psnr"]) for r in ROWS} for x in seeds} for s in settings},
        })
    if not points:
        raise StreamlabError(f"no completed runs among {len(run_dirs)} folders")
    return {"rows": list(ROWS), "points": sorted(points, key=lambda p: (p["features"], p["k"], p["steps_per_model"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.stdo sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a folder of stdo runs (outputs/stdo_sweep/stdo) or run folders", nargs="+")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    try:
        dirs = [d for r in args.runs for d in ([r] if (r / "run.json").is_file() else sorted(r.iterdir()) if r.is_dir() else [])]
        if not dirs:
            raise StreamlabError(f"no run folders in {', '.join(map(str, args.runs))}")
        result = collect([d for d in dirs if (d / "run.json").is_file()])
    except (StreamlabError, OSError, KeyError) as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    from shared.io import atomic_write_json

    atomic_write_json(args.out, result)
    for p in result["points"]:
        d = [v["stdo"] - v["single_long"] for s in p["psnr"].values() for v in s.values()]
        print(f"{p['features']:3d} features, k = {p['k']}, {p['steps_per_model']} steps per model: stdo - single_long {np.mean(d):+.3f} dB "
              f"over {len(d)} (setting, seed) pairs ({p['run']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
