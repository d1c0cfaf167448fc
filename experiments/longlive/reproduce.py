"""The tables: train the host's teacher and students, stream long rollouts from held-out prompts,
score them with the detector (``shared/procedural``).

Table ``self_forcing`` (the host recipe, brief 1): teacher forcing, diffusion forcing and self
forcing students, same architecture, initialisation (the bidirectional teacher) and 4-step sampler.
Every row streams the same held-out prompts from the same noise for 10 training horizons, with a
rolling window of frames past the horizon (relative RoPE offsets stay inside what training saw);
validity at 1x, 4x and 10x the horizon is read from the last horizon-length bin of that rollout.

Table ``longlive`` (brief 2.1): the self-forcing student under LongLive's cache policies: the full
training window, a short window, and a short window whose first chunk is kept as a frame sink
inside the same budget; per-frame cost at the start and the end of the rollout. Table
``longlive_switch`` (brief 2.2): a prompt switch (object 0 changes colour) with the cache kept,
cleared or re-cached; frames until the detector sees the new prompt, the jump at the switch.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared.errors import ConfigError
from shared.io import atomic_path
from shared.models_from import check_models_from, reuse_checkpoints
from shared.procedural import VOCAB, Reference, boundary_jump, frame_jump, frame_validity, frames_to_follow, make_clip, recoloured, score_video, tokens
from shared.procedural.figures import figure_drift, figure_strip
from shared.results import mean_se
from shared.runs import Run
from shared.runtime import resolve_device
from shared.streaming import DeepSink, FrameSink, ParticipativeCompression

from .stream import Stream, sigmas_for
from .train import host_config, train

STUDENTS = ("teacher_forcing", "diffusion_forcing", "self_forcing", "long_tuned")
# what a trained model depends on: ``models_from`` reuses a finished run's checkpoints only where these agree
TRAINING_KEYS = ("horizon", "data", "model", "sampler", "train")


def check_config(cfg) -> None:
    """Before a run directory exists: ``models_from`` trained what this config would (settings, seed)."""
    check_models_from(cfg, TRAINING_KEYS)


def train_models(cfg, needed: set[str], run: Run, device: str) -> tuple[dict, dict]:
    """The teacher (always: every student starts from it, self forcing also scores against it), the
    students the rows need, and long tuning from the self-forcing student and its critic."""
    from shared.io import load_checkpoint

    log = lambda name: (lambda m, step: run.logger.log(m, step=step, scope=f"train/{name}"))  # noqa: E731
    t = cfg.train
    if "long_tuned" in needed:
        needed = needed | {"self_forcing"}
    reuse_checkpoints(cfg, {"teacher", *needed}, run)  # models_from: finished checkpoints, which train() resumes as done
    teacher, summary = train(cfg, "teacher", int(t.teacher_steps), run.checkpoint_path("model_teacher"), log=log("teacher"), device=device)
    models, summaries = {"teacher": teacher}, {"teacher": summary}
    for name in ("teacher_forcing", "diffusion_forcing", "self_forcing"):
        if name in needed:
            steps = int(t.sf_steps if name == "self_forcing" else t.student_steps)
            models[name], summaries[name] = train(cfg, name, steps, run.checkpoint_path(f"model_{name}"), init=teacher.state_dict(),
                                                  teacher=teacher if name == "self_forcing" else None, log=log(name), device=device)
    if "long_tuned" in needed:
        critic = load_checkpoint(run.checkpoint_path("model_self_forcing"), device)["critic"]
        models["long_tuned"], summaries["long_tuned"] = train(cfg, "long_tuned", int(t.long_steps), run.checkpoint_path("model_long_tuned"),
                                                              init=models["self_forcing"].state_dict(), teacher=teacher, log=log("long_tuned"),
                                                              device=device, init_critic=critic)
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


def row_policy(method, host, horizon: int):
    """The row's frame policy: ``sink_frames`` pinned first frames and a rolling ``window_frames``
    (the newest window_frames - 1 frames besides the incoming chunk); ``kind: deep_sink`` re-aligns
    the sink's RoPE positions to end ``gap_frames`` (default 0: adjacent; the official code: one
    chunk) before the oldest window frame (Deep Forcing). Refused if a chunk would see more frames
    than training showed, or positions spread wider (relative RoPE offsets the model never met)."""
    sinks, window, kind = int(method.policy.sink_frames), int(method.policy.window_frames), str(method.policy.get("kind", "frame_sink"))
    if kind == "compressed":  # participative compression: sinks, the newest recent_frames, the most attended others, budget_frames kept
        budget, recent = int(method.policy.budget_frames), int(method.policy.recent_frames)
        if budget + host.chunk > horizon or sinks + recent > budget:
            raise ConfigError(f"method.policy: a compression budget of {budget} frames + chunk {host.chunk} must fit the horizon {horizon} "
                              f"and hold sink {sinks} + recent {recent}")
        granularity = str(method.policy.get("granularity", "frame"))
        if granularity not in ("frame", "token"):
            raise ConfigError(f"method.policy.granularity must be frame or token (got {granularity!r})")
        return ParticipativeCompression(host.tokens_per_frame, budget_frames=budget, recent_frames=recent, sink_frames=sinks, granularity=granularity)
    gap = int(method.policy.get("gap_frames", 0)) if kind == "deep_sink" else 0
    seen = sinks + gap + window - 1 + host.chunk
    if seen > horizon or window < 1 or sinks < 0 or gap < 0:
        raise ConfigError(f"method.policy: sink {sinks} + gap {gap} + window {window} - 1 + chunk {host.chunk} = {seen} frames of positions "
                          f"seen at once; at most the training horizon {horizon}")
    if kind not in ("frame_sink", "deep_sink"):
        raise ConfigError(f"method.policy.kind must be frame_sink, deep_sink or compressed (got {kind!r})")
    if kind == "deep_sink":
        return DeepSink(host.tokens_per_frame, sink_frames=sinks, window_frames=window, gap_frames=gap)
    return FrameSink(host.tokens_per_frame, sink_frames=sinks, window_frames=window)


def new_stream(model, policy, cfg, batch: int, seed: int, device: str) -> Stream:
    return Stream(model, policy, batch=batch, generator=torch.Generator().manual_seed(seed),
                  sigmas=sigmas_for(tuple(cfg.sampler.steps), float(cfg.sampler.shift)), device=device)


def ms_per_frame(model, policy, cfg, text: torch.Tensor, device: str, frames: int) -> tuple[float, float]:
    """Milliseconds per frame of one stream: over ``fps_frames`` just after the first horizon (the
    cache has filled) and over the last ``fps_frames`` of a ``frames``-long rollout, the row's own
    length (flat cost: equal)."""
    host = model.cfg
    span = max(1, int(cfg.eval.fps_frames) // host.chunk)
    start = int(cfg.horizon) // host.chunk
    stamps = []
    stream = new_stream(model, policy, cfg, 1, 1, device)
    with torch.no_grad():
        stream.generate(text[:1], frames // host.chunk, on_chunk=lambda i, _: stamps.append(time.perf_counter()))
    per_frame = np.diff(np.array(stamps)) * 1000 / host.chunk  # chunk i+1's time
    first = per_frame[start - 1 : start - 1 + span]
    return float(first.mean()), float(per_frame[-span:].mean())


def evaluate_row(row: str, method, model, cfg, ref: Reference, device: str, run: Run) -> dict:
    """One row's long rollouts, scored (cached in the run: a resumed run does not redo it)."""
    if method.get("switch"):
        return run.cached(row, lambda: _evaluate_switch(method, model, cfg, ref, device))
    return run.cached(row, lambda: _evaluate_row(method, model, cfg, ref, device))


def _evaluate_row(method, model, cfg, ref: Reference, device: str) -> dict:
    text, colours = prompts(cfg)
    horizon, lengths = int(cfg.horizon), [int(n) for n in method.get("lengths", cfg.eval.lengths)]
    frames = max(lengths) * horizon
    policy = row_policy(method, model.cfg, horizon)
    stream = new_stream(model, policy, cfg, len(text), int(cfg.eval.seed), device)
    video = stream.generate(text.to(device), frames // model.cfg.chunk).float().cpu().numpy()
    scores = [score_video(video[i], colours[i], ref, int(cfg.eval.bin_frames)) for i in range(len(video))]
    validity = np.stack([s["per_frame_validity"] for s in scores])  # [P, F]
    out = {f"validity_{n}x": float(validity[:, (n - 1) * horizon : n * horizon].mean()) for n in lengths}
    out |= {f"drift_{max(lengths)}x": float(np.mean([s["drift"] for s in scores])),
            f"dynamic_{max(lengths)}x": float(np.mean([s["dynamic"] for s in scores])),
            "boundary_jump": float(np.mean([boundary_jump(v, model.cfg.chunk) for v in video]))}
    out["ms_per_frame"], out["ms_per_frame_last"] = ms_per_frame(model, policy, cfg, text.to(device), device, frames)
    kept = policy.budget_frames if isinstance(policy, ParticipativeCompression) else policy.sink_frames + policy.window_frames - 1
    out["frames_seen"] = float(kept + model.cfg.chunk)
    out["per_frame_validity"] = validity
    out["drift_per_prompt"] = np.array([s["drift"] for s in scores])
    out["dynamic_per_prompt"] = np.array([s["dynamic"] for s in scores])
    out["strip"] = video[0, :32]
    return out



def _evaluate_switch(method, model, cfg, ref: Reference, device: str) -> dict:
    """Stream ``eval.switch.frames`` frames; at ``eval.switch.at`` object 0 changes colour in the
    prompt and the cache is kept, cleared or re-cached (``method.switch``)."""
    text, colours = prompts(cfg)
    at, frames, chunk = int(cfg.eval.switch.at), int(cfg.eval.switch.frames), model.cfg.chunk
    if at % chunk or not 0 < at < frames:
        raise ConfigError(f"eval.switch.at {at} must be a multiple of the chunk size {chunk} inside the {frames} frames")
    after_colours = [recoloured(c) for c in colours]
    new_text = text.clone()
    new_text[:, 0] = torch.tensor([VOCAB.index(c[0]) for c in after_colours])  # token 0 is object 0's colour word
    stream = new_stream(model, row_policy(method, model.cfg, int(cfg.horizon)), cfg, len(text), int(cfg.eval.seed), device)
    with torch.no_grad():
        stream.generate(text.to(device), at // chunk)
        stream.switch(new_text.to(device), str(method.switch))
        video = stream.generate(new_text.to(device), (frames - at) // chunk).float().cpu().numpy()
    delays = np.array([frames_to_follow(v, at, before, after, ref) for v, before, after in zip(video, colours, after_colours)], dtype=float)
    validity_after = np.stack([frame_validity(v[at:], after, ref)[0] for v, after in zip(video, after_colours)])
    out = {"frames_to_follow": float(delays.mean()), "followed": float((delays < frames - at - 1).mean()),
           "switch_jump": float(np.mean([frame_jump(v, at) for v in video])), "validity_after": float(validity_after.mean())}
    out["delays"] = delays
    out["per_frame_validity"] = validity_after
    out["strip"] = video[0, max(0, at - 8) : at + 24]
    return out

def paired(results: dict, row: str, against: str, key: str) -> tuple[float, float]:
    """Mean and standard error over prompts of row minus ``against`` on a per-prompt array."""
    return mean_se(results[row][key] - results[against][key])


def reproduce(cfg, run: Run) -> None:
    device = resolve_device(cfg.trainer.device)
    rows = list(cfg.eval.rows)
    tables = table_of()
    unknown = [r for r in rows if r not in tables]
    if unknown:
        raise ConfigError(f"eval.rows: unknown rows {unknown}; valid: {', '.join(tables)}")
    first = next(iter(tables.values()))
    if all(tables[r] == first for r in rows):  # the other tables are computed beside the first unless eval.rows names their rows
        rows += [r for r, t in tables.items() if t != first]
    methods = {row: run.compose_row(tables[row], row).method for row in rows}
    bad = {row: m.model for row, m in methods.items() if m.model not in STUDENTS}
    if bad:
        raise ConfigError(f"method.model must be one of {STUDENTS} (got {bad})")
    host = host_config(cfg)
    host.check()
    for method in methods.values():
        row_policy(method, host, int(cfg.horizon))  # a policy that does not fit is refused before any training
    d = cfg.data
    ref = Reference.measure(int(d.size), int(cfg.horizon), int(d.objects), float(d.speed), float(d.scale), bool(d.stripes))
    models, summaries = train_models(cfg, {m.model for m in methods.values()}, run, device)
    results = {}
    for row in rows:
        results[row] = evaluate_row(row, methods[row], models[methods[row].model], cfg, ref, device, run)
        if not run.has_row(tables[row], row):
            run.add_results(tables[row], row, {k: v for k, v in results[row].items() if np.isscalar(v)})
    with atomic_path(run.dir / "arrays.npz") as tmp:
        # per-prompt arrays in float32; the frame strips are drawn into strip.png, not stored twice
        arrays = {f"{row}/{key}": np.asarray(value, np.float32) for row in rows for key, value in results[row].items() if not np.isscalar(value) and key != "strip"}
        arrays |= {f"train/{name}/{k}": np.array(v) for name, s in summaries.items() for k, v in s.items()}
        if "self_forcing" in results:
            for other in (r for r in ("teacher_forcing", "diffusion_forcing") if r in results):
                arrays[f"claim/self_forcing_minus_{other}/drift"] = np.array(paired(results, "self_forcing", other, "drift_per_prompt"))
        for row, other in (("sink_window", "short_window"), ("sink_window_long_tuned", "sink_window"), ("deep_sink", "rolling"), ("deep_sink", "shallow_sink"), ("deep_sink", "deep_sink_unaligned"),
                           ("compressed", "deep_sink"), ("deep_sink_gap", "deep_sink_short"), ("compressed_tokens", "deep_sink"), ("compressed_tokens", "compressed")):
            if row in results and other in results:
                arrays[f"claim/{row}_minus_{other}/drift"] = np.array(paired(results, row, other, "drift_per_prompt"))
        if "deep_sink" in results and "rolling" in results:
            arrays["claim/deep_sink_minus_rolling/dynamic"] = np.array(paired(results, "deep_sink", "rolling", "dynamic_per_prompt"))
        for other in (r for r in ("switch_keep", "switch_clear") if r in results and "switch_recache" in results):
            arrays[f"claim/switch_recache_minus_{other}/delays"] = np.array(paired(results, "switch_recache", other, "delays"))
        np.savez_compressed(tmp, **arrays)
    windows = {r: v for r, v in results.items() if tables[r] != "longlive_switch"}
    if windows:
        run.save_figure(figure_drift(windows, None, int(cfg.horizon)), "drift")
        run.save_figure(figure_strip(windows, None, 16), "strip")
    switches = {r: v for r, v in results.items() if tables[r] == "longlive_switch"}
    if switches:
        run.save_figure(figure_strip(switches, None, 16), "switch_strip")


def table_of() -> dict[str, str]:
    from . import SPEC

    return {row: name for name, table in SPEC.tables.items() for row in table.rows}
