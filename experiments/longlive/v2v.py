"""StreamDiffusionV2's motion-aware noise controller (brief 4.4), on video-to-video streaming.

    python -m experiments.longlive v2v                                   # 3 rows, 32 clips (16 slow, 16 fast), 3 noise seeds
    python -m experiments.longlive v2v --clips 16 --seeds 0 1 2 3 --json out.json

The task, an edit of live video: each held-out procedural clip (two flat objects, the training
data's kind) streams through the shipped self-forcing student under a prompt that recolours object
0. The output must keep the input's motion and give object 0 its new colour. Per 2-frame chunk the
input frames are noised to a strength s (x_s = (1 - s) x_in + s eps) and denoised from there by the
few-step sampler (``Stream.next_chunk(source=, strength=)``: a first step at s, then the sampler's
levels below s); the output chunk goes into the KV cache (the generate tool's sink + window policy:
StreamDiffusionV2's rolling cache with sink tokens, without its adaptive sink replacement).

Rows (the strength per chunk and stream):
- ``fixed:<s>`` (``--fixed``, default 0.7 and 0.8: the controller's two ends);
- ``matched``: one fixed strength, the controller's own mean over every chunk of the run's clips
  (the strongest fixed baseline for the question "does distributing the noise by motion help?");
- ``motion``: StreamDiffusionV2's controller (official code, ``compute_noise_scale_and_step``):
  d = clamp(max_f rms(x_f - x_{f-1}) / scale, 0, 1) over the chunk's input frames and the frame
  before; s = 0.9 (s_init - 0.1 d) + 0.1 s_prev, s_init = 0.8 (more motion, less noise). The
  official 0.2 normalises Wan latents; here ``scale`` is the 95th percentile of d's numerator on
  clips at the training speed (measured from seeded clips when the tool starts, not from any
  result), so the training data's motion spans d in [0, 1] and faster motion saturates it. The
  official code also tells the model a timestep 0.1 below the mixing strength; here the model is
  told the level it was mixed at;
- ``motion_rolling``: the controller with a plain rolling window of the same 9 frames, no sink
  (``motion - motion_rolling`` is the sink tokens' effect);
- ``motion_adaptive``: the controller with StreamDiffusionV2's adaptive sink (``AdaptiveFrameSink``,
  threshold 0.2: a sink frame whose keys and values drift below 0.2 cosine from the new chunk's is
  replaced by it); ``sinks_replaced`` is the share of sink frames held at the end that are not the
  first frames.

Metrics per clip: position error (px: each object's detected centroid, in its prompted colour,
against the input's true position, over the frames where it is found), found (share of
object-frames detected), edit (share of frames that follow the new prompt: object 0 in its new
colour, the old colour gone), chunk seams (``boundary_jump``: change across chunk boundaries over
the change inside chunks; tearing between chunks is what the controller is meant to reduce).
Clips come at two speeds (``--speeds``, default 0.5 and 2.0 x the training speed); claims are paired
over clips and noise seeds (the same clips and noise for every row).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from shared.cli import one_line_errors, refuse_overwrite, tool_command
from shared.errors import ConfigError
from shared.results import mean_se

CONFIG = Path(__file__).resolve().parent / "conf" / "config.yaml"


def chunk_motion(frames: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
    """[b]: the largest root-mean-square change between consecutive input frames of the chunk
    [b, chunk, C, H, W] (and from the frame ``before`` [b, C, H, W], when there is one)."""
    seq = frames if before is None else torch.cat([before[:, None], frames], dim=1)
    if seq.shape[1] < 2:
        return torch.zeros(len(frames), dtype=frames.dtype)
    return (seq[:, 1:] - seq[:, :-1]).pow(2).mean(dim=(2, 3, 4)).sqrt().amax(dim=1)


class MotionController:
    """StreamDiffusionV2's noise controller: more motion in the input, less noise, smoothed over chunks."""

    def __init__(self, scale: float, s_init: float = 0.8, drop: float = 0.1, keep: float = 0.9):
        if scale <= 0 or not 0 < s_init <= 1:
            raise ConfigError(f"the controller needs a positive motion scale and s_init in (0, 1] (got {scale}, {s_init})")
        self.scale, self.s_init, self.drop, self.keep = scale, s_init, drop, keep
        self.previous: torch.Tensor | None = None

    def __call__(self, frames: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        d = (chunk_motion(frames, before) / self.scale).clamp(0, 1)
        prev = torch.full_like(d, self.s_init) if self.previous is None else self.previous
        self.previous = self.keep * (self.s_init - self.drop * d) + (1 - self.keep) * prev
        return self.previous


class Fixed:
    def __init__(self, strength: float):
        if not 0 < strength <= 1:
            raise ConfigError(f"a fixed strength must be in (0, 1] (got {strength})")
        self.strength = strength

    def __call__(self, frames: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        return torch.full((len(frames),), self.strength, dtype=frames.dtype)


def chunks_of(video: torch.Tensor, chunk: int):
    """(the chunk's input frames [b, chunk, ...], the frame before it or None), chunk by chunk."""
    for i in range(0, video.shape[1], chunk):
        yield video[:, i : i + chunk], (video[:, i - 1] if i else None)


def make_inputs(data: dict, clips: int, speed: float, frames: int, seed: int) -> list:
    from shared.procedural import make_clip

    return [make_clip(np.random.default_rng([seed, int(round(speed * 100)), i]), frames=frames, size=int(data["size"]), objects=int(data["objects"]),
                      speed=speed, scale=float(data["scale"]), stripes=bool(data["stripes"])) for i in range(clips)]


def motion_scale(data: dict, chunk: int, clips: int = 64, frames: int = 32, seed: int = 700000) -> float:
    """The 95th percentile of ``chunk_motion`` over chunks of clips at the training speed."""
    inputs = make_inputs(data, clips, float(data["speed"]), frames, seed)
    video = torch.from_numpy(np.stack([c.video for c in inputs])).double()
    values = [chunk_motion(frames_, before) for frames_, before in chunks_of(video, chunk)]
    return float(np.percentile(torch.cat(values).numpy(), 95))


def controller_strengths(controller, inputs: list, chunk: int) -> np.ndarray:
    """[clips, chunks]: the strengths a controller gives each chunk of these inputs."""
    src = torch.from_numpy(np.stack([c.video for c in inputs])).double()
    return np.stack([controller(frames, before).numpy() for frames, before in chunks_of(src, chunk)], axis=1)


def stream_edit(model, policy, inputs: list, controller, seed: int, sampler: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Stream every clip's edit; (output video [clips, F, C, H, W], strengths [clips, chunks], the
    share of sink frames held at the end that are not the first frames, over layers: adaptive sinks)."""
    from shared.procedural import VOCAB, recoloured, tokens

    from .stream import Stream, sigmas_for

    host = model.cfg
    src = torch.from_numpy(np.stack([c.video for c in inputs])).float()
    text = torch.from_numpy(np.stack([tokens(c.text, host.text_len) for c in inputs]))
    text[:, 0] = torch.tensor([VOCAB.index(recoloured(c.colours)[0]) for c in inputs])  # token 0: object 0's colour
    stream = Stream(model, policy, batch=len(inputs), generator=torch.Generator().manual_seed(seed),
                    sigmas=sigmas_for(tuple(sampler["steps"]), float(sampler["shift"])))
    strengths = []
    with torch.no_grad():
        for frames, before in chunks_of(src, host.chunk):
            s = controller(frames.double(), None if before is None else before.double()).float()
            strengths.append(s.numpy())
            stream.next_chunk(text, source=frames, strength=s)
    sinks = [c.frame[: c.length][c.pinned[: c.length]].unique() for c in stream.caches]
    replaced = float(np.mean([(f >= len(f)).float().mean() if len(f) else 0.0 for f in sinks]))
    return stream.video().numpy(), np.stack(strengths, axis=1), replaced


def score_edit(video: np.ndarray, clip, ref) -> dict:
    from shared.procedural import boundary_jump, follows_prompt, frame_validity, recoloured

    after = recoloured(clip.colours)
    _, found = frame_validity(video, after, ref)  # [objects, F, 4], NaN where not found
    error = np.hypot(found[:, :, 0] - clip.tracks[:, :, 0], found[:, :, 1] - clip.tracks[:, :, 1])
    hit = np.isfinite(error)
    return {"position_error": float(error[hit].mean()) if hit.any() else float("nan"), "found": float(hit.mean()),
            "edit": float(follows_prompt(video, clip.colours, after, ref).mean()), "seams": boundary_jump(video, 2)}


def run(args) -> dict:
    from shared.procedural import Reference
    from shared.streaming import AdaptiveFrameSink, FrameSink

    from .tool import SHIPPED, load

    model, horizon, sampler = load(Path(args.checkpoint) if args.checkpoint else SHIPPED)
    host = model.cfg
    if args.frames % host.chunk or args.frames < 2 * host.chunk:
        raise ConfigError(f"--frames must be a multiple of the chunk size {host.chunk}, at least two chunks (got {args.frames})")
    data = yaml.safe_load(CONFIG.read_text())["data"]
    ref = Reference.measure(host.size, horizon, int(data["objects"]), float(data["speed"]), float(data["scale"]), bool(data["stripes"]))
    scale = motion_scale(data, host.chunk)
    inputs = {speed: make_inputs(data, args.clips, speed, args.frames, 900000) for speed in args.speeds}
    # the controller reads the input only, so its strengths are known before streaming: the matched row
    # spends the same mean noise on every chunk (adaptation against the same amount of noise)
    matched = float(np.mean([controller_strengths(MotionController(scale), c, host.chunk).mean() for c in inputs.values()]))
    rows = {f"fixed:{s:g}": (lambda s=s: Fixed(s)) for s in args.fixed} | {"matched": lambda: Fixed(matched), "motion": lambda: MotionController(scale),
                                                                          "motion_rolling": lambda: MotionController(scale),
                                                                          "motion_adaptive": lambda: MotionController(scale)}
    # every row keeps 2 sink frames + a 7-frame window (generate's default; StreamDiffusionV2's rolling cache
    # with sink tokens) except motion_rolling (a plain rolling window of the same 9 frames, no sink) and
    # motion_adaptive (the same sinks, replaced when the stream moves away from them: the official threshold 0.2)
    policies = {"motion_rolling": FrameSink(host.tokens_per_frame, sink_frames=0, window_frames=9),
                "motion_adaptive": AdaptiveFrameSink(host.tokens_per_frame, sink_frames=2, window_frames=7, threshold=0.2)}
    sink = FrameSink(host.tokens_per_frame, sink_frames=2, window_frames=7)
    results = {row: {speed: {k: [] for k in ("position_error", "found", "edit", "seams", "strength", "sinks_replaced")} for speed in args.speeds} for row in rows}
    total, done = len(rows) * len(args.speeds) * len(args.seeds), 0
    for speed in args.speeds:
        for seed in args.seeds:
            for row, make in rows.items():
                video, strengths, replaced = stream_edit(model, policies.get(row, sink), inputs[speed], make(), seed, sampler)
                for i, clip in enumerate(inputs[speed]):
                    for k, v in score_edit(video[i], clip, ref).items():
                        results[row][speed][k].append(v)
                    results[row][speed]["strength"].append(float(strengths[i].mean()))
                results[row][speed]["sinks_replaced"].append(replaced)
                done += 1
                print(f"\rlonglive v2v: {done}/{total} (speed {speed:g}, seed {seed}, {row})", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"motion_scale": scale, "matched_strength": matched, "clips": args.clips, "frames": args.frames, "seeds": args.seeds, "speeds": args.speeds,
            "rows": {row: {f"{speed:g}": v for speed, v in by_speed.items()} for row, by_speed in results.items()}}


def paired(result: dict, row: str, other: str, speed: str | None, key: str) -> tuple[float, float]:
    """Mean and standard error of row - other over the (clip, seed) pairs at one speed (None: every speed)."""
    speeds = list(result["rows"][row]) if speed is None else [speed]
    d = np.concatenate([np.array(result["rows"][row][v][key]) - np.array(result["rows"][other][v][key]) for v in speeds])
    return mean_se(d[np.isfinite(d)])


@one_line_errors("longlive v2v")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.longlive v2v", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16, help="held-out clips per speed")
    p.add_argument("--speeds", type=float, nargs="+", default=[0.5, 2.0], help="input motion, x the training data's speed")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="noise seeds (the same for every row)")
    p.add_argument("--fixed", type=float, nargs="+", default=[0.7, 0.75, 0.8], help="fixed strengths to compare (the controller spans 0.7-0.8)")
    p.add_argument("--checkpoint", default=None, help="a run's checkpoint (default: the shipped self-forcing student)")
    p.add_argument("--json", type=Path, help="write the results here (refuses to overwrite)")
    args = p.parse_args(argv)
    if args.clips < 2 or not args.seeds or min(args.speeds) <= 0:
        raise ConfigError("--clips must be at least 2, --seeds non-empty and --speeds positive")
    refuse_overwrite(args.json, "--json")
    result = run(args)
    keys = ("position_error", "edit", "seams", "found")
    result["paired"] = {f"motion - {row} @ {f'speed {speed:g}' if speed else 'every speed'}": {k: paired(result, "motion", row, f"{speed:g}" if speed else None, k) for k in keys}
                        for row in result["rows"] if row != "motion" for speed in [*args.speeds, None]}
    if args.json is not None:
        from shared.provenance import write_tool_result

        write_tool_result(args.json, result, tool_command("experiments.longlive", "v2v", argv))
    print(f"motion scale (95th percentile of chunk motion at the training speed): {result['motion_scale']:.4f}; "
          f"matched strength (the controller's mean): {result['matched_strength']:.4f}")
    print(f"{'row':10s} {'speed':>5s} {'strength':>8s} {'pos err px':>10s} {'found':>6s} {'edit':>6s} {'seams':>6s}")
    for row, by_speed in result["rows"].items():
        for speed, r in by_speed.items():
            print(f"{row:10s} {speed:>5s} {np.mean(r['strength']):8.3f} {np.nanmean(r['position_error']):10.3f} {np.mean(r['found']):6.3f} "
                  f"{np.mean(r['edit']):6.3f} {np.mean(r['seams']):6.3f}")
    for name, c in result["paired"].items():
        print(f"{name}: " + ", ".join(f"{k} {m:+.3g} ± {se:.2g}" for k, (m, se) in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
