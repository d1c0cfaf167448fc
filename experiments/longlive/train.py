"""Training the host (Self Forcing's recipe at CPU scale, brief 1.3-1.5 and 6), one loop for every row.

- ``teacher``: the bidirectional clip model (full attention over the whole 16-frame clip), flow
  matching with one noise level per clip and the null prompt 10 % of the time (for guidance). It is
  the real score of the distribution-matching loss and the initialisation of every student.
- ``diffusion_forcing``: the causal student on independently noised chunks (one level per chunk)
  under the block-causal mask.
- ``teacher_forcing``: clean context: the sequence is [clean clip, noisy clip] with both halves at
  the same RoPE positions; noisy chunk i sees clean chunks < i and itself.
- ``self_forcing``: the student rolls out with its own KV cache (``stream.Stream``, the inference
  code path), stopping every chunk at one random exit step drawn per iteration, gradient through
  the exit forwards only; a whole-clip DMD loss against the teacher (real score, guided) and a
  critic (fake score, a trainable copy of the teacher trained by flow matching on the student's
  rollouts), critic every iteration and the generator every ``generator_every``-th.
- ``long_tuned`` (LongLive's streaming long tuning, brief 2.3, simplified): the self-forcing student
  and its critic go on training on rollouts of ``train.long_frames`` frames streamed with the
  inference policy (``train.long_policy``: frame sink + short window); only the last horizon-length
  window carries gradient and is scored by DMD and the critic (the teacher's horizon). LongLive also
  keeps one sequence alive across optimizer steps and switches prompts inside it; here each
  iteration starts a new sequence and keeps one prompt (stated in the README).

Every batch is a pure function of (seed, step, example index), so a resumed run sees the same
batches; checkpoints are written atomically and a run resumes from its last one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.distributed import warmup_cosine
from shared.io import atomic_torch_save, load_checkpoint
from shared.procedural import make_clip, tokens
from shared.progress import progress
from shared.streaming import Full

from .model import CausalVideoDiT, DenseAttention, HostConfig
from .stream import Stream, warp

KINDS = ("teacher", "diffusion_forcing", "teacher_forcing", "self_forcing", "long_tuned")


def host_config(cfg) -> HostConfig:
    m, d = cfg.model, cfg.data
    return HostConfig(size=int(d.size), patch=int(m.patch), chunk=int(m.chunk), dim=int(m.dim), depth=int(m.depth), heads=int(m.heads),
                      rope_bands=tuple(m.rope_bands), text_len=2 * (int(d.objects) + 1), local_conv=bool(m.local_conv))


def make_batch(cfg, step: int, size: int, offset: int = 0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Examples offset .. offset + size - 1 of the global batch of ``step``: clips [b, F, 3, S, S]
    of the training horizon and their prompts [b, L] (null with probability ``text_dropout``)."""
    d, seed = cfg.data, int(cfg.trainer.seed)
    videos, texts = [], []
    for i in range(offset, offset + size):
        rng = np.random.default_rng([seed, step, i])
        clip = make_clip(rng, frames=int(cfg.horizon), size=int(d.size), objects=int(d.objects), speed=float(d.speed), scale=float(d.scale),
                         stripes=bool(d.stripes))
        ids = tokens(clip.text, 2 * (int(d.objects) + 1))
        videos.append(clip.video)
        texts.append(np.zeros_like(ids) if rng.random() < float(cfg.train.text_dropout) else ids)
    return torch.from_numpy(np.stack(videos)).to(device), torch.from_numpy(np.stack(texts)).to(device)


def chunk_mask(frames: int, chunk: int, tokens_per_frame: int) -> torch.Tensor:
    """Block-causal over chunks, token by token: a token sees every token of its chunk and earlier ones."""
    chunk_of = torch.arange(frames * tokens_per_frame) // tokens_per_frame // chunk
    return chunk_of[:, None] >= chunk_of[None, :]


def teacher_forcing_mask(frames: int, chunk: int, tokens_per_frame: int) -> torch.Tensor:
    """[clean; noisy] sequence: clean chunk i sees clean chunks <= i; noisy chunk i sees clean chunks
    < i and its own noisy chunk (brief 1.5)."""
    causal = chunk_mask(frames, chunk, tokens_per_frame)
    chunk_of = torch.arange(frames * tokens_per_frame) // tokens_per_frame // chunk
    strictly_before = chunk_of[:, None] > chunk_of[None, :]
    same = chunk_of[:, None] == chunk_of[None, :]
    top = torch.cat([causal, torch.zeros_like(causal)], dim=1)
    bottom = torch.cat([strictly_before, same], dim=1)
    return torch.cat([top, bottom], dim=0)


def noise_levels(generator: torch.Generator, shape: tuple[int, ...], shift: float) -> torch.Tensor:
    """sigma = warp(u, shift), u ~ U(0.02, 0.98) (the shifted timestep draw of Self Forcing)."""
    u = 0.02 + 0.96 * torch.rand(shape, generator=generator, dtype=torch.float64)
    return (shift * u / (1 + (shift - 1) * u)).float()


def per_frame(level: torch.Tensor) -> torch.Tensor:
    return level[..., None, None, None]


def flow_loss(model: CausalVideoDiT, video: torch.Tensor, text: torch.Tensor, kind: str, generator: torch.Generator, shift: float) -> torch.Tensor:
    """Flow matching (v = eps - x0) for the teacher, diffusion forcing and teacher forcing."""
    cfg = model.cfg
    b, frames = video.shape[:2]
    eps = torch.randn(video.shape, generator=generator).to(video)
    rope, positions = cfg.rope(), model.positions(frames)
    if kind == "teacher":
        sigma = noise_levels(generator, (b, 1), shift).expand(b, frames).to(video)
    else:
        sigma = noise_levels(generator, (b, frames // cfg.chunk), shift).repeat_interleave(cfg.chunk, dim=1).to(video)
    noisy = (1 - per_frame(sigma)) * video + per_frame(sigma) * eps
    target = eps - video
    if kind == "teacher":
        return F.mse_loss(model(noisy, sigma, text, DenseAttention(rope, positions)), target)
    if kind == "diffusion_forcing":
        mask = chunk_mask(frames, cfg.chunk, cfg.tokens_per_frame).to(video.device)
        return F.mse_loss(model(noisy, sigma, text, DenseAttention(rope, positions, mask)), target)
    if kind == "teacher_forcing":
        mask = teacher_forcing_mask(frames, cfg.chunk, cfg.tokens_per_frame).to(video.device)
        both = torch.cat([video, noisy], dim=1)
        levels = torch.cat([torch.zeros_like(sigma), sigma], dim=1)
        v = model(both, levels, text, DenseAttention(rope, torch.cat([positions, positions]), mask))[:, frames:]
        return F.mse_loss(v, target)
    raise ValueError(f"flow matching kind must be teacher, diffusion_forcing or teacher_forcing, got {kind!r}")


def x0_of(model: CausalVideoDiT, noisy: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The bidirectional model's clean estimate x0 = x - sigma v over a whole clip."""
    rope, positions = model.cfg.rope(), model.positions(noisy.shape[1])
    return noisy - per_frame(sigma) * model(noisy, sigma, text, DenseAttention(rope, positions))


def rollout(student: CausalVideoDiT, text: torch.Tensor, frames: int, generator: torch.Generator, exit_step: int | None, grad: bool,
            sigmas: list[float], policy=None, keep_last: int | None = None) -> torch.Tensor:
    """Self Forcing's training rollout: the inference ``Stream`` (a full cache, or ``policy``), every
    chunk stopped at ``exit_step`` (its x0 is the chunk's output). ``keep_last``: return only the last
    frames, the only ones run with gradient (long tuning: earlier chunks are context)."""
    policy = policy or Full(frames * student.cfg.tokens_per_frame)
    stream = Stream(student, policy, batch=len(text), generator=generator, sigmas=sigmas, dtype=next(student.parameters()).dtype, device=text.device)
    first_kept = frames - (keep_last or frames)
    chunks = [stream.next_chunk(text, exit_step=exit_step, grad=grad and c * student.cfg.chunk >= first_kept) for c in range(frames // student.cfg.chunk)]
    return torch.cat(chunks, dim=1)[:, first_kept:]


def dmd_loss(video: torch.Tensor, teacher: CausalVideoDiT, critic: CausalVideoDiT, text: torch.Tensor, generator: torch.Generator,
             shift: float, guidance: float) -> torch.Tensor:
    """Distribution matching (brief 1.4): at one noise level for the whole clip, the guided real
    score's x0 and the critic's x0; the gradient (fake - real) / mean|x - real| (per sample) is
    pushed into the rollout by 0.5 ||x - stopgrad(x - grad)||^2."""
    b = len(video)
    sigma = noise_levels(generator, (b, 1), shift).expand(b, video.shape[1]).to(video)
    with torch.no_grad():
        x = video.detach()
        noisy = (1 - per_frame(sigma)) * x + per_frame(sigma) * torch.randn(x.shape, generator=generator).to(x)
        real_c = x0_of(teacher, noisy, sigma, text)
        real_u = x0_of(teacher, noisy, sigma, torch.zeros_like(text))
        real = real_u + guidance * (real_c - real_u)
        fake = x0_of(critic, noisy, sigma, text)
        scale = (x - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        grad = torch.nan_to_num((fake - real) / scale)
    return 0.5 * F.mse_loss(video.double(), (video - grad).detach().double())


def critic_loss(critic: CausalVideoDiT, video: torch.Tensor, text: torch.Tensor, generator: torch.Generator, shift: float) -> torch.Tensor:
    """The fake score learns the student's distribution: flow matching on (detached) rollouts."""
    return flow_loss(critic, video.detach(), text, "teacher", generator, shift)


def check_checkpoint(state: dict, host: HostConfig, kind: str, path: Path) -> None:
    if state.get("host") != host.__dict__ or state.get("kind") != kind:
        raise ValueError(f"checkpoint {path} was trained as {state.get('kind')!r} with {state.get('host')}, not {kind!r} with {host.__dict__}; "
                         "use a new run directory or the configuration it was trained with")


def load_model(path: Path, host: HostConfig, kind: str, device="cpu") -> CausalVideoDiT:
    """A trained row's model, refusing one trained as another row or configuration."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = load_checkpoint(path, device)
    check_checkpoint(state, host, kind, path)
    model = CausalVideoDiT(host).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def long_policy(cfg, host: HostConfig):
    """The inference policy long tuning streams with (LongLive trains with the window it serves with)."""
    from shared.streaming import FrameSink

    p = cfg.train.long_policy
    return FrameSink(host.tokens_per_frame, sink_frames=int(p.sink_frames), window_frames=int(p.window_frames))


def train(cfg, kind: str, steps: int, checkpoint: Path | None, init: dict | None = None, teacher: CausalVideoDiT | None = None,
          log: Callable[[dict, int], None] | None = None, device: str = "cpu", init_critic: dict | None = None) -> tuple[CausalVideoDiT, dict]:
    """Train one row's model for ``steps`` iterations (self forcing, long tuning: critic iterations);
    resumes from ``checkpoint`` when it exists. Returns the model and {loss_first, loss_last, seconds, steps}.
    ``init_critic``: the critic's starting weights (long tuning continues self forcing's critic)."""
    if kind not in KINDS or (kind in ("self_forcing", "long_tuned") and teacher is None):
        raise ValueError(f"train kind must be one of {KINDS} (self_forcing and long_tuned with a teacher); got {kind!r}")
    host, t = host_config(cfg), cfg.train
    torch.manual_seed(int(cfg.trainer.seed))
    model = CausalVideoDiT(host).to(device)
    if init is not None:
        model.load_state_dict(init)
    sf = kind in ("self_forcing", "long_tuned")
    lr = float(t.sf_lr if sf else t.lr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.0, 0.999) if sf else (0.9, 0.99), weight_decay=0.0)
    critic = copy.deepcopy(teacher).train() if sf else None
    if init_critic is not None:
        critic.load_state_dict(init_critic)
    long = kind == "long_tuned"
    frames, policy = (int(t.long_frames), long_policy(cfg, host)) if long else (int(cfg.horizon), None)
    keep = int(cfg.horizon) if long else None
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=float(t.critic_lr), betas=(0.0, 0.999)) if sf else None
    start, history, seconds = 0, [], 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        check_checkpoint(state, host, kind, checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sf:
            critic.load_state_dict(state["critic"])
            critic_opt.load_state_dict(state["critic_optimizer"])
        start, history, seconds = state["step"], state["history"], state["seconds"]
    shift, sigmas = float(cfg.sampler.shift), [warp(s / 1000, float(cfg.sampler.shift)) for s in cfg.sampler.steps]
    every = int(t.generator_every)
    t0 = time.perf_counter()
    bar = progress(total=steps, initial=start, desc=f"longlive/{kind}")
    model.train()
    for step in range(start, steps):
        factor = warmup_cosine(step, steps, int(t.warmup))
        video, text = make_batch(cfg, step, int(t.batch_size), device=device)
        generator = torch.Generator().manual_seed(int(cfg.trainer.seed) * 1_000_003 + step)
        if not sf:
            for group in opt.param_groups:
                group["lr"] = lr * factor
            loss = flow_loss(model, video, text, kind, generator, shift)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(t.grad_clip))
            opt.step()
        else:
            exit_step = int(torch.randint(len(sigmas), (1,), generator=generator))  # one exit step for every chunk
            with torch.no_grad():
                fake_video = rollout(model, text, frames, generator, exit_step, False, sigmas, policy, keep)
            loss_critic = critic_loss(critic, fake_video, text, generator, shift)
            critic_opt.zero_grad(set_to_none=True)
            loss_critic.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), float(t.grad_clip))
            critic_opt.step()
            loss = loss_critic
            if step % every == 0:
                video_g = rollout(model, text, frames, generator, exit_step, True, sigmas, policy, keep)
                loss_g = dmd_loss(video_g, teacher, critic, text, generator, shift, float(t.guidance))
                opt.zero_grad(set_to_none=True)
                loss_g.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(t.grad_clip))
                opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{kind} loss is {loss.item()} at step {step}; lower the learning rate")
        done = step + 1
        history.append(float(loss.item()))
        bar.update()
        if log is not None and (done % int(cfg.trainer.log_every) == 0 or done == steps):
            log({"loss": float(np.mean(history[-int(cfg.trainer.log_every):]))}, done)
        if checkpoint is not None and (done % int(cfg.trainer.checkpoint_every) == 0 or done == steps):
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": done, "history": history,
                     "seconds": seconds + time.perf_counter() - t0, "host": host.__dict__, "kind": kind, "horizon": int(cfg.horizon),
                     "sampler": {"steps": [int(x) for x in cfg.sampler.steps], "shift": float(cfg.sampler.shift)}}
            if sf:
                state |= {"critic": critic.state_dict(), "critic_optimizer": critic_opt.state_dict()}
            atomic_torch_save(checkpoint, state)
    bar.close()
    seconds += time.perf_counter() - t0
    model.eval()
    window = max(1, min(50, len(history) // 5))
    return model, {"loss_first": float(np.mean(history[:window])) if history else float("nan"),
                   "loss_last": float(np.mean(history[-window:])) if history else float("nan"), "seconds": seconds, "steps": steps}
