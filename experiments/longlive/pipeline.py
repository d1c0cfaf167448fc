"""StreamDiffusionV2's pipeline orchestration at CPU scale: the host's blocks split across
``torch.distributed`` ranks (gloo between CPU processes, NCCL between GPUs), several viewers' streams
in flight so that every rank has work while the others run theirs.

    python -m experiments.longlive pipeline                       # FPS and latency on 1 and 2 ranks, 4 streams
    python -m experiments.longlive pipeline --ranks 1 2 4 --streams 8 --chunks 12 --json out.json

Rank 0 holds the samplers: each stream's ``Stream.chunk_calls`` coroutine yields the model calls it
needs; rank 0 embeds the call's frames and runs the first slice of blocks, then hands the tokens on
(non-blocking) and goes on to the next stream's call; rank r runs its slice and passes the tokens to
r + 1; the last rank runs the output head and sends the velocity back to rank 0, which resumes that
stream's sampler. Calls leave and return in order, so the ranks form a pipeline as deep as the
streams in flight. Every rank keeps, per stream, the KV caches of its own blocks, filled by the same
calls in the same order as one process would: a stream's frames are the single-process model's
(tested in float64 over gloo). Written here because no library pipelines a *streaming* sampler
whose KV caches live beside each stage (torch.distributed.pipelining schedules training micro-batches
of a stateless module).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shared.cli import one_line_errors, refuse_overwrite, tool_command
from shared.errors import ConfigError

from .model import CachedAttention, CausalVideoDiT, new_caches
from .stream import Stream

STOP = -1


def stage_layers(depth: int, ranks: int, rank: int) -> range:
    """The blocks rank ``rank`` of ``ranks`` runs: contiguous, as equal as the depth allows."""
    if not 1 <= ranks <= depth:
        raise ConfigError(f"{ranks} ranks cannot split a host of {depth} blocks (1 to {depth})")
    bounds = np.linspace(0, depth, ranks + 1).round().astype(int)
    return range(int(bounds[rank]), int(bounds[rank + 1]))


@dataclass
class Timing:
    seconds: float
    frames: int
    chunk_ms: list[float]  # per (stream, chunk): from the chunk's first call leaving rank 0 to its emission


def run_streams(model: CausalVideoDiT, streams: list[Stream], text: torch.Tensor, chunks: int) -> Timing:
    """Single process: the same streams, round-robin chunk by chunk (the pipeline's baseline)."""
    lat, start = [], time.perf_counter()
    with torch.no_grad():
        for _ in range(chunks):
            for m, stream in enumerate(streams):
                t0 = time.perf_counter()
                stream.next_chunk(text[m : m + 1])
                lat.append(1000 * (time.perf_counter() - t0))
    return Timing(time.perf_counter() - start, chunks * len(streams) * model.cfg.chunk, lat)


def _send(tensors: list[torch.Tensor], to: int) -> list:
    return [dist.isend(t.contiguous(), to) for t in tensors]


def _recv_header(source: int) -> torch.Tensor:
    header = torch.empty(5, dtype=torch.int64)
    dist.recv(header, source)
    return header


def lead(model: CausalVideoDiT, streams: list[Stream], text: torch.Tensor, chunks: int, ranks: int) -> Timing:
    """Rank 0: drive every stream's sampler, run the first slice, keep the pipeline full."""
    layers = stage_layers(len(model.blocks), ranks, 0)
    dtype = streams[0].dtype
    pending: list = []  # isend handles (their buffers must live until sent)
    in_flight: list[int] = []  # stream ids whose call is in the pipeline, in order
    calls, current, left = {}, {}, {m: chunks for m in range(len(streams))}
    started, lat = {}, []

    def launch(m: int) -> None:
        call = current[m]
        h = model.run_blocks(model.embed(call.x), *model.conditioning(call.sigma, call.text, dtype), call.attention, layers)
        b, frames = call.x.shape[:2]
        header = torch.tensor([m, int(call.attention.write), b, frames, call.text.shape[1]])
        pending.extend(_send([header, call.sigma, call.text, h], 1))
        in_flight.append(m)

    def next_chunk(m: int) -> None:
        calls[m] = streams[m].chunk_calls(text[m : m + 1])
        current[m] = next(calls[m])
        started[m] = time.perf_counter()

    begin = time.perf_counter()
    with torch.no_grad():
        for m in range(len(streams)):
            next_chunk(m)
            launch(m)
        while in_flight:
            m = in_flight.pop(0)
            call = current[m]
            v = torch.empty_like(call.x)
            dist.recv(v, ranks - 1)
            try:
                current[m] = calls[m].send(v)
            except StopIteration:  # the context pass is done: the chunk is out
                lat.append(1000 * (time.perf_counter() - started[m]))
                left[m] -= 1
                if not left[m]:
                    continue
                next_chunk(m)
            launch(m)
            pending[:] = [w for w in pending if not w.is_completed()]
        for w in pending:
            w.wait()
    seconds = time.perf_counter() - begin
    dist.send(torch.tensor([STOP, 0, 0, 0, 0]), 1)  # each rank passes it on
    return Timing(seconds, chunks * len(streams) * model.cfg.chunk, lat)


def follow(model: CausalVideoDiT, streams: int, policy, rank: int, ranks: int, dtype: torch.dtype) -> None:
    """Rank r > 0: run this rank's blocks for every call that arrives, with each stream's own caches."""
    cfg = model.cfg
    layers, rope, last = stage_layers(len(model.blocks), ranks, rank), cfg.rope(), rank == ranks - 1
    caches = [new_caches(cfg, policy, 1, dtype) for _ in range(streams)]
    with torch.no_grad():
        while True:
            header = _recv_header(rank - 1)
            m, write, b, frames, words = (int(v) for v in header)
            if m == STOP:
                if not last:
                    dist.send(header, rank + 1)
                return
            sigma, text = torch.empty(b, frames, dtype=dtype), torch.empty(b, words, dtype=torch.int64)
            h = torch.empty(b, frames * cfg.tokens_per_frame, cfg.dim, dtype=dtype)
            for t in (sigma, text, h):
                dist.recv(t, rank - 1)
            cond, word_vectors = model.conditioning(sigma, text, dtype)
            h = model.run_blocks(h, cond, word_vectors, CachedAttention(caches[m], rope, bool(write)), layers)
            if last:
                dist.send(model.head(h, cond), 0)
            else:
                for w in _send([header, sigma, text, h], rank + 1):
                    w.wait()


def _worker(rank: int, ranks: int, init: str, state: dict, streams: int, chunks: int, seed: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=ranks)
    try:
        model, policy, text, dtype = _build(state)
        if rank == 0:
            made = new_streams(model, policy, streams, seed, dtype)
            timing = lead(model, made, text, chunks, ranks)
            torch.save({"timing": timing.__dict__, "video": torch.stack([s.video()[0] for s in made])}, out)
        else:
            follow(model, streams, policy, rank, ranks, dtype)
    finally:
        dist.destroy_process_group()


def new_streams(model: CausalVideoDiT, policy, streams: int, seed: int, dtype: torch.dtype) -> list[Stream]:
    """One viewer each, its own seeded noise (so any schedule of the calls gives the same frames)."""
    return [Stream(model, policy, 1, torch.Generator().manual_seed(seed * 1000 + m), dtype=dtype) for m in range(streams)]


def _build(state: dict):
    model = CausalVideoDiT(state["cfg"]).to(state["dtype"])
    model.load_state_dict(state["weights"])
    return model.eval(), state["policy"], state["text"], state["dtype"]


def pipelined(model: CausalVideoDiT, policy, text: torch.Tensor, chunks: int, ranks: int, seed: int = 0) -> tuple[Timing, torch.Tensor]:
    """Run ``len(text)`` streams for ``chunks`` chunks over ``ranks`` gloo processes on this machine;
    (timing, frames [streams, F, C, H, W]). ``ranks`` 1: the single process, same streams."""
    dtype = next(model.parameters()).dtype
    if ranks == 1:  # one thread, as each rank of the pipeline has (one core per stage, as one GPU per stage)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            streams = new_streams(model, policy, len(text), seed, dtype)
            timing = run_streams(model, streams, text, chunks)
        finally:
            torch.set_num_threads(threads)
        return timing, torch.stack([s.video()[0] for s in streams])
    state = {"cfg": model.cfg, "weights": model.state_dict(), "policy": policy, "text": text, "dtype": dtype}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "lead.pt")
        mp.spawn(_worker, args=(ranks, f"tcp://127.0.0.1:{_free_port()}", state, len(text), chunks, seed, out), nprocs=ranks, join=True)
        result = torch.load(out, weights_only=False)
    return Timing(**result["timing"]), result["video"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def paired_ratios(rows: list[dict], ranks: list[int]) -> dict:
    """Per depth after the first: FPS and median chunk latency over the first depth's, each repeat's
    ratio against the same repeat's first depth, mean ± s.e. over repeats."""
    from shared.results import mean_se

    by = {(row["ranks"], row["repeat"]): row for row in rows}
    repeats = sorted({row["repeat"] for row in rows})
    return {f"{r} / {ranks[0]} ranks": {key: mean_se([by[r, i][key] / by[ranks[0], i][key] for i in repeats]) for key in ("fps", "chunk_ms_median")}
            for r in ranks[1:]}


@one_line_errors("longlive pipeline")
def main(argv: list[str] | None = None) -> int:
    from shared.procedural import tokens

    from .tool import SHIPPED, load

    p = argparse.ArgumentParser(prog="python -m experiments.longlive pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="pipeline depths to compare (1 = one process)")
    p.add_argument("--streams", type=int, default=4, help="viewers in flight (at least the deepest pipeline to keep it full)")
    p.add_argument("--chunks", type=int, default=12, help="chunks per stream")
    p.add_argument("--checkpoint", default=None, help="a run's checkpoint (default: the shipped self-forcing student)")
    p.add_argument("--repeats", type=int, default=1, help="runs of every depth, alternating (ratios are paired over them)")
    p.add_argument("--json", default=None, help="write the measurements here")
    p.add_argument("--width", type=int, default=None,
                   help="timing only: an untrained host this wide (heads of 16 channels; frames are noise-shaped, "
                        "the equality check still runs), to see where the pipeline pays as the per-stage compute grows")
    args = p.parse_args(argv)
    if args.streams < 1 or args.chunks < 1 or args.repeats < 1 or min(args.ranks) < 1:
        raise ConfigError("--streams, --chunks, --repeats and --ranks must be positive")
    refuse_overwrite(args.json, "--json")
    from shared.streaming.policies import FrameSink

    model, _, _ = load(Path(args.checkpoint) if args.checkpoint else SHIPPED)
    if args.width is not None:
        if args.width < 16 or args.width % 16:
            raise ConfigError(f"--width {args.width} must be a positive multiple of 16 (one head per 16 channels)")
        torch.manual_seed(0)
        model = CausalVideoDiT(dataclasses.replace(model.cfg, dim=args.width, heads=args.width // 16)).eval()
        print(f"longlive pipeline: an UNTRAINED host of width {args.width}, for timing only", flush=True)
    cfg = model.cfg
    for r in args.ranks:
        stage_layers(cfg.depth, r, 0)  # refuse a depth that does not split, before any process starts
    policy = FrameSink(cfg.tokens_per_frame, sink_frames=2, window_frames=7)  # the generate tool's default
    colours = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    text = torch.stack([torch.from_numpy(tokens([colours[m % 6], "circle"], cfg.text_len)) for m in range(args.streams)])
    rows, reference = [], None
    for repeat in range(args.repeats):  # depths alternate, so a slow spell of the machine hits every depth
        for r in args.ranks:
            timing, video = pipelined(model, policy, text, args.chunks, r)
            reference = video if reference is None else reference
            difference = float((video - reference).abs().max())
            rows.append({"ranks": r, "repeat": repeat, "streams": args.streams, "width": cfg.dim, "trained": args.width is None,
                         "fps": timing.frames / timing.seconds, "chunk_ms_median": float(np.median(timing.chunk_ms)),
                         "chunk_ms_p95": float(np.percentile(timing.chunk_ms, 95)), "frames": timing.frames, "seconds": timing.seconds,
                         "max_difference_to_first": difference})
            print(f"longlive pipeline: {r} rank(s), {args.streams} streams x {args.chunks} chunks: {rows[-1]['fps']:.1f} FPS, "
                  f"chunk latency median {rows[-1]['chunk_ms_median']:.1f} ms (p95 {rows[-1]['chunk_ms_p95']:.1f})", flush=True)
            # the same calls in the same order: equal up to float32 summation order (bitwise in float64, tested)
            if difference > 1e-4:
                raise RuntimeError(f"the {r}-rank pipeline's frames differ from the {args.ranks[0]}-rank run's (max {difference:.2e})")
    paired = paired_ratios(rows, args.ranks)
    for name, ratios in paired.items():
        print(f"longlive pipeline: {name} over {args.repeats} repeat(s): " + ", ".join(f"{k} {m:.3f} ± {se:.3f}" for k, (m, se) in ratios.items()))
    if args.json:
        from shared.provenance import write_tool_result

        write_tool_result(Path(args.json), {"rows": rows, "paired": paired, "cpu_count": os.cpu_count()},
                          tool_command("experiments.longlive", "pipeline", argv))
    return 0
