"""StreamDiffusionV2's stream batch (brief 4.2): the denoising steps of successive chunks in one forward.

    python -m experiments.longlive stream_batch                      # 2 and 4 levels, 1 viewer and 8
    python -m experiments.longlive stream_batch --strengths 0.8 --viewers 1 --json out.json

A sampler of n levels keeps n *rows* in flight. At every tick the rows move down one level, the new
chunk enters row 0 (noised to the first level), and **one forward** runs all rows at their own levels
(a batch of n x viewers); row i < n - 1 is re-noised from its x0 to level i + 1, and the chunk leaving
row n - 1 is finished. Each level has its own KV caches: a row's tokens attend to the earlier chunks'
keys and values *as they were computed at the same level* and write their own there. There is no
clean context pass (Self Forcing's sampler, ``stream.py``, runs one after each chunk): the stream
batch trades that pass, and n - 1 of every n forwards, for a latency of n ticks per chunk.

``sequential_levels`` is the specification: chunk after chunk, level after level, each forward
writing into its level's caches, with the same noise draws (each chunk draws n noises as it enters,
for its first level and every re-noising). ``StreamBatch`` must emit exactly its chunks (tested in
float64); and chunk c's forward at level i must equal one dense forward over every earlier chunk's
level-i input and its own under the policy's mask (tested), which pins what a level cache holds.

The official code warms up by running the first chunk sequentially and copying its cache to every
row; here the pipeline fills instead (the first ticks run only the occupied rows), so every chunk,
the first included, is exactly the sequential sampler's and the first frame comes after n ticks.

The measurement (video-to-video, ``v2v.py``'s edit task on the shipped self-forcing student, a
sink + window cache): per viewer count and strength, wall time per frame and the latency of a chunk
(from its entry to its emission) for three samplers run alternately on the same inputs and noise:
``self_forcing`` (the sampler the student was trained with: n steps + a context pass per chunk),
``levels`` (``sequential_levels``: n forwards per chunk) and ``stream_batch`` (one forward of n rows
per chunk; its frames are checked equal to ``levels``' in the run). Quality: v2v's edit metrics,
``stream_batch - self_forcing`` paired over clips and noise seeds (the price of caching noisy
keys instead of clean ones, on a student trained with clean context).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.cli import one_line_errors, refuse_overwrite, tool_command
from shared.errors import ConfigError
from shared.results import mean_se
from shared.streaming.policies import Policy

from .model import Attention, CachedAttention, CausalVideoDiT, new_caches


class LevelAttention(Attention):
    """A batch of rows at different levels, ``rows`` viewers each: row i's queries see level i's caches
    (``levels[i]``, an index into ``caches``) plus their own keys, which they write there."""

    def __init__(self, caches: list[list], levels: list[int], viewers: int, rope):
        self.parts = [CachedAttention(caches[level], rope, write=True) for level in levels]
        self.viewers = viewers

    def __call__(self, layer, q, k, v):
        b = self.viewers
        return torch.cat([part(layer, q[i * b : (i + 1) * b], k[i * b : (i + 1) * b], v[i * b : (i + 1) * b])
                          for i, part in enumerate(self.parts)])


@dataclass
class Row:
    """A chunk in flight: its index, its frames at the current level, its levels and noise draws."""

    chunk: int
    x: torch.Tensor  # [viewers, chunk, C, H, W] at the level of the row it is in
    levels: list[torch.Tensor]  # per level, [viewers]
    noises: list[torch.Tensor]  # the re-noising draws, one per level after the first


def chunk_levels(levels: list[float], viewers: int, strength: torch.Tensor | None, dtype) -> list[torch.Tensor]:
    """[viewers] per level: the fixed levels, the first replaced by each viewer's ``strength`` (the
    motion controller's), which must stay above the second level so the row count does not change."""
    out = [torch.full((viewers,), float(s), dtype=dtype) for s in levels]
    if strength is not None:
        strength = strength.to(dtype)
        floor = levels[1] if len(levels) > 1 else 0.0
        if strength.shape != (viewers,) or not bool(((strength > floor) & (strength <= 1)).all()):
            raise ValueError(f"strength must be {viewers} levels in ({floor:g}, 1], got {strength.tolist()}")
        out[0] = strength
    return out


def draw(generator: torch.Generator, shape: tuple, dtype, count: int) -> list[torch.Tensor]:
    return [torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) for _ in range(count)]


def _frames(level: torch.Tensor) -> torch.Tensor:
    return level[:, None, None, None, None]


def enter(source: torch.Tensor | None, levels: list[torch.Tensor], noises: list[torch.Tensor]) -> torch.Tensor:
    """The chunk's input at its first level: noise (text-to-video, level 1) or the source noised to it."""
    if source is None:
        if not bool((levels[0] == 1).all()):
            raise ValueError("without a source frame the first level must be 1 (pure noise)")
        return noises[0]
    return (1 - _frames(levels[0])) * source.to(noises[0]) + _frames(levels[0]) * noises[0]


class StreamBatch:
    """n levels in flight, one forward per tick. ``push`` a chunk (its source frames for
    video-to-video), get back the chunk that finished (None while the pipeline fills); ``flush``
    drains it."""

    def __init__(self, model: CausalVideoDiT, policy: Policy, viewers: int, levels: list[float],
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        if not levels or list(levels) != sorted(levels, reverse=True) or not 0 < levels[-1] <= levels[0] <= 1:
            raise ValueError(f"levels must decrease within (0, 1], got {list(levels)}")
        self.model, self.cfg, self.viewers, self.levels, self.dtype = model, model.cfg, viewers, list(levels), dtype
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rope = self.cfg.rope()
        self.caches = [new_caches(self.cfg, policy, viewers, dtype) for _ in levels]
        self.rows: list[Row | None] = [None] * len(levels)
        self.entered = 0
        self.frames: list[torch.Tensor] = []

    @torch.no_grad()
    def push(self, text: torch.Tensor, source: torch.Tensor | None = None, strength: torch.Tensor | None = None) -> torch.Tensor | None:
        cfg = self.cfg
        levels = chunk_levels(self.levels, self.viewers, strength, self.dtype)
        noises = draw(self.generator, (self.viewers, cfg.chunk, cfg.channels, cfg.size, cfg.size), self.dtype, len(levels))
        self.rows[0] = Row(self.entered, enter(source, levels, noises), levels, noises[1:])
        self.entered += 1
        return self.tick(text)

    @torch.no_grad()
    def flush(self, text: torch.Tensor) -> list[torch.Tensor]:
        out = []
        while any(row is not None for row in self.rows):
            done = self.tick(text)
            if done is not None:
                out.append(done)
        return out

    def tick(self, text: torch.Tensor) -> torch.Tensor | None:
        """One forward over the occupied rows at their levels; then every row moves down one level."""
        busy = [i for i, row in enumerate(self.rows) if row is not None]
        b = self.viewers
        x = torch.cat([self.rows[i].x for i in busy])
        level = torch.cat([self.rows[i].levels[i] for i in busy])
        sigma = level[:, None].expand(len(level), self.cfg.chunk)
        v = self.model(x, sigma, text.repeat(len(busy), 1), LevelAttention(self.caches, busy, b, self.rope))
        x0 = x - _frames(level) * v
        finished, moved = None, [None] * len(self.rows)
        for n, i in enumerate(busy):
            row, out = self.rows[i], x0[n * b : (n + 1) * b]
            if i == len(self.rows) - 1:
                finished = out
                continue
            nxt = _frames(row.levels[i + 1])
            moved[i + 1] = Row(row.chunk, (1 - nxt) * out + nxt * row.noises[i], row.levels, row.noises)
        self.rows = moved
        if finished is not None:
            self.frames.append(finished)
        return finished

    def video(self) -> torch.Tensor:
        return torch.cat(self.frames, dim=1)


@torch.no_grad()
def sequential_levels(model: CausalVideoDiT, policy: Policy, viewers: int, levels: list[float], text: torch.Tensor,
                      sources: list[torch.Tensor | None], strengths: list[torch.Tensor | None] | None = None,
                      generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                      record: list | None = None, on_chunk=None) -> torch.Tensor:
    """The stream batch's specification: each chunk in turn through every level, each forward writing
    into its level's caches; the same noise draws. ``record`` (tests) collects (chunk, level, input, x0);
    ``on_chunk(c)`` is called as chunk c is finished (timing)."""
    cfg, generator = model.cfg, generator or torch.Generator().manual_seed(0)
    caches, rope = [new_caches(cfg, policy, viewers, dtype) for _ in levels], cfg.rope()
    frames = []
    for c, source in enumerate(sources):
        chunk_lv = chunk_levels(levels, viewers, None if strengths is None else strengths[c], dtype)
        noises = draw(generator, (viewers, cfg.chunk, cfg.channels, cfg.size, cfg.size), dtype, len(levels))
        x = enter(source, chunk_lv, noises)
        for i, level in enumerate(chunk_lv):
            sigma = level[:, None].expand(viewers, cfg.chunk)
            x0 = x - _frames(level) * model(x, sigma, text, CachedAttention(caches[i], rope, write=True))
            if record is not None:
                record.append((c, i, x, x0))
            if i < len(levels) - 1:
                x = (1 - _frames(chunk_lv[i + 1])) * x0 + _frames(chunk_lv[i + 1]) * noises[i + 1]
        frames.append(x0)
        if on_chunk is not None:
            on_chunk(c)
    return torch.cat(frames, dim=1)


def fixed_levels(sigmas: list[float], strength: float) -> list[float]:
    """Video-to-video levels at a fixed strength: the strength, then the sampler's levels below it
    (as ``Stream.v2v_levels``); strength 1 is text-to-video's full schedule (the first level is 1)."""
    return [strength, *(s for s in sigmas if s < strength)]


def time_samplers(model, policy, inputs: list, text: torch.Tensor, levels: list[float], seed: int, sampler: dict, viewers: int) -> dict:
    """One pass of each sampler over the same clips (``viewers`` streams at once), interleaved so the
    machine's load falls on all three alike; per sampler the output video, seconds and chunk latencies."""
    from .stream import Stream, sigmas_for
    from .v2v import chunks_of

    src = torch.from_numpy(np.stack([c.video for c in inputs])).float()
    chunks = list(chunks_of(src, model.cfg.chunk))
    strength = torch.full((viewers,), levels[0])
    out = {}
    with torch.no_grad():
        stream = Stream(model, policy, batch=viewers, generator=torch.Generator().manual_seed(seed), sigmas=sigmas_for(tuple(sampler["steps"]), float(sampler["shift"])))
        start, lat = time.perf_counter(), []
        for frames, _ in chunks:
            t0 = time.perf_counter()
            stream.next_chunk(text, source=frames, strength=strength)
            lat.append(time.perf_counter() - t0)
        out["self_forcing"] = (stream.video(), time.perf_counter() - start, lat)

        ends = [time.perf_counter()]
        video = sequential_levels(model, policy, viewers, levels, text, [f for f, _ in chunks], generator=torch.Generator().manual_seed(seed),
                                  on_chunk=lambda c: ends.append(time.perf_counter()))
        out["levels"] = (video, ends[-1] - ends[0], list(np.diff(ends)))  # a chunk enters and leaves within its own n forwards

        batch = StreamBatch(model, policy, viewers, levels, generator=torch.Generator().manual_seed(seed))
        start, entered, lat = time.perf_counter(), [], []
        for frames, _ in [*chunks, *[(None, None)] * (len(levels) - 1)]:
            entered.append(time.perf_counter())
            done = batch.push(text, frames) if frames is not None else batch.tick(text)
            if done is not None:
                lat.append(time.perf_counter() - entered[len(lat)])
        out["stream_batch"] = (batch.video(), time.perf_counter() - start, lat)
    return out


def run(args) -> dict:
    import yaml

    from shared.procedural import VOCAB, Reference, recoloured, tokens
    from shared.streaming import FrameSink

    from .stream import sigmas_for
    from .tool import SHIPPED, load
    from .v2v import CONFIG, make_inputs, score_edit

    torch.set_num_threads(args.threads)
    model, horizon, sampler = load(Path(args.checkpoint) if args.checkpoint else SHIPPED)
    host = model.cfg
    if args.frames % host.chunk or args.frames < 2 * host.chunk:
        raise ConfigError(f"--frames must be a multiple of the chunk size {host.chunk}, at least two chunks (got {args.frames})")
    data = yaml.safe_load(CONFIG.read_text())["data"]
    ref = Reference.measure(host.size, horizon, int(data["objects"]), float(data["speed"]), float(data["scale"]), bool(data["stripes"]))
    sigmas = sigmas_for(tuple(sampler["steps"]), float(sampler["shift"]))
    policy = FrameSink(host.tokens_per_frame, sink_frames=2, window_frames=7)  # generate's and v2v's default cache
    inputs = make_inputs(data, args.clips, float(data["speed"]), args.frames, 910000)
    results, total, done = {}, len(args.strengths) * len(args.viewers) * len(args.seeds), 0
    for strength in args.strengths:
        levels = fixed_levels(sigmas, strength)
        for viewers in args.viewers:
            rows = {name: {"ms_per_frame": [], "latency_ms": [], "first_frame_ms": [], **{k: [] for k in ("position_error", "found", "edit", "seams")}}
                    for name in ("self_forcing", "levels", "stream_batch")}
            max_diff = 0.0
            for seed in args.seeds:
                for start in range(0, args.clips - viewers + 1, viewers):  # the clips in groups of ``viewers`` streams
                    group = inputs[start : start + viewers]
                    text = torch.from_numpy(np.stack([tokens(c.text, host.text_len) for c in group]))
                    text[:, 0] = torch.tensor([VOCAB.index(recoloured(c.colours)[0]) for c in group])
                    timed = time_samplers(model, policy, group, text, levels, seed, sampler, viewers)
                    max_diff = max(max_diff, float((timed["stream_batch"][0] - timed["levels"][0]).abs().max()))
                    for name, (video, seconds, lat) in timed.items():
                        r = rows[name]
                        r["ms_per_frame"].append(1000 * seconds / (args.frames * viewers))
                        r["latency_ms"].append(1000 * float(np.mean(lat)))
                        r["first_frame_ms"].append(1000 * lat[0])
                        for i, clip in enumerate(group):
                            for k, v in score_edit(video[i].numpy(), clip, ref).items():
                                r[k].append(v)
                done += 1
                print(f"\rlonglive stream_batch: {done}/{total} (strength {strength:g}, {viewers} viewers, seed {seed})", end="", file=sys.stderr, flush=True)
            results[f"{strength:g}/{viewers}"] = {"levels": levels, "viewers": viewers, "rows": rows, "max_abs_diff_stream_batch_vs_levels": max_diff}
    print(file=sys.stderr)
    return {"clips": args.clips, "frames": args.frames, "seeds": args.seeds, "threads": args.threads, "settings": results}


def paired(rows: dict, a: str, b: str, key: str) -> tuple[float, float, int]:
    """Mean and s.e. of a - b over (clip, noise seed) pairs, and how many pairs were finite."""
    d = np.array(rows[a][key]) - np.array(rows[b][key])
    d = d[np.isfinite(d)]
    return (*mean_se(d), len(d))


def ratio(rows: dict, a: str, b: str, key: str) -> tuple[float, float]:
    """Mean and s.e. of a / b over the paired timing passes."""
    return mean_se(np.array(rows[a][key]) / np.array(rows[b][key]))


@one_line_errors("longlive stream_batch")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.longlive stream_batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=8, help="held-out clips at the training speed")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.8, 1.0], help="0.8: 2 levels (StreamDiffusionV2's default), 1: text-to-video's 4")
    p.add_argument("--viewers", type=int, nargs="+", default=[1, 8], help="streams served at once (each timing pass runs this many clips)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="noise seeds (the same for every sampler)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", default=None, help="a run's checkpoint (default: the shipped self-forcing student)")
    p.add_argument("--json", type=Path, help="write the results here (refuses to overwrite)")
    args = p.parse_args(argv)
    if args.clips < 2 or not args.seeds or min(args.viewers) < 1 or max(args.viewers) > args.clips or args.threads < 1:
        raise ConfigError("--clips must be at least 2, --seeds non-empty, --viewers between 1 and --clips, --threads positive")
    if not all(0 < s <= 1 for s in args.strengths):
        raise ConfigError(f"--strengths must lie in (0, 1] (got {args.strengths})")
    refuse_overwrite(args.json, "--json")
    result = run(args)
    for setting in result["settings"].values():
        rows = setting["rows"]
        setting["ratios"] = {f"{a} / {b}": {k: ratio(rows, a, b, k) for k in ("ms_per_frame", "latency_ms")}
                             for a, b in (("stream_batch", "levels"), ("stream_batch", "self_forcing"), ("levels", "self_forcing"))}
        setting["paired"] = {k: paired(rows, "stream_batch", "self_forcing", k) for k in ("position_error", "edit", "seams", "found")}
    if args.json is not None:
        from shared.provenance import write_tool_result

        write_tool_result(args.json, result, tool_command("experiments.longlive", "stream_batch", argv))
    print(f"{'strength/viewers':16s} {'sampler':13s} {'ms/frame':>9s} {'latency ms':>10s} {'first ms':>9s} {'pos err':>8s} {'edit':>6s} {'seams':>6s}")
    for name, setting in result["settings"].items():
        for row, r in setting["rows"].items():
            print(f"{name:16s} {row:13s} {np.mean(r['ms_per_frame']):9.2f} {np.mean(r['latency_ms']):10.1f} {np.mean(r['first_frame_ms']):9.1f} "
                  f"{np.nanmean(r['position_error']):8.3f} {np.mean(r['edit']):6.3f} {np.mean(r['seams']):6.3f}")
        for pair, c in setting["ratios"].items():
            print(f"  {pair}: " + ", ".join(f"{k} {m:.3f} ± {se:.3f}" for k, (m, se) in c.items()))
        print("  stream_batch - self_forcing: " + ", ".join(f"{k} {m:+.3g} ± {se:.2g}" for k, (m, se, _) in setting["paired"].items())
              + f"; stream batch = levels to {setting['max_abs_diff_stream_batch_vs_levels']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
