"""QUEEN's claims over seeds: every number a paired difference (same scene, same training seed) with
its standard error over the runs, and a claim "met" only when its margin exceeds 2 s.e.

    python -m experiments.queen.claims outputs/queen/RUN ... [--out notebooks/queen/results/seeds.json]

Each RUN is a completed ``streamlab reproduce queen`` of one (scene seed, training seed), all with the
same rows; runs of some rows only (``eval.rows=[queen,no_quant_scale]``) give the claims those rows allow. The claims
(the issue's, after the paper's):
- against the **strongest baseline method**, the fair float residuals (``float_gated``) or per-frame
  retraining (``retrain``), whichever has the higher mean PSNR: QUEEN at least 2x smaller (the ratio
  of MB/frame, mean - 2 s.e. >= 2) at a PSNR no more than 0.5 dB below it (mean difference + 0.5 > 2 s.e.);
- QUEEN smaller than each of its ablations (``no_gate``, ``no_mask``, ``no_quant``, ``no_quant_scale``):
  MB/frame difference > 2 s.e.;
- updating frames matters: QUEEN's PSNR above ``no_update``'s by more than 2 s.e.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.results import mean_se

BASELINES = ("float_gated", "retrain")
ABLATIONS = ("no_gate", "no_mask", "no_quant", "no_quant_scale")


def load_run(directory: Path) -> dict:
    """{"run", "overrides", "values": {(row, metric): value}} of one completed run."""
    meta_path, results = directory / "run.json", directory / "results.csv"
    if not meta_path.is_file() or not results.is_file():
        raise DataError(f"{directory}: not a finished run (run.json and results.csv expected)")
    meta = json.loads(meta_path.read_text())
    if meta.get("experiment") != "queen" or meta.get("status") != "completed":
        raise DataError(f"{directory}: a {meta.get('status')} {meta.get('experiment')} run; completed queen runs only")
    with open(results, newline="") as f:
        values = {(r["row"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    return {"run": directory.name, "overrides": meta.get("overrides", []), "sha": meta["git"]["sha"], "dirty": meta["git"]["dirty"], "values": values}


def claims(runs: list[dict]) -> dict:
    if len(runs) < 2:
        raise DataError(f"{len(runs)} run(s): a standard error needs at least two seeds")

    def column(row: str, metric: str) -> np.ndarray:
        missing = [r["run"] for r in runs if (row, metric) not in r["values"]]
        if missing:
            raise DataError(f"row {row!r} ({metric}) is missing from run(s) {', '.join(missing)}")
        return np.array([r["values"][row, metric] for r in runs])

    rows = sorted({row for r in runs for row, _ in r["values"]})
    table = {row: {m: mean_se(column(row, m)) for m in ("psnr", "mb_per_frame")} for row in rows}
    if "queen" not in table:
        raise DataError("no 'queen' row in these runs: every claim is about QUEEN")
    # runs of a subset of rows (eval.rows=[queen,no_quant_scale]) give the claims about the rows they have
    baselines = [b for b in BASELINES if b in table]
    strongest = max(baselines, key=lambda b: table[b]["psnr"][0]) if baselines else None
    queen_mb, queen_psnr = column("queen", "mb_per_frame"), column("queen", "psnr")
    out = []

    if strongest is not None:
        ratio = mean_se(column(strongest, "mb_per_frame") / queen_mb)
        out.append({"claim": f"QUEEN at least 2x smaller than {strongest} (MB/frame ratio)", "value": ratio[0], "se": ratio[1],
                    "met": ratio[0] - 2 * ratio[1] >= 2.0})
        gap = mean_se(queen_psnr - column(strongest, "psnr"))
        out.append({"claim": f"QUEEN's PSNR at most 0.5 dB below {strongest} (dB difference)", "value": gap[0], "se": gap[1],
                    "met": gap[0] + 0.5 > 2 * gap[1]})
    for ablation in ABLATIONS:
        if ablation in table:
            diff = mean_se(column(ablation, "mb_per_frame") - queen_mb)
            out.append({"claim": f"QUEEN smaller than {ablation} (MB/frame difference)", "value": diff[0], "se": diff[1], "met": diff[0] > 2 * diff[1]})
    if "no_update" in table:
        diff = mean_se(queen_psnr - column("no_update", "psnr"))
        out.append({"claim": "updating frames beats showing frame 1 (PSNR difference, dB)", "value": diff[0], "se": diff[1], "met": diff[0] > 2 * diff[1]})
    # what QUEEN pays or gains in quality against every other row (reported, not claimed)
    psnr_gaps = {row: dict(zip(("mean", "se"), mean_se(queen_psnr - column(row, "psnr")))) for row in rows if row != "queen"}
    return {"runs": [{k: r[k] for k in ("run", "overrides", "sha", "dirty")} for r in runs], "strongest_baseline": strongest,
            "rows": {row: {m: {"mean": v[0], "se": v[1]} for m, v in ms.items()} for row, ms in table.items()}, "claims": out,
            "queen_psnr_minus": psnr_gaps}


def format_claims(result: dict) -> str:
    n = len(result["runs"])
    lines = [f"{n} runs; strongest baseline: {result['strongest_baseline'] or 'none of these runs have one'} (higher mean PSNR of {', '.join(BASELINES)})",
             f"{'row':12s} {'PSNR (dB)':>16s} {'MB/frame':>20s}"]
    for row, ms in result["rows"].items():
        lines.append(f"{row:12s} {ms['psnr']['mean']:8.2f} ± {ms['psnr']['se']:5.2f} {ms['mb_per_frame']['mean']:11.5f} ± {ms['mb_per_frame']['se']:.5f}")
    for c in result["claims"]:
        lines.append(f"{'met    ' if c['met'] else 'NOT met'} {c['claim']}: {c['value']:+.4g} ± {c['se']:.2g}")
    lines.append("QUEEN's PSNR minus each row's, paired (dB): " + ", ".join(
        f"{row} {d['mean']:+.2f} ± {d['se']:.2f}" for row, d in result["queen_psnr_minus"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="write the claims as JSON here (refuses to overwrite without --force)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = claims([load_run(d) for d in args.runs])
        if args.out is not None:
            if args.out.exists() and not args.force:
                raise DataError(f"{args.out} exists; pass --force to replace it")
            from shared.io import atomic_write_json

            atomic_write_json(args.out, result)
    except DataError as err:
        print(f"queen claims: {err}", file=sys.stderr)
        return 2
    print(format_claims(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
