"""Generation: independent clips (the non-streaming ceiling), the moving-buffer stream (StreamDiT,
FIFO-style diagonal sampling, the distilled student) and the frame-sink memory for long rollouts.

    v = guided(model, text, guidance=2.0)                                 # classifier-free guidance
    video = generate_clips(model, text, frames=160, steps=32, guidance=2.0, generator=g)
    video = stream(model, text, Partition.for_buffer(16, c=1, s=2), frames=160, generator=g)
    video = stream(student, text, Partition.for_buffer(16, c=2), 160, generator=g, memory=FrameSinkMemory(1, 2))

Every call returns [b, frames, C, H, W]. The stream starts from a cached uniform trajectory
(brief 2.6), so its first chunk costs a full clip's generation; steady state is one forward per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.streaming import KVCache
from shared.streaming.policies import FrameSink

from .model import StreamDiT
from .schedule import Partition, StreamQueue, euler_sample


def guided(model: StreamDiT, text: torch.Tensor, guidance: float = 1.0, memory=None):
    """The velocity u(x, tau) for a prompt; guidance w != 1 runs the conditional and the null-text
    branch in one batch: u = u_null + w (u_text - u_null). ``memory``: frames or per-layer K/V."""
    if guidance == 1.0:
        return lambda x, tau: model(x, tau, text, memory)
    if memory is not None and not isinstance(memory, torch.Tensor):
        raise ValueError("classifier-free guidance over a cached memory is not supported (the student, which streams with one, runs without guidance)")
    null = torch.zeros_like(text)
    both_memory = torch.cat([memory, memory]) if memory is not None else None

    def velocity(x, tau):
        both = model(torch.cat([x, x]), torch.cat([tau, tau]), torch.cat([text, null]), both_memory)
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return velocity


def _noise(generator: torch.Generator, dtype, device):
    return lambda shape: torch.randn(shape, generator=generator, dtype=dtype).to(device)


def buffer_shape(model: StreamDiT, batch: int) -> tuple[int, ...]:
    c = model.cfg
    return (batch, c.frames, c.channels, c.height, c.width)


@torch.no_grad()
def generate_clips(model: StreamDiT, text: torch.Tensor, frames: int, steps: int, guidance: float = 1.0,
                   generator: torch.Generator | None = None, power: float = 1.0, switch: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Non-streaming: independent buffer-length clips from fresh noise, ``steps`` uniform Euler
    steps each, concatenated (nothing carries over, so every seam is a jump). ``switch = (frame,
    new_text)``: clips that start at or after ``frame`` take the new prompt (a clip model cannot
    change its prompt inside a clip, so a switch between seams waits for the next one)."""
    device = next(model.parameters()).device
    noise = _noise(generator or torch.Generator().manual_seed(0), torch.float32, device)
    clips: list[torch.Tensor] = []
    while (start := sum(c.shape[1] for c in clips)) < frames:
        prompt = switch[1] if switch is not None and start >= switch[0] else text
        clips.append(euler_sample(guided(model, prompt, guidance), noise(buffer_shape(model, len(text))), steps, power=power))
    return torch.cat(clips, dim=1)[:, :frames]


@dataclass(frozen=True)
class FrameSinkMemory:
    """LongLive's frame sink through the shared core (our extension, brief 11): the first
    ``sink_frames`` emitted frames stay, plus the ``window_frames`` most recent (the incoming chunk
    counts toward it). Each emitted frame's per-layer K/V is computed once and held in a
    ``KVCache`` per layer under the ``FrameSink`` policy."""

    sink_frames: int = 1
    window_frames: int = 2

    def caches(self, model: StreamDiT, batch: int, chunk: int, device) -> list[KVCache]:
        cfg = model.cfg
        per_frame = cfg.grid[1] * cfg.grid[2]
        policy = FrameSink(tokens_per_frame=per_frame, sink_frames=self.sink_frames, window_frames=self.window_frames)
        dtype = next(model.parameters()).dtype
        return [KVCache(policy, batch=batch, kv_heads=cfg.heads, head_dim=cfg.dim // cfg.heads, max_chunk=chunk * per_frame, dtype=dtype, device=device)
                for _ in range(cfg.depth)]


@torch.no_grad()
def stream(model: StreamDiT, text: torch.Tensor, part: Partition, frames: int, guidance: float = 1.0,
           generator: torch.Generator | None = None, memory: FrameSinkMemory | None = None,
           on_chunk=None, power: float = 1.0, switch: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Run the moving buffer until ``frames`` frames are emitted; ``on_chunk(frames_so_far)`` is
    called after each emission (progress bars). ``switch = (frame, new_text)``: the paper's
    interactive prompt change; once ``frame`` frames are out, every later step (the frames still in
    the buffer, part-denoised under the old prompt, and the memory's new entries) sees the new text."""
    if part.B != model.cfg.frames:
        raise ValueError(f"partition buffer {part.B} (K {part.K} + N {part.N} x c {part.c}) differs from the model's {model.cfg.frames} frames")
    if switch is not None and (switch[0] % part.c or switch[0] <= 0):
        raise ValueError(f"a prompt switch at frame {switch[0]} must fall between chunks: a positive multiple of c = {part.c}")
    device = next(model.parameters()).device
    noise = _noise(generator or torch.Generator().manual_seed(0), torch.float32, device)
    caches = memory.caches(model, len(text), part.c, device) if memory is not None else None
    views: list = []

    prompt = [text]  # the prompt in force; a switch replaces it between emissions

    def velocity(x, tau):
        kv = [(v.k, v.v) for v in views] if views else None
        return guided(model, prompt[0], guidance, kv)(x, tau)

    queue = StreamQueue.start(velocity, part, noise(buffer_shape(model, len(text))), noise=noise, power=power)
    out = []
    while queue.emitted < frames:
        chunk = queue.step(velocity)
        if chunk is None:
            continue
        out.append(chunk)
        if caches is not None:
            frame_ids = torch.arange(queue.emitted - part.c, queue.emitted, device=device)
            per_frame = model.cfg.grid[1] * model.cfg.grid[2]
            ids = frame_ids.repeat_interleave(per_frame)
            views = [cache.update(k, v, frame=ids) for cache, (k, v) in zip(caches, model.memory_kv(chunk, prompt[0]))]
        if switch is not None and queue.emitted >= switch[0]:
            prompt[0] = switch[1]
        if on_chunk is not None:
            on_chunk(queue.emitted)
    return torch.cat(out, dim=1)[:, :frames]


def evaluations_per_frame(kind: str, part: Partition | None, steps: int, guidance: float, buffer: int, memory: bool) -> tuple[float, float]:
    """(levels a frame passes through, model forwards of the whole buffer per emitted frame), both
    doubled under guidance; a memory adds one frame-sized pass per emitted frame (1 / buffer)."""
    cfg_factor = 1.0 if guidance == 1.0 else 2.0
    if kind == "clips":
        return steps * cfg_factor, steps * cfg_factor / buffer
    per_frame = part.s / part.c * cfg_factor + (1.0 / buffer if memory else 0.0)
    return part.T * cfg_factor, per_frame
