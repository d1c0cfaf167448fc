"""The tables: train the host's teacher and students, stream long rollouts from held-out prompts,
score them with the detector (``shared/procedural``).

Table ``self_forcing`` (the host recipe, brief 1): teacher forcing, diffusion forcing and self
forcing students, same architecture, initialisation (the bidirectional teacher) and 4-step sampler.
Every row streams the same held-out prompts from the same noise for 10 training horizons, with a
rolling window of frames past the horizon (relative RoPE offsets stay inside what training saw);
validity at 1x, 4x and 10x the horizon is read from the last horizon-length bin of that rollout.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared.errors import ConfigError
from shared.io import atomic_path
from shared.procedural import Reference, boundary_jump, make_clip, score_video, tokens
from shared.procedural.figures import figure_drift, figure_strip
from shared.runs import Run
from shared.runtime import resolve_device
from shared.streaming import FrameSink

from .stream import Stream, sigmas_for
from .train import host_config, train

STUDENTS = ("teacher_forcing", "diffusion_forcing", "self_forcing")


def train_models(cfg, needed: set[str], run: Run, device: str) -> tuple[dict, dict]:
    """The teacher (always: every student starts from it, self forcing also scores against it) and the students the rows need."""
    log = lambda name: (lambda m, step: run.logger.log(m, step=step, scope=f"train/{name}"))  # noqa: E731
    t = cfg.train
    teacher, summary = train(cfg, "teacher", int(t.teacher_steps), run.checkpoint_path("model_teacher"), log=log("teacher"), device=device)
    models, summaries = {"teacher": teacher}, {"teacher": summary}
    for name in STUDENTS:
        if name in needed:
            steps = int(t.sf_steps if name == "self_forcing" else t.student_steps)
            models[name], summaries[name] = train(cfg, name, steps, run.checkpoint_path(f"model_{name}"), init=teacher.state_dict(),
                                                  teacher=teacher if name == "self_forcing" else None, log=log(name), device=device)
    return models, summaries


def prompts(cfg) -> tuple[torch.Tensor, list[list[str]]]:
    """Held-out prompts (seeds far from any training seed): token ids [P, L] and each prompt's colours."""
    d, ids, colours = cfg.data, [], []
    for i in range(int(cfg.eval.prompts)):
        clip = make_clip(np.random.default_rng([int(cfg.eval.seed), i]), frames=1, size=int(d.size), objects=int(d.objects), scale=float(d.scale),
                         stripes=bool(d.stripes))
        ids.append(tokens(clip.text, 2 * (int(d.objects) + 1)))
        colours.append(clip.colours)
    return torch.from_numpy(np.stack(ids)), colours


def rolling_policy(cfg, host):
    """Past the horizon: the newest ``window_frames`` frames besides the incoming chunk, no sink."""
    return FrameSink(host.tokens_per_frame, sink_frames=0, window_frames=int(cfg.eval.window_frames))


def ms_per_frame(model, cfg, text: torch.Tensor, device: str) -> float:
    """Milliseconds per frame of one stream in steady state (the first horizon excluded: the cache is still filling)."""
    host = model.cfg
    stream = Stream(model, rolling_policy(cfg, host), batch=1, generator=torch.Generator().manual_seed(1), sigmas=sigmas_for(tuple(cfg.sampler.steps), float(cfg.sampler.shift)), device=device)
    with torch.no_grad():
        stream.generate(text[:1], int(cfg.horizon) // host.chunk)
        t0 = time.perf_counter()
        chunks = max(1, int(cfg.eval.fps_frames) // host.chunk)
        stream.generate(text[:1], chunks)
    return 1000 * (time.perf_counter() - t0) / (chunks * host.chunk)


def evaluate_row(row: str, model, cfg, ref: Reference, device: str, run: Run) -> dict:
    """One row's long rollouts, scored (cached in the run: a resumed run does not redo it)."""
    return run.cached(row, lambda: _evaluate_row(model, cfg, ref, device))


def _evaluate_row(model, cfg, ref: Reference, device: str) -> dict:
    text, colours = prompts(cfg)
    horizon, lengths = int(cfg.horizon), [int(n) for n in cfg.eval.lengths]
    frames = max(lengths) * horizon
    stream = Stream(model, rolling_policy(cfg, model.cfg), batch=len(text), generator=torch.Generator().manual_seed(int(cfg.eval.seed)),
                    sigmas=sigmas_for(tuple(cfg.sampler.steps), float(cfg.sampler.shift)), device=device)
    video = stream.generate(text.to(device), frames // model.cfg.chunk).float().cpu().numpy()
    scores = [score_video(video[i], colours[i], ref, int(cfg.eval.bin_frames)) for i in range(len(video))]
    validity = np.stack([s["per_frame_validity"] for s in scores])  # [P, F]
    out = {f"validity_{n}x": float(validity[:, (n - 1) * horizon : n * horizon].mean()) for n in lengths}
    out |= {f"drift_{max(lengths)}x": float(np.mean([s["drift"] for s in scores])),
            f"dynamic_{max(lengths)}x": float(np.mean([s["dynamic"] for s in scores])),
            "boundary_jump": float(np.mean([boundary_jump(v, model.cfg.chunk) for v in video])),
            "ms_per_frame": ms_per_frame(model, cfg, text.to(device), device)}
    out["per_frame_validity"] = validity
    out["drift_per_prompt"] = np.array([s["drift"] for s in scores])
    out["strip"] = video[0, :32]
    return out


def paired(results: dict, row: str, against: str, key: str) -> tuple[float, float]:
    """Mean and standard error over prompts of row minus ``against`` on a per-prompt array."""
    diff = results[row][key] - results[against][key]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")


def reproduce(cfg, run: Run) -> None:
    device = resolve_device(cfg.trainer.device)
    rows = list(cfg.eval.rows)
    unknown = [r for r in rows if r not in run_rows()]
    if unknown:
        raise ConfigError(f"eval.rows: unknown rows {unknown}; valid: {', '.join(run_rows())}")
    methods = {row: run.compose_row("self_forcing", row).method for row in rows}
    bad = {row: m.model for row, m in methods.items() if m.model not in STUDENTS}
    if bad:
        raise ConfigError(f"method.model must be one of {STUDENTS} (got {bad})")
    host_config(cfg).check()
    d = cfg.data
    ref = Reference.measure(int(d.size), int(cfg.horizon), int(d.objects), float(d.speed), float(d.scale), bool(d.stripes))
    models, summaries = train_models(cfg, {m.model for m in methods.values()}, run, device)
    results = {}
    for row in rows:
        results[row] = evaluate_row(row, models[methods[row].model], cfg, ref, device, run)
        if not run.has_row("self_forcing", row):
            run.add_results("self_forcing", row, {k: v for k, v in results[row].items() if np.isscalar(v)})
    with atomic_path(run.dir / "arrays.npz") as tmp:
        arrays = {f"{row}/{key}": results[row][key] for row in rows for key in ("per_frame_validity", "drift_per_prompt", "strip")}
        arrays |= {f"train/{name}/{k}": np.array(v) for name, s in summaries.items() for k, v in s.items()}
        if "self_forcing" in results:
            for other in (r for r in rows if r != "self_forcing"):
                arrays[f"claim/self_forcing_minus_{other}/drift"] = np.array(paired(results, "self_forcing", other, "drift_per_prompt"))
        np.savez_compressed(tmp, **arrays)
    run.save_figure(figure_drift(results, None, int(cfg.horizon)), "drift")
    run.save_figure(figure_strip(results, None, 16), "strip")


def run_rows() -> tuple[str, ...]:
    from . import SPEC

    return SPEC.tables["self_forcing"].rows
