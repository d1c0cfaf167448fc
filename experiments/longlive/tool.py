"""Stream a video from the trained host, with prompt switches and the cache policy of your choice.

    python -m experiments.longlive generate --prompt red circle --switch-at 48 blue square --frames 200 --out clip.mp4
    python -m experiments.longlive generate --prompt green triangle yellow square --policy sink --sink-frames 2 --window-frames 7
    python -m experiments.longlive ship outputs/longlive/<run>      # make a run's self-forcing student the default model

Prompts are colour + shape word pairs (``shared/procedural``'s vocabulary). A switch at frame f
takes effect at the chunk that starts there (f must be a multiple of the chunk size); what happens
to the cache is ``--switch-mode`` (keep / clear / recache, LongLive's choice). Each chunk prints
its milliseconds per frame; the run ends with one summary line. The default model is the shipped
self-forcing student (``weights/``, with its provenance); ``--checkpoint`` takes a run's
``checkpoints/model_<row>.pt``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, DataError, StreamlabError

USAGE_ERROR = 2
WEIGHTS = Path(__file__).resolve().parent / "weights"
SHIPPED = WEIGHTS / "self_forcing.pt"


def _prompt_ids(words: list[str], text_len: int):
    from shared.procedural import COLOURS, SHAPES, tokens

    if not words or len(words) % 2:
        raise ConfigError(f"a prompt is colour + shape pairs, e.g. 'red circle blue square' (got {' '.join(words) or 'nothing'})")
    for colour, shape in zip(words[::2], words[1::2]):
        if colour not in COLOURS or shape not in SHAPES:
            raise ConfigError(f"'{colour} {shape}' is not a colour + shape pair; colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}")
    if len(words) > text_len:
        raise ConfigError(f"at most {text_len // 2} objects per prompt (got {len(words) // 2})")
    return tokens(words, text_len)


def _policy(args, host, horizon: int):
    from shared.streaming import FrameSink, Full

    if args.policy == "full":
        if args.frames > horizon:
            raise ConfigError(f"--policy full keeps every frame, but the model was trained on {horizon}-frame clips: "
                              f"use --policy window or sink for {args.frames} frames")
        return Full(args.frames * host.tokens_per_frame)
    sinks = args.sink_frames if args.policy == "sink" else 0
    if args.window_frames < 1 or sinks < 0:
        raise ConfigError("--window-frames must be at least 1 and --sink-frames at least 0")
    seen = sinks + args.window_frames - 1 + host.chunk
    if seen > horizon:
        raise ConfigError(f"sink {sinks} + window {args.window_frames} - 1 + a chunk of {host.chunk} = {seen} frames seen at once, more than the "
                          f"{horizon} frames the model was trained on: lower --window-frames to at most {horizon - sinks - host.chunk + 1}")
    return FrameSink(host.tokens_per_frame, sink_frames=sinks, window_frames=args.window_frames)


def load(path: Path):
    """(model, horizon, sampler settings) from a checkpoint or the shipped weights; one clear line if it cannot."""
    import torch

    from shared.io import load_checkpoint

    from .model import CausalVideoDiT, HostConfig

    if not path.is_file():
        if path == SHIPPED:
            raise DataError(f"no shipped model at {path}: run `streamlab reproduce longlive --preset cpu`, then `python -m experiments.longlive ship <run dir>`")
        raise DataError(f"no checkpoint at {path}")
    try:
        state = load_checkpoint(path, "cpu")
    except StreamlabError:
        raise
    except Exception as err:  # a truncated or foreign file: say which, in one line
        raise DataError(f"{path} is not a checkpoint of this experiment ({type(err).__name__})") from err
    if not isinstance(state, dict) or "host" not in state or "model" not in state:
        raise DataError(f"{path} is not a longlive checkpoint (no host configuration inside)")
    try:
        host = HostConfig(**{**state["host"], "rope_bands": tuple(state["host"]["rope_bands"])})
        host.check()
        model = CausalVideoDiT(host)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{path} holds a model of another configuration: {str(err).splitlines()[0]}") from err
    sampler = state.get("sampler", {"steps": [1000, 750, 500, 250], "shift": 5.0})
    return model.eval().to(torch.float32), int(state.get("horizon", 16)), sampler


def generate(args) -> dict:
    import torch

    from shared.video import write_video

    from .stream import Stream, sigmas_for

    out = Path(args.out)
    if out.suffix not in (".mp4", ".mkv", ".npy"):
        raise ConfigError(f"--out {out}: give an .mp4, .mkv or .npy file name")
    if out.exists() and not args.overwrite:
        raise DataError(f"{out} exists; pass --overwrite to replace it or --out to write elsewhere")
    model, horizon, sampler = load(Path(args.checkpoint) if args.checkpoint else SHIPPED)
    host = model.cfg
    if args.frames < host.chunk or args.frames % host.chunk:
        raise ConfigError(f"--frames {args.frames} must be a positive multiple of the chunk size {host.chunk}")
    segments = [(0, _prompt_ids(args.prompt, host.text_len))]
    for switch in args.switch_at or []:
        try:
            frame, words = int(switch[0]), switch[1:]
        except ValueError:
            raise ConfigError(f"--switch-at wants a frame then words (got {' '.join(switch)})") from None
        if not 0 < frame < args.frames or frame % host.chunk or frame <= segments[-1][0]:
            raise ConfigError(f"switch at frame {frame}: it must be after the previous switch, before the last frame {args.frames}, "
                              f"and a multiple of the chunk size {host.chunk}")
        segments.append((frame, _prompt_ids(words, host.text_len)))
    policy = _policy(args, host, horizon)
    stream = Stream(model, policy, batch=1, generator=torch.Generator().manual_seed(args.seed), sigmas=sigmas_for(tuple(sampler["steps"]), float(sampler["shift"])))
    starts = {frame: torch.from_numpy(ids)[None] for frame, ids in segments}
    text, latencies = starts[0], []
    with torch.no_grad():
        for first in range(0, args.frames, host.chunk):
            if first in starts and first > 0:
                text = starts[first]
                stream.switch(text, args.switch_mode)
            t0 = time.perf_counter()
            stream.next_chunk(text)
            latencies.append(1000 * (time.perf_counter() - t0) / host.chunk)
            if not args.quiet:
                print(f"frames {first:4d}-{first + host.chunk - 1:4d}: {latencies[-1]:6.1f} ms/frame", flush=True)
    video = stream.video()[0].clamp(-1, 1).numpy()  # [F, 3, S, S]
    if out.suffix == ".npy":
        np.save(out, video)
    else:
        pixels = ((video.transpose(0, 2, 3, 1) + 1) * 127.5).round().astype(np.uint8)
        pixels = pixels.repeat(args.scale, axis=1).repeat(args.scale, axis=2)  # nearest-neighbour, to be seen
        write_video(out, pixels, fps=args.fps)
    summary = {"frames": args.frames, "ms_per_frame_mean": float(np.mean(latencies)), "ms_per_frame_p95": float(np.percentile(latencies, 95)),
               "switches": len(segments) - 1, "out": str(out)}
    print(f"longlive generate: {args.frames} frames, {summary['ms_per_frame_mean']:.1f} ms/frame (p95 {summary['ms_per_frame_p95']:.1f}), "
          f"{summary['switches']} switch(es) [{args.switch_mode}], policy {args.policy} -> {out}")
    return summary


def ship(run: Path, dest: Path = SHIPPED) -> Path:
    """Copy a clean run's self-forcing student (weights and configuration only) beside the tool, with its provenance."""
    import torch

    from shared.io import atomic_torch_save, load_checkpoint

    provenance = json.loads((run / "provenance.json").read_text()) if (run / "provenance.json").is_file() else None
    if provenance is None:
        raise DataError(f"{run} is not a run directory (no provenance.json)")
    if provenance["git"]["dirty"]:
        raise DataError(f"{run} ran on uncommitted changes: re-run it from a clean commit before shipping its model")
    source = run / "checkpoints" / "model_self_forcing.pt"
    if not source.is_file():
        raise DataError(f"{run} has no trained self-forcing student ({source})")
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    state = load_checkpoint(source, "cpu")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # float16 halves what the repository carries (1.6 -> 0.8 MB); load() computes in float32
    atomic_torch_save(dest, {"model": {k: v.to(torch.float16) for k, v in state["model"].items()}, "host": state["host"], "kind": state["kind"],
                             "horizon": int(cfg["horizon"]), "sampler": cfg["sampler"]})
    meta = {"from_run": run.name, "commit": provenance["git"]["sha"], "command": provenance["command"], "date": provenance["date"],
            "training_steps": state["step"], "data": "procedural clips (shared/procedural), training seeds (trainer.seed, step, example)",
            "dtype": "float16 (the run's float32 weights, rounded; generate computes in float32)"}
    shutil.copyfile(run / "results.csv", dest.with_suffix(".results.csv"))
    dest.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return dest


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        self.exit(USAGE_ERROR, f"longlive: error: {message} (see '{self.prog} --help')\n")


def generate_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.longlive generate", description="Stream a video from the trained host.")
    p.add_argument("--prompt", nargs="+", required=True, help="colour + shape pairs, e.g. red circle blue square")
    p.add_argument("--switch-at", nargs="+", action="append", metavar="FRAME WORDS", help="switch the prompt at FRAME (repeatable)")
    p.add_argument("--switch-mode", choices=("keep", "clear", "recache"), default="recache")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--policy", choices=("full", "window", "sink"), default="sink", help="full cache (within the training length), rolling window, or frame sink + window")
    p.add_argument("--sink-frames", type=int, default=2)
    p.add_argument("--window-frames", type=int, default=7)
    p.add_argument("--checkpoint", help="a run's checkpoints/model_<row>.pt (default: the shipped self-forcing student)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="longlive.mp4")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--scale", type=int, default=8, help="pixel repetition in the written video (16 px frames are small)")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--quiet", action="store_true", help="only the summary line")
    return p


def _one_line_errors(work, *args) -> int:
    """Run a tool; a user's mistake (a ``StreamlabError``) is one line on stderr and exit code 2."""
    try:
        work(*args)
    except StreamlabError as err:
        print(f"longlive: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def generate_main(argv: list[str]) -> int:
    return _one_line_errors(generate, generate_parser().parse_args(argv))


def ship_main(argv: list[str]) -> int:
    p = _Parser(prog="python -m experiments.longlive ship", description="Make a run's self-forcing student the generate tool's default.")
    p.add_argument("run", type=Path)
    return _one_line_errors(lambda run: print(f"longlive ship: {ship(run)}"), p.parse_args(argv).run)
