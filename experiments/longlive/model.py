"""The host: a small causal video DiT that streams chunk by chunk through ``shared.streaming``.

Self Forcing's architecture at CPU scale (brief ``autoregressive_video.md`` 1.1 and 6): frames are
cut into patches (16 x 16 px, patch 4 -> 16 tokens per frame); every frame carries its own noise
level sigma (flow matching: x = (1 - sigma) x0 + sigma eps, the network predicts v = eps - x0),
embedded and turned into per-frame adaLN shift/scale/gate vectors (as in StreamDiT); self-attention
uses a 3D RoPE over (time, row, column) bands on *pre-RoPE* cached keys, so a cache policy that moves
a frame in time re-rotates it exactly; cross-attention reads the word prompt.

Who a token attends to is decided outside the model, by an ``Attention``:

- ``DenseAttention(positions, mask)``: one pass over a whole token sequence under a dense boolean
  mask (bidirectional teacher, diffusion forcing's block-causal mask, teacher forcing's clean+noisy
  sequence, and the tests' recomputation reference);
- ``CachedAttention(caches, rope, write)``: one chunk against per-layer ``KVCache``s: denoising
  steps ``peek`` (kept frames + the chunk, nothing written); the clean context pass ``write``s.

    model = CausalVideoDiT(HostConfig())
    v = model(x [b, F, C, H, W], sigma [b, F], text [b, L], attention)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from shared.procedural import VOCAB
from shared.streaming import KVCache, Rope3D
from shared.streaming.policies import Policy


@dataclass(frozen=True)
class HostConfig:
    channels: int = 3
    size: int = 16           # square frames, pixels
    patch: int = 4
    chunk: int = 2           # frames generated together (full attention inside a chunk)
    dim: int = 64
    depth: int = 4
    heads: int = 4
    rope_bands: tuple[int, int, int] = (8, 4, 4)  # head-dim split over time / rows / columns
    text_len: int = 6        # up to three objects: colour + shape words
    local_conv: bool = True  # a 3x3 depthwise convolution per frame inside the FFN (frame-local: keeps causality)

    @property
    def side(self) -> int:
        return self.size // self.patch

    @property
    def tokens_per_frame(self) -> int:
        return self.side * self.side

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def check(self) -> None:
        if self.size % self.patch:
            raise ValueError(f"frame size {self.size} is not divisible by the patch {self.patch}")
        if self.dim % self.heads or sum(self.rope_bands) != self.dim // self.heads:
            raise ValueError(f"dim {self.dim} / {self.heads} heads must equal the RoPE bands {self.rope_bands} summed")

    def rope(self) -> Rope3D:
        return Rope3D(self.head_dim, self.tokens_per_frame, self.side, self.rope_bands)


def sigma_embedding(sigma: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels in [0, 1] (scaled by 1000, as Wan's timesteps): [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    args = 1000 * sigma.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Attention:
    """Decides which keys each query sees; called by every block with its pre-RoPE q, k, v."""

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DenseAttention(Attention):
    """A whole token sequence at once: token i sits at RoPE position ``positions[i]`` and sees the
    keys ``mask[i]`` allows (None: all)."""

    def __init__(self, rope: Rope3D, positions: torch.Tensor, mask: torch.Tensor | None = None):
        self.rope, self.positions, self.mask = rope, positions, mask

    def __call__(self, layer, q, k, v):
        q, k = self.rope.apply(q, self.positions), self.rope.apply(k, self.positions)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)


class CachedAttention(Attention):
    """One chunk against per-layer caches. ``write=False``: a denoising step (the chunk's keys are
    seen, not stored); ``write=True``: the context pass, which stores them (and lets the policy evict).
    RoPE positions come from the policy (stream positions, or Deep Forcing's re-aligned sink).

    Scoring policies (Deep Forcing's participative compression) get, at each context pass, the
    attention mass the chunk's clean queries gave every cached slot: the "recent queries" whose
    attention decides which frames the next chunk keeps. Deep Forcing scores with the current
    chunk's first-step queries plus one frame of the previous context pass; here the previous
    context pass's queries (the same idea one step earlier, no extra pass)."""

    def __init__(self, caches: list[KVCache], rope: Rope3D, write: bool):
        self.caches, self.rope, self.write = caches, rope, write

    def __call__(self, layer, q, k, v):
        cache = self.caches[layer]
        view = cache.update(k, v) if self.write else cache.peek(k, v)
        kv_rope, q_rope = rope_positions(cache.policy, view.kv_pos, view.q_pos)
        q, keys = self.rope.apply(q, q_rope), self.rope.apply(view.k, kv_rope)
        if self.write and getattr(cache.policy, "needs_scores", False):
            probs = torch.softmax((q @ keys.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
            cache.score[: len(view.kv_pos)] = probs.sum(dim=(0, 1, 2)).to(cache.score.dtype)  # replaced, not accumulated: recent queries only
            return probs @ view.v
        return F.scaled_dot_product_attention(q, keys, view.v)  # the view is exactly what the chunk sees


def rope_positions(policy: Policy, kv_pos: torch.Tensor, q_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's RoPE positions for a chunk's keys and queries (keys sorted in stream order)."""
    from shared.streaming.policies import SlotMeta

    frame = torch.div(kv_pos, getattr(policy, "tokens_per_frame", 1), rounding_mode="floor")
    meta = SlotMeta(kv_pos, frame, policy.pinned(kv_pos, frame), torch.zeros(len(kv_pos)))
    return policy.rope_positions(kv_pos, q_pos, meta)


def new_caches(cfg: HostConfig, policy: Policy, batch: int, dtype=torch.float32, device="cpu") -> list[KVCache]:
    """One cache per block, sized for one chunk arriving at a time."""
    return [KVCache(policy, batch=batch, kv_heads=cfg.heads, head_dim=cfg.head_dim, max_chunk=cfg.chunk * cfg.tokens_per_frame, dtype=dtype, device=device)
            for _ in range(cfg.depth)]


class Block(nn.Module):
    def __init__(self, cfg: HostConfig):
        super().__init__()
        d = cfg.dim
        self.heads, self.side = cfg.heads, cfg.side
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm_cross = nn.LayerNorm(d, eps=1e-6)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.up = nn.Linear(d, 4 * d)
        self.conv = nn.Conv2d(4 * d, 4 * d, 3, padding=1, groups=4 * d) if cfg.local_conv else None
        self.down = nn.Linear(4 * d, d)
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight)  # gates start at zero: the block starts as the identity (DiT)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, cond, text, attention: Attention, layer: int):
        """x: [b, F*T, d] frame-major tokens; cond: [b, F, d] per-frame conditioning; text: [b, L, d]."""
        b, n, _ = x.shape
        frames = cond.shape[1]
        mod = self.ada(F.silu(cond)).repeat_interleave(n // frames, dim=1)  # each frame's tokens share its vectors
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        x = x + gate1 * self.proj(rearrange(attention(layer, q, k, v), "b h n d -> b n (h d)"))
        q = rearrange(self.cross_q(self.norm_cross(x)), "b n (h d) -> b h n d", h=self.heads)
        tk, tv = rearrange(self.cross_kv(text), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        x = x + self.cross_out(rearrange(F.scaled_dot_product_attention(q, tk, tv), "b h n d -> b n (h d)"))
        h = F.gelu(self.up(self.norm2(x) * (1 + scale2) + shift2), approximate="tanh")
        if self.conv is not None:
            grid = rearrange(h, "b (f y x) c -> (b f) c y x", y=self.side, x=self.side)
            h = h + rearrange(self.conv(grid), "(b f) c y x -> b (f y x) c", b=b)
        return x + gate2 * self.down(h)


class CausalVideoDiT(nn.Module):
    def __init__(self, cfg: HostConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch
        self.patch_in = nn.Linear(cfg.channels * p * p, d)
        self.sigma_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.words = nn.Embedding(len(VOCAB), d)
        self.word_pos = nn.Parameter(torch.randn(cfg.text_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.patch_out = nn.Linear(d, cfg.channels * p * p)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)  # an untrained model predicts zero velocity
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, attention: Attention) -> torch.Tensor:
        """x: [b, F, C, H, W]; sigma: [b, F] per-frame noise levels; text: [b, L] word ids -> v like x.
        In four parts, so that a pipeline over ranks (``pipeline.py``) runs a slice of the blocks each."""
        h = self.embed(x)
        cond, words = self.conditioning(sigma, text, x.dtype)
        h = self.run_blocks(h, cond, words, attention, range(len(self.blocks)))
        return self.head(h, cond)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if x.dim() != 5 or tuple(x.shape[2:]) != (cfg.channels, cfg.size, cfg.size):
            raise ValueError(f"frames {list(x.shape)} do not match the model's [b, F, {cfg.channels}, {cfg.size}, {cfg.size}]")
        return self.patch_in(rearrange(x, "b f c (y p) (x q) -> b (f y x) (c p q)", p=cfg.patch, q=cfg.patch))

    def conditioning(self, sigma: torch.Tensor, text: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame conditioning [b, F, d] from the noise levels, and the prompt's word vectors [b, L, d]."""
        return self.sigma_mlp(sigma_embedding(sigma, 256).to(dtype)), self.words(text) + self.word_pos[: text.shape[1]]

    def run_blocks(self, h: torch.Tensor, cond: torch.Tensor, words: torch.Tensor, attention: Attention, layers: range) -> torch.Tensor:
        for i in layers:
            h = self.blocks[i](h, cond, words, attention, i)
        return h

    def head(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cfg, p = self.cfg, self.cfg.patch
        shift, scale = self.ada_out(F.silu(cond)).repeat_interleave(cfg.tokens_per_frame, dim=1).chunk(2, dim=-1)
        h = self.patch_out(self.norm_out(h) * (1 + scale) + shift)
        return rearrange(h, "b (f y x) (c p q) -> b f c (y p) (x q)", f=cond.shape[1], y=cfg.side, x=cfg.side, p=p, q=p)

    def positions(self, frames: int, first_frame: int = 0) -> torch.Tensor:
        """Token positions of ``frames`` consecutive frames from ``first_frame`` (frame-major)."""
        tpf = self.cfg.tokens_per_frame
        return torch.arange(first_frame * tpf, (first_frame + frames) * tpf)
