"""StreamDiffusionV2's SLO-aware batching, simulated on the host's measured cost (table-free tool).

    python -m experiments.longlive serving --viewers 8 --fps 8 --slo-ms 400 --seconds 20 --seeds 0 1 2 3 4

Viewers join a server at seeded random times and each watches its own stream: chunk k of a viewer
is *released* at join + k x (chunk / fps) (the server may not run ahead of the viewer's clock) and
can only be generated after chunk k - 1 (the stream is autoregressive); it is *due* at its release
+ the SLO. One worker runs batches of chunks of different viewers; a batch of B chunks takes the
host's measured time for B streams (``measure_latency``: the shipped self-forcing student, one
thread, median over chunks after the cache has filled; other batch sizes interpolated linearly).

Schedulers (StreamDiffusionV2 sec. "SLO-aware batching"; ours is a readable reading of it):
- ``static:B``: wait for B ready chunks (or until the oldest has waited ``max_wait``), then run them;
- ``slo``: earliest deadline first; the largest batch whose finish time meets the earliest chosen
  deadline (every other chosen one is later); if even one chunk would be late, every ready chunk
  (overloaded: catch up at the best throughput).

Measured per run: time to first frame (join to first chunk delivered), deadline misses (share of
chunks delivered after their due time), jitter (standard deviation of the intervals between a
viewer's deliveries), frames per second delivered. Claims are paired over seeds (same arrivals).
The simulation is exact event stepping, so a seed gives the same numbers on any machine for a given
latency table; only the table is measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.cli import one_line_errors, refuse_overwrite, tool_command
from shared.errors import ConfigError
from shared.results import mean_se


@dataclass(frozen=True)
class Latency:
    """Seconds to generate one chunk for each of B streams at once, measured at ``sizes``."""

    sizes: tuple[int, ...]
    seconds: tuple[float, ...]

    def __call__(self, batch: int) -> float:
        return float(np.interp(batch, self.sizes, self.seconds, right=self.seconds[-1] * batch / self.sizes[-1]))


@dataclass
class Viewer:
    join: float
    released: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)


def arrivals(seed: int, viewers: int, join_window: float) -> list[float]:
    """Join times, seeded, sorted: uniform over the first ``join_window`` seconds."""
    return sorted(np.random.default_rng([seed, 21]).uniform(0.0, join_window, viewers).tolist())


def simulate(latency: Latency, scheduler: str, joins: list[float], period: float, slo: float, seconds: float, max_wait: float) -> dict:
    """Run one server until ``seconds``; returns the metrics and every viewer's deliveries."""
    static = None
    if scheduler.startswith("static:"):
        static = int(scheduler.split(":", 1)[1])
    elif scheduler != "slo":
        raise ConfigError(f"scheduler {scheduler!r}: slo or static:B")
    viewers = [Viewer(join) for join in joins]
    now = 0.0

    def ready(t: float) -> list[tuple[float, int]]:
        """(due time, viewer) of every viewer whose next chunk is released by t (its previous chunk is done)."""
        out = []
        for i, v in enumerate(viewers):
            release = v.join + len(v.delivered) * period
            if release <= t and release < seconds:
                out.append((release + slo, i))
        return sorted(out)

    def next_release(t: float) -> float:
        times = [v.join + len(v.delivered) * period for v in viewers]
        later = [r for r in times if r > t and r < seconds]
        return min(later) if later else float("inf")

    while now < seconds:
        queue = ready(now)
        if not queue:
            now = next_release(now)
            continue
        if static is not None:
            oldest = min(due - slo for due, _ in queue)
            if len(queue) < static and now < oldest + max_wait:  # wait for a full batch, at most max_wait
                now = min(next_release(now), oldest + max_wait)
                continue
            chosen = queue[:static]
        else:
            chosen = queue  # nothing meets the earliest deadline: it is late anyway, so take the throughput
            for b in range(len(queue), 0, -1):  # the largest batch that still meets the earliest chosen deadline
                if now + latency(b) <= queue[0][0]:
                    chosen = queue[:b]
                    break
        done = now + latency(len(chosen))
        for due, i in chosen:
            viewers[i].released.append(due - slo)
            viewers[i].delivered.append(done)
        now = done
    return metrics(viewers, slo, seconds) | {"viewers": viewers}


def metrics(viewers: list[Viewer], slo: float, seconds: float) -> dict:
    ttff = [v.delivered[0] - v.join for v in viewers if v.delivered]
    late = [d > r + slo + 1e-12 for v in viewers for r, d in zip(v.released, v.delivered)]
    jitter = [float(np.std(np.diff(v.delivered))) for v in viewers if len(v.delivered) > 2]
    chunks = sum(len(v.delivered) for v in viewers)
    return {"ttff_ms": 1000 * float(np.mean(ttff)), "miss_rate": float(np.mean(late)) if late else 0.0,
            "jitter_ms": 1000 * float(np.mean(jitter)) if jitter else 0.0, "chunks": chunks,
            "chunks_per_second": chunks / seconds}


def measure_latency(sizes=(1, 2, 4, 8), chunks: int = 12, rounds: int = 3) -> tuple[Latency, dict]:
    """The shipped student's seconds per chunk for each batch size (one thread, median over the
    chunks after the first horizon, so the cache is full and the cost is the steady one). The sizes
    alternate over ``rounds`` (a slow spell of a shared machine then hits every size, not one):
    the median is over every round's timed chunks."""
    import torch

    from shared.procedural import tokens
    from shared.streaming import FrameSink

    from .stream import Stream, sigmas_for
    from .tool import SHIPPED, load

    torch.set_num_threads(1)
    model, horizon, sampler = load(SHIPPED)
    host = model.cfg
    policy = FrameSink(host.tokens_per_frame, sink_frames=2, window_frames=5)  # the sink_window row's policy
    text = torch.from_numpy(tokens(["red", "circle", "blue", "square"], host.text_len))[None]
    warm = horizon // host.chunk
    timed = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            stamps = []
            stream = Stream(model, policy, batch=b, generator=torch.Generator().manual_seed(0), sigmas=sigmas_for(tuple(sampler["steps"]), float(sampler["shift"])))
            with torch.no_grad():
                stream.generate(text.repeat(b, 1), warm + chunks, on_chunk=lambda i, _: stamps.append(time.perf_counter()))
            timed[b] += list(np.diff(stamps)[warm - 1 :])
    seconds = tuple(float(np.median(timed[b])) for b in sizes)
    return Latency(tuple(sizes), seconds), {"model": str(SHIPPED.relative_to(SHIPPED.parents[3])), "chunk_frames": host.chunk,
                                            "threads": 1, "chunks_timed": chunks, "rounds": rounds}


def paired(results: dict, a: str, b: str, key: str) -> tuple[float, float]:
    """Mean and standard error over seeds of a - b (same arrivals)."""
    return mean_se(np.array(results[a][key]) - np.array(results[b][key]))


def run(args) -> dict:
    if args.viewers < 1 or args.fps <= 0 or args.slo_ms <= 0 or args.seconds <= 0:
        raise ConfigError("--viewers, --fps, --slo-ms and --seconds must be positive")
    latency, provenance = measure_latency()
    period = provenance["chunk_frames"] / args.fps
    schedulers = ["slo", *[f"static:{b}" for b in args.static]]
    results = {s: {"ttff_ms": [], "miss_rate": [], "jitter_ms": [], "chunks_per_second": []} for s in schedulers}
    for seed in args.seeds:
        joins = arrivals(seed, args.viewers, args.seconds / 2)
        for s in schedulers:
            out = simulate(latency, s, joins, period, args.slo_ms / 1000, args.seconds, args.max_wait_ms / 1000)
            for key in results[s]:
                results[s][key].append(out[key])  # (out["viewers"]: every delivery, for tests and figures)
    claims = {f"slo - {s}": {key: paired(results, "slo", s, key) for key in ("ttff_ms", "miss_rate", "jitter_ms")} for s in schedulers[1:]}
    return {"latency_ms_per_chunk": dict(zip(map(str, latency.sizes), (1000 * x for x in latency.seconds))), "provenance": provenance,
            "settings": {k: getattr(args, k) for k in ("viewers", "fps", "slo_ms", "seconds", "seeds", "static", "max_wait_ms")},
            "per_seed": results, "paired": claims}


@one_line_errors("longlive serving")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.longlive serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, default=8)
    p.add_argument("--fps", type=float, default=8.0, help="frames per second each viewer watches")
    p.add_argument("--slo-ms", type=float, default=400.0, help="a chunk is due this long after its release")
    p.add_argument("--seconds", type=float, default=20.0, help="simulated time; viewers join in its first half")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--static", type=int, nargs="+", default=[1, 4, 8], help="static batch sizes to compare")
    p.add_argument("--max-wait-ms", type=float, default=200.0, help="static batching: the longest a ready chunk waits for a full batch")
    p.add_argument("--out", type=Path, help="write the results as JSON (refuses to overwrite)")
    args = p.parse_args(argv)
    refuse_overwrite(args.out, "--out")
    result = run(args)
    if args.out is not None:
        from shared.provenance import write_tool_result

        write_tool_result(args.out, result, tool_command("experiments.longlive", "serving", argv))
    lat = ", ".join(f"B={b}: {ms:.1f}" for b, ms in result["latency_ms_per_chunk"].items())
    print(f"measured ms per chunk ({lat})")
    for s, r in result["per_seed"].items():
        print(f"{s:9s} ttff {np.mean(r['ttff_ms']):7.1f} ms  misses {np.mean(r['miss_rate']):6.1%}  jitter {np.mean(r['jitter_ms']):6.1f} ms  "
              f"{np.mean(r['chunks_per_second']):5.2f} chunks/s")
    for name, c in result["paired"].items():
        print(f"{name}: " + ", ".join(f"{k} {m:+.3g} ± {se:.2g}" for k, (m, se) in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
