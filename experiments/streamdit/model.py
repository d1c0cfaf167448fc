"""The time-varying adaLN DiT over a buffer of video frames (brief 2.4).

Tokens: each frame is cut into ``patch x patch`` pixel (or latent) patches, giving a [F, H, W]
token grid; a factorised position embedding over *buffer* positions (never stream positions, so
it does not grow with the stream). Every frame carries its own time tau_f: a sinusoidal embedding
and an MLP give one conditioning vector per frame, and each block's adaLN (shift, scale, gate for
attention and FFN) is computed per frame and broadcast to that frame's tokens. With all tau equal
this is an ordinary adaLN DiT.

Block: modulated norm -> 3D window self-attention (shifted by half a window on odd layers) ->
gated residual; cross-attention to the conditioning tokens (a class or a short text); modulated
norm -> FFN -> gated residual. Gates and the output layer start at zero (DiT), so an untrained
model predicts zero velocity.

    cfg = DiTConfig(channels=3, frames=16, height=32, width=32, patch=2, dim=128, depth=4, heads=4, window=(4, 8, 8))
    model = StreamDiT(cfg)
    v = model(x [b, F, C, H, W], tau [b, F], text [b, L] token ids)      # -> [b, F, C, H, W]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .windows import window_attention


@dataclass(frozen=True)
class DiTConfig:
    channels: int = 3
    frames: int = 16          # buffer length B
    height: int = 32
    width: int = 32
    patch: int = 2
    dim: int = 128
    depth: int = 4
    heads: int = 4
    ffn: int | None = None    # hidden width; None: 4 dim (GELU); with swiglu: the gate width
    swiglu: bool = False
    window: tuple[int, int, int] = (4, 8, 8)   # in tokens (frames, rows, columns)
    vocab: int = 64           # conditioning tokens; id 0 is the null token (classifier-free guidance)
    text_len: int = 8
    adaln_single: bool = False  # one shared adaLN MLP + per-block offsets (PixArt-style) instead of one per block
    local_conv: int = 0       # a depthwise convolution inside the FFN: 0 none, 2 (3x3 per frame) or 3 (3x3x3 over the buffer); not in the paper

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.frames, self.height // self.patch, self.width // self.patch)

    def check(self) -> None:
        if self.height % self.patch or self.width % self.patch:
            raise ValueError(f"frame size {self.height}x{self.width} is not divisible by the patch size {self.patch}")
        for name, n, w in zip(("frames", "token rows", "token columns"), self.grid, self.window):
            if w < 1 or n % w:
                raise ValueError(f"window {self.window} does not divide the token grid {self.grid} ({name}: {n} by {w})")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by {self.heads} heads")

    @property
    def shift(self) -> tuple[int, int, int]:
        return tuple(w // 2 for w in self.window)


def timestep_embedding(tau: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of times in [0, 1] (scaled by 1000, as DiT's integer steps): [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=tau.device) / half)
    args = 1000 * tau.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, swiglu: bool, local_conv: int = 0):
        super().__init__()
        self.swiglu = swiglu
        self.up = nn.Linear(dim, 2 * hidden if swiglu else hidden)
        self.down = nn.Linear(hidden, dim)
        # optional: a depthwise convolution over the token grid (Mix-FFN style locality): 3x3 per
        # frame, or 3x3x3 across neighbouring frames too
        if local_conv not in (0, 2, 3):
            raise ValueError(f"local_conv must be 0, 2 or 3 (got {local_conv})")
        self.conv = None if not local_conv else (nn.Conv2d if local_conv == 2 else nn.Conv3d)(hidden, hidden, 3, padding=1, groups=hidden)

    def forward(self, x, grid: tuple[int, int, int] | None = None, frame_local: bool = False):
        if self.swiglu:
            a, b = self.up(x).chunk(2, dim=-1)
            h = F.silu(a) * b
        else:
            h = F.gelu(self.up(x), approximate="tanh")
        if isinstance(self.conv, nn.Conv2d) or (self.conv is not None and frame_local):
            _, H, W = grid  # memory frames never mix: each is convolved alone
            frames = rearrange(h, "b (f h w) c -> (b f) c h w", h=H, w=W)
            conv = self.conv if isinstance(self.conv, nn.Conv2d) else (lambda z: self.conv(z[:, :, None])[:, :, 0])
            h = h + rearrange(conv(frames), "(b f) c h w -> b (f h w) c", b=x.shape[0])
        elif self.conv is not None:
            Fn, H, W = grid
            volume = rearrange(h, "b (f h w) c -> b c f h w", f=Fn, h=H, w=W)
            h = h + rearrange(self.conv(volume), "b c f h w -> b (f h w) c")
        return self.down(h)


class Block(nn.Module):
    def __init__(self, cfg: DiTConfig, shifted: bool):
        super().__init__()
        d = cfg.dim
        self.cfg, self.heads = cfg, cfg.heads
        self.shift = cfg.shift if shifted else (0, 0, 0)
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm_cross = nn.LayerNorm(d, eps=1e-6)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ffn = FeedForward(d, cfg.ffn or 4 * d, cfg.swiglu, cfg.local_conv)
        if cfg.adaln_single:
            self.offset = nn.Parameter(torch.zeros(6, d))
        else:
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def modulation(self, cond: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
        """[b, F, 6, d] per-frame (shift1, scale1, gate1, shift2, scale2, gate2)."""
        b, Fn, d = cond.shape
        if shared is not None:
            return shared.view(b, Fn, 6, d) + self.offset
        return self.ada(F.silu(cond)).view(b, Fn, 6, d)

    def forward(self, x, mod, text, memory=None, frame_local: bool = False):
        """x: [b, n, d] tokens; mod: [b, F, 6, d]; text: [b, L, d]; memory: this layer's (k, v)
        [b, heads, M, d] of cached clean frames that every window also attends to (or None).
        ``frame_local``: the memory path, each frame attends only to itself (so its keys and values
        can be computed once, when it is emitted, and cached); returns (x, (k, v)) then."""
        n = x.shape[1]
        Fn = mod.shape[1]
        per_token = mod.repeat_interleave(n // Fn, dim=1)  # [b, F*H*W, 6, d]: each frame's tokens share its row
        shift1, scale1, gate1, shift2, scale2, gate2 = per_token.unbind(2)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        _, H, W = self.cfg.grid
        if frame_local:
            attn = window_attention(q, k, v, (Fn, H, W), (1, H, W))
        else:
            extra_k, extra_v = memory if memory is not None else (None, None)
            attn = window_attention(q, k, v, self.cfg.grid, self.cfg.window, self.shift, extra_k, extra_v)
        x = x + gate1 * self.proj(rearrange(attn, "b h n d -> b n (h d)"))
        q = rearrange(self.cross_q(self.norm_cross(x)), "b n (h d) -> b h n d", h=self.heads)
        tk, tv = rearrange(self.cross_kv(text), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        x = x + self.cross_out(rearrange(F.scaled_dot_product_attention(q, tk, tv), "b h n d -> b n (h d)"))
        h = self.norm2(x) * (1 + scale2) + shift2
        x = x + gate2 * self.ffn(h, (Fn, H, W), frame_local)
        return (x, (k, v)) if frame_local else x


class StreamDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch
        Fn, H, W = cfg.grid
        self.patch_in = nn.Linear(cfg.channels * p * p, d)
        self.pos_f = nn.Parameter(torch.randn(Fn, d) * 0.02)  # buffer-relative positions
        self.pos_h = nn.Parameter(torch.randn(H, d) * 0.02)
        self.pos_w = nn.Parameter(torch.randn(W, d) * 0.02)
        self.pos_memory = nn.Parameter(torch.randn(d) * 0.02)  # memory frames: a set, not a buffer position
        self.time = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.text = nn.Embedding(cfg.vocab, d)
        self.text_pos = nn.Parameter(torch.randn(cfg.text_len, d) * 0.02)
        self.shared_ada = nn.Linear(d, 6 * d) if cfg.adaln_single else None
        if self.shared_ada is not None:
            nn.init.zeros_(self.shared_ada.weight)
            nn.init.zeros_(self.shared_ada.bias)
        self.blocks = nn.ModuleList(Block(cfg, shifted=i % 2 == 1) for i in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.patch_out = nn.Linear(d, cfg.channels * p * p)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_frames(self, x: torch.Tensor, frames: int | None) -> None:
        cfg = self.cfg
        want = (cfg.frames if frames is None else x.shape[1], cfg.channels, cfg.height, cfg.width)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            what = "buffer" if frames is None else "memory frames"
            raise ValueError(f"input {list(x.shape)} does not match the model's {what} [b, {want[0]}, {cfg.channels}, {cfg.height}, {cfg.width}]")

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patches plus the spatial position embedding: [b, F*H*W, d]."""
        p = self.cfg.patch
        tokens = rearrange(x, "b f c (h p) (w q) -> b (f h w) (c p q)", p=p, q=p)
        spatial = (self.pos_h[:, None] + self.pos_w[None, :]).reshape(-1, self.cfg.dim)
        return self.patch_in(tokens) + spatial.repeat(x.shape[1], 1)

    def frame_positions(self) -> torch.Tensor:
        """[F*H*W, d]: each token's buffer-frame position embedding (tokens are frame-major: all of
        frame 0's H*W tokens, then frame 1's, ...)."""
        _, H, W = self.cfg.grid
        return self.pos_f.repeat_interleave(H * W, dim=0)

    def _conditioning(self, tau: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        cond = self.time(timestep_embedding(tau, 256).to(dtype))  # [b, F, d]: one vector per frame
        return cond, (self.shared_ada(F.silu(cond)) if self.shared_ada is not None else None)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return self.text(text) + self.text_pos[: text.shape[1]]

    def memory_kv(self, frames: torch.Tensor, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer self-attention keys and values of clean frames [b, M, C, H, W] (tau = 1),
        each frame attending only to itself: the frame-sink cache's entries (an extension beyond
        the paper, brief 11). A frame's entries depend only on that frame and the text, so a stream
        computes them once per emitted frame and a cache policy decides which frames stay."""
        self._check_frames(frames, frames.shape[1])
        b, M = frames.shape[:2]
        h = self._tokens(frames) + self.pos_memory
        cond, shared = self._conditioning(torch.ones(b, M, device=frames.device), frames.dtype)
        txt = self.encode_text(text)
        out = []
        for block in self.blocks:
            h, kv = block(h, block.modulation(cond, shared), txt, frame_local=True)
            out.append(kv)
        return out

    def forward(self, x: torch.Tensor, tau: torch.Tensor, text: torch.Tensor,
                memory: torch.Tensor | list | None = None) -> torch.Tensor:
        """x: [b, F, C, H, W] buffer; tau: [b, F]; text: [b, L] ids; memory: clean frames
        [b, M, C, H, W] or their ``memory_kv`` (or None: the paper's model)."""
        cfg = self.cfg
        self._check_frames(x, None)
        if isinstance(memory, torch.Tensor):
            memory = self.memory_kv(memory, text) if memory.shape[1] else None
        Fn, H, W = cfg.grid
        h = self._tokens(x) + self.frame_positions()
        cond, shared = self._conditioning(tau, x.dtype)
        txt = self.encode_text(text)
        for i, block in enumerate(self.blocks):
            h = block(h, block.modulation(cond, shared), txt, memory[i] if memory else None)
        shift, scale = self.ada_out(F.silu(cond)).repeat_interleave(H * W, dim=1).chunk(2, dim=-1)
        h = self.patch_out(self.norm_out(h) * (1 + scale) + shift)
        p = cfg.patch
        return rearrange(h, "b (f h w) (c p q) -> b f c (h p) (w q)", f=Fn, h=H, w=W, p=p, q=p)


def token_path_parameters(cfg: DiTConfig) -> int:
    """Parameters of the per-token matrices (self-attention 4d^2, cross-attention 4d^2, FFN), the
    brief's definition of the "4B" stand-in's size (adaLN, embeddings and biases excluded)."""
    d = cfg.dim
    hidden = cfg.ffn or 4 * d
    ffn = 3 * d * hidden if cfg.swiglu else 2 * d * hidden
    return cfg.depth * (8 * d * d + ffn)
