"""Chunk-by-chunk generation through the KV cache: Self Forcing's few-step sampler, the one code
path that inference *and* self-forcing training run (brief 1.2, 1.3).

Per chunk: start from noise; at each step sigma_i predict x0 = x - sigma_i v; unless it is the last
(or the training exit) step, re-noise x = (1 - sigma_next) x0 + sigma_next eps with *fresh* noise
(not an Euler step); the chunk's output is the last x0. Then a *context pass* at sigma = 0 writes
the chunk's clean keys and values into the caches; the steps only peek (skipping the pass would
leave noisy K/V behind). Which cached frames a chunk sees, and at which RoPE positions, is the
cache policy's business (``shared.streaming.policies``: Full, FrameSink, DeepSink, ...).

    stream = Stream(model, FrameSink(16, sink_frames=2, window_frames=7), batch=4, generator=g)
    video = stream.generate(text, chunks=8)          # [b, 16, C, H, W]
    stream.switch(new_text, mode="recache")          # LongLive's KV re-cache at a prompt switch
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shared.streaming.policies import Policy

from .model import Attention, CachedAttention, CausalVideoDiT, new_caches, rope_positions

STEPS = (1000, 750, 500, 250)  # Self Forcing's denoising_step_list


@dataclass(frozen=True)
class ModelCall:
    """One forward the sampler needs: ``model(x, sigma, text, attention)``, with gradient when ``grad``."""

    x: torch.Tensor
    sigma: torch.Tensor
    text: torch.Tensor
    attention: CachedAttention
    grad: bool


def warp(sigma: float, shift: float) -> float:
    """The flow-matching timestep shift: sigma' = s sigma / (1 + (s - 1) sigma)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigmas_for(steps: tuple[int, ...] = STEPS, shift: float = 5.0) -> list[float]:
    """The steps' noise levels: timestep t indexes the warped table, sigma = warp(t / 1000)
    ({1, 0.9375, 0.8333, 0.625} for the four default steps at shift 5)."""
    if not steps or any(not 0 < t <= 1000 for t in steps) or list(steps) != sorted(steps, reverse=True):
        raise ValueError(f"denoising steps must be decreasing timesteps in (0, 1000], got {list(steps)}")
    return [warp(t / 1000, shift) for t in steps]


class _Recache(Attention):
    """LongLive's re-cache forward: the kept frames, clean, under the new prompt, attend to each other
    (bidirectionally, as the official cached path does) and overwrite their slots' K/V in place."""

    def __init__(self, stream: Stream, slots: torch.Tensor):
        self.stream, self.slots = stream, slots

    def __call__(self, layer, q, k, v):
        cache = self.stream.caches[layer]
        cache.k[:, :, self.slots], cache.v[:, :, self.slots] = k.to(cache.k.dtype), v.to(cache.v.dtype)
        pos = cache.pos[self.slots]
        kv_rope, _ = rope_positions(cache.policy, pos, pos[:0])
        rope = self.stream.rope
        return F.scaled_dot_product_attention(rope.apply(q, kv_rope), rope.apply(k, kv_rope), v)


def _frames(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """A level to multiply frames [b, chunk, C, H, W] by: a float, or per stream [b] -> [b, 1, 1, 1, 1]."""
    return sigma[:, None, None, None, None] if isinstance(sigma, torch.Tensor) else sigma


class Stream:
    """A generation in progress: per-layer caches, the frames emitted so far, the sampler's noise."""

    def __init__(self, model: CausalVideoDiT, policy: Policy, batch: int, generator: torch.Generator | None = None,
                 sigmas: list[float] | None = None, dtype: torch.dtype = torch.float32, device="cpu"):
        self.model, self.policy, self.cfg = model, policy, model.cfg
        self.sigmas = sigmas_for() if sigmas is None else list(sigmas)
        self.batch, self.dtype, self.device = batch, dtype, device
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rope = self.cfg.rope()
        self.caches = new_caches(self.cfg, policy, batch, dtype, device)
        self.frames: list[torch.Tensor] = []  # emitted chunks, each [b, chunk, C, H, W]

    @property
    def frames_done(self) -> int:
        return len(self.frames) * self.cfg.chunk

    def noise(self) -> torch.Tensor:
        cfg = self.cfg
        shape = (self.batch, cfg.chunk, cfg.channels, cfg.size, cfg.size)
        return torch.randn(shape, generator=self.generator, dtype=torch.float64).to(self.dtype).to(self.device)

    def _sigma(self, value: float | torch.Tensor) -> torch.Tensor:
        """[b, chunk]: one level for every stream (a float) or one per stream (a tensor [b])."""
        if isinstance(value, torch.Tensor):
            return value.to(self.dtype).to(self.device)[:, None].expand(self.batch, self.cfg.chunk)
        return torch.full((self.batch, self.cfg.chunk), value, dtype=self.dtype, device=self.device)

    def v2v_levels(self, strength: torch.Tensor) -> list[float | torch.Tensor]:
        """Video-to-video (StreamDiffusionV2): the first step at each stream's own ``strength`` [b],
        then the sampler's levels below every stream's strength."""
        if strength.shape != (self.batch,) or not bool(((strength > 0) & (strength <= 1)).all()):
            raise ValueError(f"strength must be {self.batch} levels in (0, 1], got {strength.tolist()}")
        strength = strength.to(self.dtype).to(self.device)
        return [strength, *(s for s in self.sigmas if s < float(strength.min()))]

    def next_chunk(self, text: torch.Tensor, exit_step: int | None = None, grad: bool = False,
                   source: torch.Tensor | None = None, strength: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise one chunk and write it into the caches; returns its frames [b, chunk, C, H, W].

        ``exit_step`` (training): stop at that step and return its x0, the only forward run with
        gradient when ``grad`` (the steps before and the context pass run without: cached K/V never
        carry gradient, brief 1.3). Inference: the last step. ``source`` [b, chunk, C, H, W] with
        ``strength`` [b]: video-to-video, the chunk starts from the source frames noised to that
        strength instead of from pure noise (``v2v_levels``)."""
        calls = self.chunk_calls(text, exit_step, grad, source, strength)
        call = next(calls)
        while True:
            with torch.set_grad_enabled(call.grad):
                v = self.model(call.x, call.sigma, call.text, call.attention)
            try:
                call = calls.send(v)
            except StopIteration as done:
                return done.value

    def chunk_calls(self, text: torch.Tensor, exit_step: int | None = None, grad: bool = False,
                    source: torch.Tensor | None = None, strength: torch.Tensor | None = None) -> Generator[ModelCall, torch.Tensor, torch.Tensor]:
        """The sampler of ``next_chunk`` as a coroutine: it yields each model call it needs (the
        denoising steps, then the context pass) and is sent the velocity back, so a driver may run the
        calls elsewhere (the pipeline over ranks interleaves several streams' calls); returns x0."""
        sigmas = self.sigmas if source is None else self.v2v_levels(strength)
        last = len(sigmas) - 1 if exit_step is None else exit_step
        if not 0 <= last < len(sigmas):
            raise ValueError(f"exit step {exit_step} outside the {len(sigmas)} denoising steps")
        peek = CachedAttention(self.caches, self.rope, write=False)
        x = self.noise()
        if source is not None:  # flow matching's x_s = (1 - s) x0 + s eps, with the source as x0
            x = (1 - _frames(sigmas[0])) * source.to(x) + _frames(sigmas[0]) * x
        for i in range(last + 1):
            sigma, on = sigmas[i], grad and i == last
            v = yield ModelCall(x, self._sigma(sigma), text, peek, on)
            with torch.set_grad_enabled(on):
                x0 = x - _frames(sigma) * v
            if i < last:
                x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * self.noise()
        # the context pass: the clean chunk's K/V go into the caches
        yield ModelCall(x0.detach(), self._sigma(0.0), text, CachedAttention(self.caches, self.rope, write=True), False)
        self.frames.append(x0.detach())
        return x0

    @torch.no_grad()
    def generate(self, text: torch.Tensor | Callable[[int], torch.Tensor], chunks: int,
                 on_chunk: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """``chunks`` more chunks; ``text`` may be a function of the chunk index (prompt switches are
        then the caller's: see ``switch``). Returns every frame emitted so far [b, F, C, H, W]."""
        for _ in range(chunks):
            index = len(self.frames)
            out = self.next_chunk(text(index) if callable(text) else text)
            if on_chunk is not None:
                on_chunk(index, out)
        return self.video()

    def video(self) -> torch.Tensor:
        return torch.cat(self.frames, dim=1)

    @torch.no_grad()
    def switch(self, text: torch.Tensor, mode: str) -> None:
        """What happens to the cache at a prompt switch (LongLive 2.2): ``keep`` it (old-prompt K/V),
        ``clear`` it (the next chunk starts from nothing; stream positions go on), or ``recache``: run
        the kept frames again, clean, under the new prompt, and overwrite their K/V, sinks included
        (never left zeroed: LongLive issue #20)."""
        if mode == "keep" or not self.frames:
            return
        if mode == "clear":
            next_pos = self.caches[0].next_pos
            self.caches = new_caches(self.cfg, self.policy, self.batch, self.dtype, self.device)
            for cache in self.caches:
                cache.next_pos = next_pos
            return
        if mode != "recache":
            raise ValueError(f"switch mode must be keep, clear or recache, got {mode!r}")
        first = self.caches[0]
        n = first.capacity if first.ring else first.length
        slots = torch.nonzero(first.pos[:n] >= 0).flatten()
        slots = slots[torch.argsort(first.pos[slots])]
        kept_frames = torch.unique(torch.div(first.pos[slots], self.cfg.tokens_per_frame, rounding_mode="floor"))  # the same in every layer
        frames = self.video()[:, kept_frames]
        self.model(frames, torch.zeros(frames.shape[:2], dtype=self.dtype, device=self.device), text, _Recache(self, slots))
