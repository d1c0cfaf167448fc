"""Training: buffered flow matching over partition schemes (brief 2.3) and multistep distillation
(brief 2.5), one loop for both, checkpointed atomically and resumable, data-parallel under torchrun.

    python -m experiments.streamdit.train +experiment=streamdit_streamdit_mixed preset=smoke
    torchrun --standalone --nproc-per-node 2 -m experiments.streamdit.train +experiment=streamdit_streamdit_mixed

Every batch is a pure function of (seed, step, example index): a resumed run sees the same batches,
and under DDP rank r draws examples [r b, (r+1) b) of the global batch, so N ranks with batch b
each train exactly what one process with batch N b would (up to float summation order; tested).

Per batch (flow matching): one chunk size c from ``chunk_sizes`` (uniform: [16]; fixed: [1]; mixed:
[1, 2, 4, 8, 16]), per-chunk times in their bands (Eq. 8), one noise tensor per buffer (Eq. 5),
the velocity target, the null text with probability ``text_dropout`` (for guidance). With probability
``memory_prob`` the batch also carries m in 1..``memory_max`` clean memory frames: the clip's first
frame (the sink) and the m - 1 frames just before the buffer, as the frame-sink stream will see.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from shared import runtime
from shared.distributed import check_ranks_agree, distributed, parameter_checksum, warmup_cosine  # noqa: F401 (parameter_checksum: the DDP test reads it here)
from shared.errors import ConfigError
from shared.io import atomic_torch_save, load_checkpoint
from shared.procedural import make_clip, tokens
from shared.progress import progress
from shared.runs import Run, sweep_tags

from .model import DiTConfig, StreamDiT
from .schedule import Partition, level_time, make_xt, training_times, velocity_target

EXPERIMENT = Path(__file__).resolve().parent.name


def model_config(cfg, name: str | None = None) -> DiTConfig:
    """The DiT of ``cfg.model``, with trained model ``name``'s own ``models.<name>.model`` overrides
    (the plain-DiT models: ``local_conv: 0``)."""
    d = cfg.data
    m = dict(cfg.model) | dict((cfg.models.get(name) or {}).get("model") or {}) if name else cfg.model
    m = OmegaConf.create(dict(m))
    return DiTConfig(channels=3, frames=int(cfg.buffer), height=int(d.size), width=int(d.size), patch=int(m.patch), dim=int(m.dim),
                     depth=int(m.depth), heads=int(m.heads), ffn=m.get("ffn"), swiglu=bool(m.swiglu), window=tuple(m.window),
                     vocab=16, text_len=2 * int(d.objects), adaln_single=bool(m.adaln_single),
                     local_conv=int(m.get("local_conv", 0)))


@dataclass
class Batch:
    x1: torch.Tensor  # [b, B, 3, S, S] clean buffer
    memory: torch.Tensor  # [b, m, 3, S, S] clean memory frames (m may be 0)
    text: torch.Tensor  # [b, L] ids (0 = null)
    seeds: list[int]  # per example: its noise and times come from torch.Generator().manual_seed(seed)

    def generators(self, salt: int = 0) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s + salt) for s in self.seeds]

    def noise(self, salt: int = 0) -> torch.Tensor:
        """One noise tensor per buffer (Eq. 5), drawn per example (so DDP equals one process)."""
        shape = self.x1.shape[1:]
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators(salt)]).to(self.x1.device)


def make_batch(cfg, step: int, size: int, offset: int = 0, device="cpu") -> Batch:
    """Examples offset .. offset + size - 1 of the global batch of ``step``."""
    t, d, B = cfg.train, cfg.data, int(cfg.buffer)
    seed = int(cfg.trainer.seed)
    batch_rng = np.random.default_rng([seed, step])  # choices shared by the whole global batch
    m = int(batch_rng.integers(1, int(t.memory_max) + 1)) if batch_rng.random() < float(t.memory_prob) else 0
    gap = int(d.memory_gap)
    x1, memory, text = [], [], []
    for i in range(offset, offset + size):
        rng = np.random.default_rng([seed, step, i])
        clip = make_clip(rng, frames=B + gap, size=int(d.size), objects=int(d.objects), speed=float(d.speed), scale=float(d.scale), stripes=bool(d.stripes))
        g = int(rng.integers(max(m, 1) if m else 0, gap + 1))
        x1.append(clip.video[g : g + B])
        memory.append(np.concatenate([clip.video[:1], clip.video[g - (m - 1) : g]]) if m else clip.video[:0])
        ids = tokens(clip.text, 2 * int(d.objects))
        text.append(np.zeros_like(ids) if rng.random() < float(t.text_dropout) else ids)
    as_tensor = lambda a: torch.from_numpy(np.stack(a)).to(device)
    seeds = [(seed * 1_000_003 + step) * 4099 + i for i in range(offset, offset + size)]
    return Batch(as_tensor(x1), as_tensor(memory), as_tensor(text), seeds)


def flow_matching_loss(model, batch: Batch, chunk_sizes, cfg, step: int) -> torch.Tensor:
    B = int(cfg.buffer)
    c = int(np.random.default_rng([int(cfg.trainer.seed), step, 7]).choice(list(chunk_sizes)))  # one scheme per batch
    part = Partition.for_buffer(B, c)
    power = float(cfg.schedule_power)
    tau = torch.cat([training_times(part, 1, g, gamma=lambda t: t**power) for g in batch.generators(1)]).to(batch.x1.device)
    x0 = batch.noise()
    xt = make_xt(batch.x1, x0, tau, float(cfg.sigma_min))
    return F.mse_loss(model(xt, tau, batch.text, batch.memory), velocity_target(batch.x1, x0, float(cfg.sigma_min)))


def teacher_segment(teacher, batch: Batch, x0: torch.Tensor, part: Partition, guidance: float, sigma_min: float = 0.0, power: float = 1.0):
    """Brief 2.5: the boundary state (chunk j at level (N-1-j) s, the start of its segment, built by
    Eq. 5 from data and noise), the teacher's s guided micro-Euler steps (every chunk advances one
    level per step), and the student's target velocity: the displacement over the segment's time
    span, (end - start) / dtau, so that one student step of dtau lands where the teacher did
    (dtau = 1 / N for every chunk when power = 1)."""
    from .sample import guided

    levels = torch.tensor([(part.N - 1 - j) * part.s for j in range(part.N) for _ in range(part.c)], dtype=torch.float64)
    levels = torch.cat([torch.full((part.K,), float(part.T), dtype=torch.float64), levels])
    span = (level_time(torch.clamp(levels + part.s, max=part.T), part.T, power) - level_time(levels, part.T, power)).to(x0.device)
    tau = level_time(levels, part.T, power).float().to(x0.device).expand(len(x0), -1)
    start = make_xt(batch.x1, x0, tau, sigma_min)
    velocity = guided(teacher, batch.text, guidance, batch.memory if batch.memory.shape[1] else None)
    x = start
    with torch.no_grad():
        for micro in range(part.s):
            now = torch.clamp(levels + micro, max=part.T)
            t = level_time(now, part.T, power).to(x0.dtype).to(x0.device).expand(len(x0), -1)
            dt = (level_time(torch.clamp(now + 1, max=part.T), part.T, power) - level_time(now, part.T, power)).to(x0.dtype).to(x0.device)
            x = x + velocity(x, t) * dt.reshape(1, -1, *([1] * (x.dim() - 2)))
    safe = torch.where(span > 0, span, torch.ones_like(span)).to(x0.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
    return start, tau.to(x0.dtype), (x - start) / safe


def distillation_loss(student, teacher, batch: Batch, cfg) -> torch.Tensor:
    dcfg = cfg.distill
    part = Partition.for_buffer(int(cfg.buffer), int(dcfg.teacher_c), int(dcfg.teacher_s))
    x0 = batch.noise()
    start, tau, target = teacher_segment(teacher, batch, x0, part, float(dcfg.guidance), float(cfg.sigma_min), float(cfg.schedule_power))
    return F.mse_loss(student(start, tau, batch.text, batch.memory), target)


# the distilled students: where the memory frames of their training batches come from
STUDENTS = {"student": "data", "student_rollout": "rollout"}


def rollout_pool(model: StreamDiT, cfg, step: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'rollout' memory source (our remedy for the frame-sink student's drift): ``distill.rollout_pool``
    training prompts (drawn as the data's are, from the step), streamed by the student being trained
    exactly as the ``distilled_framesink`` row streams it (c = ``distill.teacher_c``, s = 1, no guidance,
    the frame-sink memory of ``eval.memory``) for ``data.memory_gap`` + buffer frames. Returns the
    frames [P, gap + B, 3, S, S] and their prompts [P, L]."""
    from .sample import FrameSinkMemory, stream

    d, B, seed = cfg.data, int(cfg.buffer), int(cfg.trainer.seed)
    prompts = [make_clip(np.random.default_rng([seed, step, 13, i]), frames=1, size=int(d.size), objects=int(d.objects), scale=float(d.scale),
                         stripes=bool(d.stripes)).text for i in range(int(cfg.distill.rollout_pool))]
    text = torch.from_numpy(np.stack([tokens(words, 2 * int(d.objects)) for words in prompts])).to(device)
    part = Partition.for_buffer(B, int(cfg.distill.teacher_c), 1)
    memory = FrameSinkMemory(int(cfg.eval.memory.sink_frames), int(cfg.eval.memory.window_frames))
    was_training = model.training
    model.eval()
    frames = stream(model, text, part, int(d.memory_gap) + B, 1.0, torch.Generator().manual_seed(seed * 7919 + step), memory,
                    power=float(cfg.schedule_power))
    model.train(was_training)
    return frames, text


def rollout_batch(batch: Batch, pool: tuple[torch.Tensor, torch.Tensor], cfg, step: int, offset: int = 0) -> Batch:
    """A memory batch re-drawn from the student's own rollouts: example i takes rollout j, the buffer
    frames g .. g + B - 1 of it (the student's own continuation) and its memory (the rollout's first
    frame and the m - 1 frames just before g), as ``make_batch`` takes them from a real clip; batches
    without memory frames stay as they are (data)."""
    m = batch.memory.shape[1]
    if m == 0:
        return batch
    frames, texts = pool
    B, gap, seed = int(cfg.buffer), int(cfg.data.memory_gap), int(cfg.trainer.seed)
    x1, memory, text = [], [], []
    for i in range(offset, offset + len(batch.x1)):
        rng = np.random.default_rng([seed, step, i, 17])
        j, g = int(rng.integers(len(frames))), int(rng.integers(m, gap + 1))
        x1.append(frames[j, g : g + B])
        memory.append(torch.cat([frames[j, :1], frames[j, g - (m - 1) : g]]))
        text.append(torch.zeros_like(texts[j]) if rng.random() < float(cfg.train.text_dropout) else texts[j])
    return Batch(torch.stack(x1), torch.stack(memory), torch.stack(text), batch.seeds)


def check_checkpoint(state: dict, model_cfg: DiTConfig, path: Path) -> None:
    saved = state.get("model_config")
    if saved != model_cfg.__dict__:
        diff = {k: (saved.get(k) if saved else None, v) for k, v in model_cfg.__dict__.items() if not saved or saved.get(k) != v}
        raise ValueError(f"checkpoint {path} was trained with another model configuration (saved vs now: {diff}); "
                         "use a new run directory or the configuration it was trained with")


def train(cfg, kind: str, steps: int, lr: float, checkpoint: Path | None, chunk_sizes=(16,), teacher: StreamDiT | None = None,
          init: dict | None = None, log: Callable[[dict, int], None] | None = None, device: str = "cpu",
          name: str | None = None, memory_source: str = "data") -> tuple[StreamDiT, dict]:
    """Train one model (``kind``: "flow" or "distill") for ``steps``; resumes from ``checkpoint``
    when it exists. Returns the model (unwrapped) and {loss_first, loss_last, seconds, steps}.
    ``name``: the trained model of ``cfg.models`` this is (its architecture overrides apply).
    ``memory_source`` (distillation): "data" (memory frames from real clips) or "rollout" (from the
    student's own frame-sink rollouts, ``rollout_pool``, made anew every ``distill.rollout_every`` steps)."""
    if kind not in ("flow", "distill") or (kind == "distill" and teacher is None):
        raise ValueError(f"train kind must be 'flow', or 'distill' with a teacher (got {kind!r}, teacher {'set' if teacher else 'missing'})")
    if memory_source not in ("data", "rollout") or (memory_source == "rollout" and kind != "distill"):
        raise ValueError(f"memory_source must be 'data', or 'rollout' for a distillation (got {memory_source!r} for {kind})")
    every = int(cfg.distill.rollout_every)
    if memory_source == "rollout" and (every < 1 or int(cfg.trainer.checkpoint_every) % every):
        raise ConfigError(f"distill.rollout_every {every} must divide trainer.checkpoint_every {cfg.trainer.checkpoint_every} (so a resumed run rolls out where an uninterrupted one does)")
    rank, world = distributed()
    mcfg = model_config(cfg, name)
    t = cfg.train
    torch.manual_seed(int(cfg.trainer.seed))
    model = StreamDiT(mcfg).to(device)
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(t.weight_decay), betas=(0.9, 0.99))
    start, history, seconds = 0, [], 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        check_checkpoint(state, mcfg, checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history, seconds = state["step"], state["history"], state["seconds"]
    # batches without memory frames leave the memory embedding unused
    wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    global_batch = int(t.batch_size)
    if global_batch % world:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by {world} processes")
    local = global_batch // world
    t0 = time.perf_counter()
    bar = progress(total=steps, initial=start, desc=f"streamdit/{kind}", disable=rank != 0)
    pool, pool_window = None, None
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr * warmup_cosine(step, steps, int(t.warmup))
        batch = make_batch(cfg, step, local, rank * local, device)
        if memory_source == "rollout" and batch.memory.shape[1]:
            if pool_window != step // every:  # the first memory batch of a window rolls the current student out
                pool, pool_window = rollout_pool(model, cfg, step, device), step // every
            batch = rollout_batch(batch, pool, cfg, step, rank * local)
        if kind == "flow":
            loss = flow_matching_loss(wrapped, batch, chunk_sizes, cfg, step)
        else:
            loss = distillation_loss(wrapped, teacher, batch, cfg)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{kind} loss is {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(t.grad_clip))
        opt.step()
        done = step + 1
        history.append(float(loss.item()))
        bar.update()
        if log is not None and rank == 0 and (done % int(cfg.trainer.log_every) == 0 or done == steps):
            recent = float(np.mean(history[-int(cfg.trainer.log_every):]))
            log({"loss": recent, "lr": opt.param_groups[0]["lr"]}, done)
            bar.set_postfix(loss=f"{recent:.4f}", refresh=False)
        if checkpoint is not None and rank == 0 and (done % int(cfg.trainer.checkpoint_every) == 0 or done == steps):
            atomic_torch_save(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": done, "history": history,
                                           "seconds": seconds + time.perf_counter() - t0, "model_config": mcfg.__dict__})
    bar.close()
    seconds += time.perf_counter() - t0
    if world > 1:
        check_ranks_agree(model)
    model.eval()
    window = max(1, min(50, len(history) // 5))
    summary = {"loss_first": float(np.mean(history[:window])) if history else float("nan"),
               "loss_last": float(np.mean(history[-window:])) if history else float("nan"), "seconds": seconds, "steps": steps}
    return model, summary


def load_model(cfg, checkpoint: Path, device: str = "cpu", name: str | None = None) -> StreamDiT:
    """A trained model (``cfg.models`` entry ``name``) from its checkpoint, refusing one trained with
    another configuration."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    state = load_checkpoint(checkpoint, device)
    mcfg = model_config(cfg, name)
    check_checkpoint(state, mcfg, checkpoint)
    model = StreamDiT(mcfg).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float:
    """Train the model one row needs into a new run directory (rank 0 writes; every rank trains).
    The student needs its teacher: ``distill.teacher=<run>/checkpoints/model_mixed.pt``; a streaming
    model fine-tunes from a clip model with ``+train.init_from=<run>/checkpoints/model_uniform.pt``
    (``train.finetune_steps``), else it trains from scratch (``train.steps``)."""
    rank, world = distributed()
    runtime.setup(cfg.trainer)
    device = runtime.resolve_device(cfg.trainer.device)
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    which = cfg.method.model
    if which not in STUDENTS and which not in cfg.models:
        raise ConfigError(f"method.model must be one of {', '.join([*cfg.models, *STUDENTS])} (got {which!r})")
    teacher = None
    if which in STUDENTS:
        path = cfg.distill.get("teacher")
        if not path:
            raise ConfigError("the student needs distill.teacher=<path to a trained model_mixed.pt>")
        teacher = load_model(cfg, Path(path), device)
    run = Run.create(EXPERIMENT, cfg.preset_name, cfg, overrides=list(HydraConfig.get().overrides.task), tags=sweep_tags()) if rank == 0 else None
    directory = [str(run.dir) if run else None]
    if world > 1:
        dist.broadcast_object_list(directory, src=0)
    checkpoint = Path(directory[0]) / "checkpoints" / f"model_{which}.pt"
    log = (lambda m, step: run.logger.log(m, step=step, scope=f"train/{which}")) if run else None
    with run if run is not None else contextlib.nullcontext():
        if which in STUDENTS:
            _, summary = train(cfg, "distill", int(cfg.distill.steps), float(cfg.distill.lr), checkpoint, teacher=teacher,
                               init=teacher.state_dict(), log=log, device=device, memory_source=STUDENTS[which])
        else:
            init_from = cfg.train.get("init_from")
            init = load_model(cfg, Path(init_from), device, which).state_dict() if init_from else None
            steps = int(cfg.train.finetune_steps if init is not None else cfg.train.steps)
            _, summary = train(cfg, "flow", steps, float(cfg.train.lr), checkpoint, chunk_sizes=list(cfg.models[which].chunks), init=init, log=log,
                               device=device, name=which)
        if run is not None:
            run.add_results("training", which, summary)
    if run is not None:
        print(f"[streamdit] {which}: loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f} in {summary['seconds']:.0f} s on {world} process(es) -> {checkpoint}", flush=True)
    if world > 1:
        dist.destroy_process_group()
    return summary["loss_last"]


if __name__ == "__main__":
    main()
