"""The StreamDiT table: train the models the rows need, roll every row out on the same held-out
prompts and noise, score the rollouts, and draw the frame strip and the drift curves.

Models (each checkpointed; a killed run resumes with ``streamlab reproduce streamdit --resume DIR``):
``uniform`` (c = B only, a standard clip model), ``fixed1`` (c = 1 only), ``mixed`` ({1, 2, 4, 8, 16})
and ``student`` (the mixed model distilled segment-wise, brief 2.5). Rows pick a model and a
sampler (conf/experiment/streamdit_<row>.yaml); every row's result is checkpointed too.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared.errors import ConfigError
from shared.io import atomic_path
from shared.procedural import Reference, aggregate, make_clip, score_video, tokens
from shared.procedural.figures import figure_drift, figure_strip
from shared.progress import progress
from shared.runs import Run
from shared.runtime import resolve_device

from .sample import FrameSinkMemory, evaluations_per_frame, generate_clips, stream
from .schedule import Partition
from .train import train


def train_models(cfg, needed: set[str], run: Run, device: str) -> tuple[dict, dict]:
    """The trained models the rows need (the student needs the mixed model as its teacher)."""
    if "student" in needed:
        needed = needed | {"mixed"}
    models, summaries = {}, {}
    for name in cfg.models:  # in the config's order: a model's init comes before it
        if name not in needed:
            continue
        init = cfg.models[name].get("init")
        if init and init not in models:
            models[init], summaries[init] = _train_flow(cfg, init, run, device)
        models[name], summaries[name] = _train_flow(cfg, name, run, device, models[init].state_dict() if init else None)
    if "student" in needed:
        teacher = models["mixed"]
        models["student"], summaries["student"] = train(
            cfg, "distill", int(cfg.distill.steps), float(cfg.distill.lr), run.checkpoint_path("model_student"), teacher=teacher,
            init=teacher.state_dict(), log=lambda m, step: run.logger.log(m, step=step, scope="train/student"), device=device)
    return models, summaries


def _train_flow(cfg, name: str, run: Run, device: str, init: dict | None = None):
    """A flow-matching model; one initialised from another (the paper fine-tunes streaming from
    its clip model) trains ``train.finetune_steps``."""
    steps = int(cfg.train.finetune_steps if init is not None else cfg.train.steps)
    return train(cfg, "flow", steps, float(cfg.train.lr), run.checkpoint_path(f"model_{name}"), chunk_sizes=list(cfg.models[name].chunks), init=init,
                 log=lambda m, step: run.logger.log(m, step=step, scope=f"train/{name}"), device=device, name=name)


def prompts(cfg) -> tuple[torch.Tensor, list[list[str]]]:
    """Held-out prompts (seeds far from any training seed): token ids [P, L] and each prompt's colours."""
    ids, colours = [], []
    for i in range(int(cfg.eval.prompts)):
        clip = make_clip(np.random.default_rng([int(cfg.eval.seed), i]), frames=1, size=int(cfg.data.size), objects=int(cfg.data.objects), scale=float(cfg.data.scale), stripes=bool(cfg.data.stripes))
        ids.append(tokens(clip.text, 2 * int(cfg.data.objects)))
        colours.append(clip.colours)
    return torch.from_numpy(np.stack(ids)), colours


def rollout(method, model, text: torch.Tensor, frames: int, cfg, generator: torch.Generator, on_chunk=None) -> torch.Tensor:
    B = int(cfg.buffer)
    if method.sampler == "clips":
        return generate_clips(model, text, frames, int(cfg.eval.clip_steps), float(method.guidance), generator, float(cfg.schedule_power))
    if method.sampler == "stream":
        part = Partition.for_buffer(B, int(method.c), int(method.s))
        memory = FrameSinkMemory(int(cfg.eval.memory.sink_frames), int(cfg.eval.memory.window_frames)) if method.memory else None
        return stream(model, text, part, frames, float(method.guidance), generator, memory, on_chunk, float(cfg.schedule_power))
    raise ConfigError(f"method.sampler must be 'clips' or 'stream' (got {method.sampler!r})")


def measure_fps(method, model, cfg, text: torch.Tensor) -> float:
    """Frames per second of one stream in steady state (after the first emission: start-up is a
    full clip's generation, reported separately by the levels column), or of one clip."""
    frames = int(cfg.eval.fps_frames)
    g = torch.Generator().manual_seed(1)
    if method.sampler == "clips":
        t0 = time.perf_counter()
        rollout(method, model, text[:1], int(cfg.buffer), cfg, g)
        return int(cfg.buffer) / (time.perf_counter() - t0)
    stamps: list[tuple[int, float]] = []
    rollout(method, model, text[:1], frames, cfg, g, on_chunk=lambda n: stamps.append((n, time.perf_counter())))
    (n0, t0), (n1, t1) = stamps[0], stamps[-1]
    return (n1 - n0) / (t1 - t0) if n1 > n0 else float("nan")


def evaluate_row(row: str, method, model, cfg, ref: Reference, device: str, run: Run) -> dict:
    """One row's long rollouts, scored (cached in the run: a resumed run does not redo it)."""
    return run.cached(row, lambda: _evaluate_row(method, model, cfg, ref, device, row))


def _evaluate_row(method, model, cfg, ref: Reference, device: str, row: str) -> dict:
    text, colours = prompts(cfg)
    B = int(cfg.buffer)
    frames = int(cfg.eval.rollout_buffers) * B
    bar = progress(total=frames, desc=f"streamdit/{row}")
    last = [0]

    def tick(n):
        bar.update(n - last[0])
        last[0] = n

    video = rollout(method, model, text.to(device), frames, cfg, torch.Generator().manual_seed(int(cfg.eval.seed)), tick).float().cpu().numpy()
    bar.close()
    chunk = int(method.c) if method.sampler == "stream" else B  # frames per emission: a stream's chunk, or a whole clip
    scores = [score_video(video[i], colours[i], ref, B, chunk) for i in range(len(video))]
    result = aggregate(scores)
    part = Partition.for_buffer(B, int(method.c), int(method.s)) if method.sampler == "stream" else None
    result["levels_per_frame"], result["forwards_per_frame"] = evaluations_per_frame(
        method.sampler, part, int(cfg.eval.clip_steps), float(method.guidance), B, bool(method.memory))
    result["fps"] = measure_fps(method, model, cfg, text.to(device))
    result["per_frame_validity"] = np.stack([s["per_frame_validity"] for s in scores])
    result["strip"] = video[0, : int(cfg.eval.strip_frames)]
    return result


def reference_row(cfg, ref: Reference) -> dict:
    """The procedural clips themselves (same prompts' seeds, rollout length) through the detector."""
    B, frames = int(cfg.buffer), int(cfg.eval.rollout_buffers) * int(cfg.buffer)
    scores, strip = [], None
    for i in range(int(cfg.eval.prompts)):
        clip = make_clip(np.random.default_rng([int(cfg.eval.seed), i]), frames=frames, size=int(cfg.data.size), objects=int(cfg.data.objects), speed=float(cfg.data.speed), scale=float(cfg.data.scale), stripes=bool(cfg.data.stripes))
        scores.append(score_video(clip.video, clip.colours, ref, B))
        strip = clip.video[: int(cfg.eval.strip_frames)] if strip is None else strip
    result = aggregate(scores)
    result["per_frame_validity"] = np.stack([s["per_frame_validity"] for s in scores])
    result["strip"] = strip
    return result


def reproduce(cfg, run: Run) -> None:
    device = resolve_device(cfg.trainer.device)
    rows = list(cfg.eval.rows)
    unknown = [r for r in rows if r not in run_rows()]
    if unknown:
        raise ConfigError(f"eval.rows: unknown rows {unknown}; valid: {', '.join(run_rows())}")
    methods = {row: run.compose_row("streamdit", row).method for row in rows}
    known = (*cfg.models, "student")
    bad = {row: m.model for row, m in methods.items() if m.model not in known}
    if bad:
        raise ConfigError(f"method.model must be one of {known} (got {bad})")
    ref = Reference.measure(int(cfg.data.size), int(cfg.buffer) * 2, int(cfg.data.objects), float(cfg.data.speed), float(cfg.data.scale), bool(cfg.data.stripes))
    models, summaries = train_models(cfg, {m.model for m in methods.values()}, run, device)
    results = {}
    for row in rows:
        results[row] = evaluate_row(row, methods[row], models[methods[row].model], cfg, ref, device, run)
        if not run.has_row("streamdit", row):
            run.add_results("streamdit", row, {k: v for k, v in results[row].items() if np.isscalar(v)})
    data = reference_row(cfg, ref)
    if not run.has_row("reference", "data"):
        run.add_results("reference", "data", {k: v for k, v in data.items() if np.isscalar(v)})
    with atomic_path(run.dir / "arrays.npz") as tmp:
        arrays = {f"{row}/{key}": results[row][key] for row in rows for key in ("per_frame_validity", "strip")}
        arrays |= {f"data/{key}": data[key] for key in ("per_frame_validity", "strip")}
        arrays |= {f"train/{name}/{k}": np.array(v) for name, s in summaries.items() for k, v in s.items()}
        np.savez_compressed(tmp, **arrays)
    run.save_figure(figure_drift(results, data, int(cfg.buffer)), "drift")
    run.save_figure(figure_strip(results, data, min(16, int(cfg.eval.strip_frames))), "strip")


def run_rows() -> tuple[str, ...]:
    from . import SPEC

    return SPEC.tables["streamdit"].rows
