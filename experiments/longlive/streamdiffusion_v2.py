"""Table ``streamdiffusion_v2``: StreamDiffusionV2's components, each as its paired effect against the
strongest fair baseline of the same tool run, gathered from the four tools' published JSON.

    python -m experiments.longlive streamdiffusion_v2 [--results notebooks/longlive/results] [--out table.csv]

The components are tools, not rows of ``streamlab reproduce longlive``: each runs on the shipped
self-forcing student with a measurement design of its own (simulated arrivals for the SLO-aware
scheduler, gloo ranks for the pipeline, alternating timing passes for the stream batch, slow and fast
video-to-video clips for the noise controller and the sink tokens). This table puts their claims side
by side, each with the commit its JSON came from.

effect: row - baseline (a difference; null 0) or row / baseline (a ratio; null 1), with its standard
error over the tool's pairs (arrival seeds, repeats, timing passes, clip x noise seed). Verdict: "met"
when the effect lies more than 2 s.e. on the better side of the null, "contradicted" when more than
2 s.e. on the worse side, else "not resolved"; a measured side the paper claims nothing about
(the stream batch's latency, its quality against another sampler) reads "better" or "worse". "Strongest baseline": the static batch size best on
that metric; the pipeline's single process; the sequential sampler with the stream batch's own outputs
(`levels`) for speed and the sampler the student was trained with for quality; the fixed strength
matched to the controller's mean noise; the same cache without sinks.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shared.cli import one_line_errors, refuse_overwrite
from shared.errors import ConfigError

RESULTS = Path(__file__).resolve().parents[2] / "notebooks" / "longlive" / "results"
# the file each tool publishes, and the command that makes it
SOURCES = {
    "serving.json": "python -m experiments.longlive serving --seeds 0 1 2 3 4 5 6 7 8 9 --out serving.json",
    "pipeline.json": "python -m experiments.longlive pipeline --ranks 1 2 --repeats 5 --json pipeline.json",
    "stream_batch.json": "python -m experiments.longlive stream_batch --json stream_batch.json",
    "v2v.json": "python -m experiments.longlive v2v --clips 32 --seeds 0 1 2 3 4 --json v2v.json",
}
QUALITY = (("position_error", "lower"), ("edit", "higher"), ("seams", "lower"))


@dataclass
class Claim:
    row: str
    against: str
    metric: str
    better: str  # "lower" or "higher"
    effect: float
    se: float
    null: float  # 0 for a difference, 1 for a ratio
    source: str
    commit: str
    claimed: bool = True  # False: a measured side (a cost, a change of quality) the paper makes no claim about

    @property
    def effect_text(self) -> str:
        return f"{self.effect:.4g}x" if self.null == 1 else f"{self.effect:+.4g}"

    @property
    def verdict(self) -> str:
        gain = self.effect - self.null if self.better == "higher" else self.null - self.effect
        if not (math.isfinite(gain) and math.isfinite(self.se)) or abs(gain) <= 2 * self.se:
            return "not resolved"
        if self.claimed:
            return "met" if gain > 0 else "contradicted"
        return "better" if gain > 0 else "worse"


def serving_claims(d: dict) -> list[Claim]:
    """SLO-aware batching against, per metric, the static batch size best on it (all lower is better)."""
    claims = []
    for metric in ("ttff_ms", "miss_rate", "jitter_ms"):
        statics = [s for s in d["per_seed"] if s.startswith("static:")]
        strongest = min(statics, key=lambda s: float(np.mean(d["per_seed"][s][metric])))
        mean, se = d["paired"][f"slo - {strongest}"][metric]
        claims.append(Claim("slo_batching", strongest, metric, "lower", mean, se, 0.0, "serving.json", ""))
    return claims


def pipeline_claims(d: dict) -> list[Claim]:
    """Each deeper pipeline over the single process: FPS (higher) and median chunk latency (lower)."""
    claims = []
    for name, ratio in d["paired"].items():  # "2 / 1 ranks"
        deeper, first = name.split(" ranks")[0].split(" / ")
        for key, better in (("fps", "higher"), ("chunk_ms_median", "lower")):
            claims.append(Claim(f"pipeline_{deeper}_ranks", f"{first} rank{'s' if first != '1' else ''}", f"{key}_ratio", better, *ratio[key], 1.0, "pipeline.json", ""))
    return claims


def stream_batch_claims(d: dict) -> list[Claim]:
    """Per setting (strength, viewers): speed and latency over `levels`, quality against `self_forcing`."""
    claims = []
    for name, setting in d["settings"].items():
        strength, viewers = float(name.split("/")[0]), int(name.split("/")[1])
        task = "t2v" if strength == 1 else "v2v"  # strength 1: text-to-video, the input is never seen
        row = f"stream_batch_{task}_{len(setting['levels'])}_levels_{viewers}_viewer{'s' if viewers > 1 else ''}"
        ratios = setting["ratios"]["stream_batch / levels"]
        claims.append(Claim(row, "levels", "ms_per_frame_ratio", "lower", *ratios["ms_per_frame"], 1.0, "stream_batch.json", ""))
        # a chunk waits n ticks in the batch: the latency is the price the paper names, not a claim
        claims.append(Claim(row, "levels", "latency_ratio", "lower", *ratios["latency_ms"], 1.0, "stream_batch.json", "", claimed=False))
        for key, better in QUALITY:
            if key != "position_error" or task == "v2v":
                claims.append(Claim(row, "self_forcing", key, better, *setting["paired"][key][:2], 0.0, "stream_batch.json", "", claimed=False))
    return claims


def v2v_claims(d: dict) -> list[Claim]:
    """The controller against the matched fixed strength, the sink tokens against the plain rolling
    window, the adaptive sink against the fixed sink (both speeds pooled). The JSON pairs motion - X."""
    claims = []
    for row, against, sign in (("motion_aware_noise", "matched", 1), ("sink_tokens", "motion_rolling", 1), ("adaptive_sink", "motion", -1)):
        paired = d["paired"][f"motion - {'motion_adaptive' if row == 'adaptive_sink' else against} @ every speed"]
        for key, better in QUALITY:
            mean, se = paired[key]
            claims.append(Claim(row, "sink tokens (motion)" if row == "adaptive_sink" else against, key, better, sign * mean + 0.0, se, 0.0, "v2v.json", ""))
    return claims


READERS = {"serving.json": serving_claims, "pipeline.json": pipeline_claims, "stream_batch.json": stream_batch_claims, "v2v.json": v2v_claims}


def table(results: Path) -> tuple[list[Claim], list[str]]:
    """(claims from every published file in ``results``, the files missing with the command that makes each)."""
    claims, missing = [], []
    for name, read in READERS.items():
        path = results / name
        if not path.is_file():
            missing.append(f"{name}: `{SOURCES[name]}`")
            continue
        d = json.loads(path.read_text())
        stamp = d.get("provenance", {})
        commit = stamp["commit"][:7] + ("+dirty" if stamp.get("dirty") else "") if "commit" in stamp else "not recorded"
        claims += [Claim(**{**asdict(c), "commit": commit}) for c in read(d)]
    return claims, missing


def markdown(claims: list[Claim]) -> str:
    lines = ["| row | against | metric | better | effect | s.e. | verdict | source (commit) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.row} | {c.against} | {c.metric} | {c.better} | {c.effect_text} | {c.se:.2g} | {c.verdict} | {c.source} ({c.commit}) |" for c in claims]
    return "\n".join(lines)


@one_line_errors("longlive streamdiffusion_v2")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.longlive streamdiffusion_v2", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="where the tools' JSON files are")
    p.add_argument("--out", type=Path, default=None, help="write the table as CSV (refuses to overwrite)")
    args = p.parse_args(argv)
    refuse_overwrite(args.out, "--out")
    claims, missing = table(args.results)
    if not claims:
        raise ConfigError(f"no tool results in {args.results}: run {'; '.join(missing)}")
    print(markdown(claims))
    for line in missing:
        print(f"not in the table (no file): {line}")
    if args.out is not None:
        from shared.io import atomic_path

        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*asdict(claims[0]), "verdict"])
            writer.writeheader()
            writer.writerows({**asdict(c), "verdict": c.verdict} for c in claims)
    counts = {v: sum(c.verdict == v for c in claims) for v in ("met", "not resolved", "contradicted", "better", "worse")}
    print(f"longlive streamdiffusion_v2: {len(claims)} claims from {len(READERS) - len(missing)} tools: "
          + ", ".join(f"{n} {v}" for v, n in counts.items()) + (f" -> {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
