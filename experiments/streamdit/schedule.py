"""Buffered flow matching and the streaming queue (brief 2.1-2.3): the part of StreamDiT that is
pure bookkeeping, written once and tested against the ordinary sampler.

Convention (brief 2.1): time 1 is data, 0 is noise. The buffer is in video-time order: the head
(index 0) holds the earliest, cleanest frames and is emitted; fresh noise enters at the tail.

    part = Partition(K=0, N=4, c=2, s=2)                       # B = K + N c = 8 frames, T = N s = 8 levels
    tau = training_times(part, batch=16, rng)                  # [16, B]: chunk i in its band (Eq. 8)
    xt, target = make_xt(x1, x0, tau), velocity_target(x1, x0)  # Eq. 5 and the flow-matching target
    queue = StreamQueue.start(velocity, part, x0)              # levels filled from a uniform trajectory
    frames = queue.step(velocity)                              # one forward pass; a chunk every s steps

Levels are integers (a frame at level l has tau = (l / T)^k) so that a frame is emitted at exactly
tau = 1, never at an accumulated 0.9999. The power k is Eq. 9's gamma(t) = t^k (k = 1: the paper's
linear schedule; k > 1 spends more levels, and more training, near the noise, where a frame's
layout is decided); training and sampling must use the same k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [b, B, ...], tau [b, B]) -> like x


@dataclass(frozen=True)
class Partition:
    """K clean reference frames + N chunks of c frames; s micro-steps per chunk position."""

    K: int
    N: int
    c: int
    s: int

    def __post_init__(self):
        if min(self.N, self.c, self.s) < 1 or self.K < 0:
            raise ValueError(f"partition needs N, c, s >= 1 and K >= 0 (got K={self.K}, N={self.N}, c={self.c}, s={self.s})")

    @property
    def B(self) -> int:
        return self.K + self.N * self.c

    @property
    def T(self) -> int:
        """Levels (forward passes) a frame goes through from noise to data."""
        return self.N * self.s

    @classmethod
    def for_buffer(cls, B: int, c: int, s: int = 1, K: int = 0) -> Partition:
        if c < 1 or (B - K) % c:
            raise ValueError(f"chunk size {c} must divide the {B - K} non-reference frames of a {B}-frame buffer")
        return cls(K, (B - K) // c, c, s)


def training_times(part: Partition, batch: int, generator: torch.Generator | None = None,
                   gamma: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Per-frame times [batch, B] for training (Eq. 8, 9): chunk j (0 = head) draws one time in the
    band [(N-1-j)/N, (N-j)/N) (the head is cleanest), shared by its c frames, mapped through
    ``gamma`` (default: identity); reference frames are clean (tau = 1). N = 1: t ~ U[0, 1]."""
    u = torch.rand(batch, part.N, generator=generator, dtype=torch.float64)
    band = torch.arange(part.N - 1, -1, -1, dtype=torch.float64)  # head chunk: highest band
    t = (band + u) / part.N
    if gamma is not None:
        t = gamma(t)
    tau = torch.cat([torch.ones(batch, part.K, dtype=torch.float64), t.repeat_interleave(part.c, dim=1)], dim=1)
    return tau.float()


def _frames(tau: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return tau.reshape(*tau.shape, *([1] * (x.dim() - tau.dim())))


def make_xt(x1: torch.Tensor, x0: torch.Tensor, tau: torch.Tensor, sigma_min: float = 0.0) -> torch.Tensor:
    """Eq. 5: X_tau = tau X1 + (1 - (1 - sigma_min) tau) X0, per frame (x: [b, B, ...], tau: [b, B]);
    one noise tensor X0 for the whole buffer."""
    t = _frames(tau, x1).to(x1.dtype)
    return t * x1 + (1 - (1 - sigma_min) * t) * x0


def velocity_target(x1: torch.Tensor, x0: torch.Tensor, sigma_min: float = 0.0) -> torch.Tensor:
    """The flow-matching target X1 - (1 - sigma_min) X0 (independent of tau)."""
    return x1 - (1 - sigma_min) * x0


def level_time(level, T: int, power: float = 1.0):
    """tau of a frame at ``level`` of T (Eq. 9 with gamma(t) = t^power)."""
    return (level / T) ** power


def euler_sample(velocity: Velocity, x0: torch.Tensor, steps: int, trajectory: list | None = None, power: float = 1.0) -> torch.Tensor:
    """The ordinary (uniform, non-streaming) sampler: every frame at the same time, ``steps`` Euler
    steps from 0 to 1. ``trajectory`` (if given) receives the state at every level 0..steps."""
    x = x0
    b, B = x0.shape[:2]
    for level in range(steps):
        if trajectory is not None:
            trajectory.append(x)
        now = torch.tensor(float(level), dtype=x0.dtype)  # the same arithmetic as the queue's, so N = 1 matches bit for bit
        tau = level_time(now, steps, power).expand(b, B).to(x0.device)
        dt = (level_time(now + 1, steps, power) - level_time(now, steps, power)).to(x0.device)
        x = x + velocity(x, tau) * dt
    if trajectory is not None:
        trajectory.append(x)
    return x


class StreamQueue:
    """The moving buffer (brief 2.2): every ``step`` is one forward pass that advances each chunk by
    one level (dtau = 1/T); after s steps the head chunk is at level T (tau = 1 exactly), is emitted,
    the buffer shifts by c frames and c pure-noise frames enter at the tail. The K reference frames
    are the last K emitted frames, held clean. Shapes never change (a compiled step stays valid)."""

    def __init__(self, part: Partition, x: torch.Tensor, levels: torch.Tensor, noise: Callable[[tuple], torch.Tensor], power: float = 1.0):
        self.part, self.x, self.levels, self.noise = part, x, levels, noise  # levels: [B] ints, references at T
        self.power = power
        self.emitted = 0  # frames emitted so far

    @classmethod
    def start(cls, velocity: Velocity, part: Partition, x0: torch.Tensor, noise=None, references: torch.Tensor | None = None,
              power: float = 1.0) -> StreamQueue:
        """Fill the queue from a uniform trajectory (brief 2.6): chunk j (0 = head) starts at level
        (N-1-j) s, taken from the uniform sampler's state at that level; a chunk at level 0 is the
        noise itself. ``x0``: [b, B, ...] noise; references (K frames) default to that trajectory's end."""
        T, s, K, c = part.T, part.s, part.K, part.c
        trajectory: list[torch.Tensor] = []
        top = (part.N - 1) * s
        if top > 0 or K:
            euler_sample(velocity, x0, T, trajectory, power)
        x = x0.clone()
        levels = torch.empty(part.B, dtype=torch.long)
        levels[:K] = T
        if K:
            x[:, :K] = references if references is not None else trajectory[T][:, :K]
        for j in range(part.N):
            level = (part.N - 1 - j) * s
            frames = slice(K + j * c, K + (j + 1) * c)
            levels[frames] = level
            if level:
                x[:, frames] = trajectory[level][:, frames]
        if noise is None:
            generator = torch.Generator().manual_seed(0)
            noise = lambda shape: torch.randn(shape, generator=generator, dtype=x0.dtype)
        return cls(part, x, levels, noise, power)

    @property
    def tau(self) -> torch.Tensor:
        """Per-frame times [b, B]."""
        return level_time(self.levels.to(self.x.dtype), self.part.T, self.power).to(self.x.device).expand(self.x.shape[0], -1)

    @torch.no_grad()
    def step(self, velocity: Velocity) -> torch.Tensor | None:
        """One forward pass; returns the emitted chunk [b, c, ...] when the head reaches tau = 1."""
        part = self.part
        moving = self.levels < part.T
        now = self.levels.to(self.x.dtype)
        dtau = (level_time(now + moving, part.T, self.power) - level_time(now, part.T, self.power)).to(self.x.device)  # levels stay on the CPU
        v = velocity(self.x, self.tau)
        self.x = self.x + v * _frames(dtau.expand(self.x.shape[0], -1), self.x)
        self.levels = self.levels + moving.long()
        head = slice(part.K, part.K + part.c)
        if not bool((self.levels[head] == part.T).all()):
            return None
        out = self.x[:, head].clone()
        rest = self.x[:, part.K + part.c :]
        fresh = self.noise((self.x.shape[0], part.c, *self.x.shape[2:]))
        references = torch.cat([self.x[:, : part.K], out], dim=1)[:, -part.K :] if part.K else self.x[:, :0]
        self.x = torch.cat([references, rest, fresh], dim=1)
        self.levels = torch.cat([self.levels[: part.K], self.levels[part.K + part.c :], torch.zeros(part.c, dtype=torch.long)])
        self.emitted += part.c
        return out
