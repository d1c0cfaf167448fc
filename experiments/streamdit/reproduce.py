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
from shared.models_from import check_models_from, reuse_checkpoints
from shared.procedural import VOCAB, Reference, aggregate, frame_jump, frame_validity, frames_to_follow, make_clip, recoloured, score_video, tokens
from shared.procedural.figures import figure_drift, figure_strip
from shared.progress import progress
from shared.runs import Run
from shared.runtime import resolve_device

from .sample import FrameSinkMemory, evaluations_per_frame, generate_clips, stream
from .schedule import Partition
from .train import STUDENTS, train

# what a trained model depends on: a finished run's checkpoints are reused (``models_from``) only where these agree
TRAINING_KEYS = ("buffer", "sigma_min", "schedule_power", "data", "model", "models", "train", "distill")


def check_config(cfg) -> None:
    """Before a run directory exists: ``models_from`` is a run that trained what this config would
    train (same settings and seed), and a prompt switch falls inside the switch rollout."""
    at, frames = int(cfg.eval.switch.at), int(cfg.eval.switch.frames)
    if not 0 < at < frames - 2:
        raise ConfigError(f"eval.switch.at {at} must leave frames before and after it in the {frames} frames of eval.switch.frames")
    check_models_from(cfg, TRAINING_KEYS)


def train_models(cfg, needed: set[str], run: Run, device: str) -> tuple[dict, dict]:
    """The trained models the rows need (the student needs the mixed model as its teacher)."""
    students = [s for s in STUDENTS if s in needed]
    if students:
        needed = needed | {"mixed"}
    if cfg.get("models_from"):
        reuse_checkpoints(cfg, needed | {cfg.models[n].get("init") for n in needed if n in cfg.models and cfg.models[n].get("init")}, run)
    models, summaries = {}, {}
    for name in cfg.models:  # in the config's order: a model's init comes before it
        if name not in needed:
            continue
        init = cfg.models[name].get("init")
        if init and init not in models:
            models[init], summaries[init] = _train_flow(cfg, init, run, device)
        models[name], summaries[name] = _train_flow(cfg, name, run, device, models[init].state_dict() if init else None)
    for student in students:  # the mixed model distilled; its memory frames from data or its own rollouts
        teacher = models["mixed"]
        models[student], summaries[student] = train(
            cfg, "distill", int(cfg.distill.steps), float(cfg.distill.lr), run.checkpoint_path(f"model_{student}"), teacher=teacher,
            init=teacher.state_dict(), log=lambda m, step, s=student: run.logger.log(m, step=step, scope=f"train/{s}"), device=device,
            memory_source=STUDENTS[student])
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


def rollout(method, model, text: torch.Tensor, frames: int, cfg, generator: torch.Generator, on_chunk=None, switch=None) -> torch.Tensor:
    B = int(cfg.buffer)
    if method.sampler == "clips":
        return generate_clips(model, text, frames, int(cfg.eval.clip_steps), float(method.guidance), generator, float(cfg.schedule_power), switch)
    if method.sampler == "stream":
        part = Partition.for_buffer(B, int(method.c), int(method.s))
        memory = FrameSinkMemory(int(cfg.eval.memory.sink_frames), int(cfg.eval.memory.window_frames)) if method.memory else None
        return stream(model, text, part, frames, float(method.guidance), generator, memory, on_chunk, float(cfg.schedule_power), switch)
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
    if method.get("switch"):
        return run.cached(row, lambda: _evaluate_switch(method, model, cfg, ref, device))
    return run.cached(row, lambda: _evaluate_row(method, model, cfg, ref, device, row))


def switched_prompts(text: torch.Tensor, colours: list[list[str]]) -> tuple[torch.Tensor, list[list[str]]]:
    """The switch: object 0 takes a colour its prompt does not use (token 0 is its colour word)."""
    after = [recoloured(cs) for cs in colours]
    new_text = text.clone()
    new_text[:, 0] = torch.tensor([VOCAB.index(cs[0]) for cs in after])
    return new_text, after


def _evaluate_switch(method, model, cfg, ref: Reference, device: str) -> dict:
    """Stream ``eval.switch.frames`` frames from the held-out prompts; at ``eval.switch.at`` object
    0's colour changes in the prompt. Frames until the detector sees the new prompt (two frames in a
    row; never = the frames left), the jump at the switch over the video's median frame change, and
    validity against the new prompt after it, per prompt."""
    text, colours = prompts(cfg)
    at, frames = int(cfg.eval.switch.at), int(cfg.eval.switch.frames)
    new_text, after = switched_prompts(text, colours)
    video = rollout(method, model, text.to(device), frames, cfg, torch.Generator().manual_seed(int(cfg.eval.seed)),
                    switch=(at, new_text.to(device))).float().cpu().numpy()
    delays = np.array([frames_to_follow(v, at, before, new, ref) for v, before, new in zip(video, colours, after)], dtype=float)
    jumps = np.array([frame_jump(v, at) for v in video])
    validity_after = np.stack([frame_validity(v[at:], new, ref)[0] for v, new in zip(video, after)])
    return {"frames_to_follow": float(delays.mean()), "followed": float((delays < frames - at - 1).mean()),
            "switch_jump": float(jumps.mean()), "validity_after": float(validity_after.mean()),
            "delays": delays, "jumps": jumps, "per_frame_validity": validity_after, "strip": video[0, max(0, at - 8) : at + 24]}


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
    result |= {f"prompt_{key}": np.array([s.get(key, np.nan) for s in scores], dtype=float) for key in PER_PROMPT}  # paired claims
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


PER_PROMPT = ("validity", "drift", "dynamic", "colour_drift", "breaks", "boundary_breaks", "flicker", "jerk_px")


def reproduce(cfg, run: Run) -> None:
    device = resolve_device(cfg.trainer.device)
    tables = row_tables()
    rows = list(cfg.eval.rows)
    unknown = [r for r in rows if r not in tables]
    if unknown:
        raise ConfigError(f"eval.rows: unknown rows {unknown}; valid: {', '.join(tables)}")
    methods = {row: run.compose_row(tables[row], row).method for row in rows}
    if cfg.eval.switch_rows and all(tables[r] == "streamdit" for r in rows):  # the switch rows come beside the table for the models it trains
        for row in (r for r, t in tables.items() if t == "streamdit_switch"):
            method = run.compose_row("streamdit_switch", row).method
            if method.model in {m.model for m in methods.values()}:
                rows.append(row)
                methods[row] = method
    known = (*cfg.models, *STUDENTS)
    bad = {row: m.model for row, m in methods.items() if m.model not in known}
    if bad:
        raise ConfigError(f"method.model must be one of {known} (got {bad})")
    off = [row for row, m in methods.items() if m.get("switch") and m.sampler == "stream" and int(cfg.eval.switch.at) % int(m.c)]
    if off:  # before any training: a stream switches between chunks (a clip model at its next seam)
        raise ConfigError(f"eval.switch.at {cfg.eval.switch.at} is not a multiple of the chunk size of {', '.join(off)}")
    ref = Reference.measure(int(cfg.data.size), int(cfg.buffer) * 2, int(cfg.data.objects), float(cfg.data.speed), float(cfg.data.scale), bool(cfg.data.stripes))
    models, summaries = train_models(cfg, {m.model for m in methods.values()}, run, device)
    results = {}
    for row in rows:
        results[row] = evaluate_row(row, methods[row], models[methods[row].model], cfg, ref, device, run)
        if not run.has_row(tables[row], row):
            run.add_results(tables[row], row, {k: v for k, v in results[row].items() if np.isscalar(v)})
    data = reference_row(cfg, ref)
    if not run.has_row("reference", "data"):
        run.add_results("reference", "data", {k: v for k, v in data.items() if np.isscalar(v)})
    streams = {r: results[r] for r in rows if tables[r] == "streamdit"}
    switches = {r: results[r] for r in rows if tables[r] == "streamdit_switch"}
    with atomic_path(run.dir / "arrays.npz") as tmp:
        arrays = {f"{row}/{key}": value for row, result in results.items() for key, value in result.items() if isinstance(value, np.ndarray)}
        arrays |= {f"data/{key}": data[key] for key in ("per_frame_validity", "strip")}
        arrays |= {f"train/{name}/{k}": np.array(v) for name, s in summaries.items() for k, v in s.items()}
        np.savez_compressed(tmp, **arrays)
    if streams:
        run.save_figure(figure_drift(streams, data, int(cfg.buffer)), "drift")
        run.save_figure(figure_strip(streams, data, min(16, int(cfg.eval.strip_frames))), "strip")
    if switches:
        run.save_figure(figure_strip(switches, None, 32), "switch_strip")


def row_tables() -> dict[str, str]:
    """Each row's table (the long rollouts or the prompt switch)."""
    from . import SPEC

    return {row: name for name, table in SPEC.tables.items() if name != "reference" for row in table.rows}
