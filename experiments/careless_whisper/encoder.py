"""Whisper's encoder made causal: a block-causal mask and a per-layer K/V cache (brief 2.2, 2.4).

transformers' ``WhisperEncoder.forward`` insists on 3000 mel frames and ignores attention masks, so
this is our own loop over its modules (conv1, conv2, embed_positions, layers, layer_norm); the
attention itself is the shared core's ``attend`` with ``BlockCausal``.

Time base: one encoder frame = 2 mel frames = 20 ms. With chunks of ``g`` frames and ``E`` extra
first blocks, frame ``i`` sees frame ``j`` iff ``floor(j/g) <= max(floor(i/g), E)``: a first block
of ``(E+1) g`` frames (600 ms in every released configuration), then chunks.

The convolutions are not masked: encoder frame ``i`` reads mel frames ``2i-2 .. 2i+2`` (20 ms of
look-ahead), so frames are only computed once the mel frame after them exists, identically in
training (``encode_prefix``) and streaming (``IncrementalEncoder``); the two are tested equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from shared.streaming.attention import attend
from shared.streaming.masks import BlockCausal

FRAME_SECONDS = 0.02
MEL_PER_FRAME = 2


@dataclass(frozen=True)
class Chunking:
    """``chunk_ms`` chunks after a first block of ``first_ms`` (default: 600 ms as in every released
    configuration, or one chunk when chunks are longer; the 1000 ms setting is not documented)."""

    chunk_ms: int
    first_ms: int | None = None

    def __post_init__(self):
        if self.first_ms is None:
            object.__setattr__(self, "first_ms", max(600, self.chunk_ms))
        if self.chunk_ms % 20 or self.chunk_ms < 20:
            raise ValueError(f"chunk_ms must be a positive multiple of 20 ms (one encoder frame), got {self.chunk_ms}")
        if self.first_ms < self.chunk_ms:
            raise ValueError(f"the first block ({self.first_ms} ms) must be at least one chunk ({self.chunk_ms} ms)")

    @property
    def g(self) -> int:
        return self.chunk_ms // 20

    @property
    def extra_blocks(self) -> int:
        """E: the first block is (E + 1) chunks (rounded down: 600 ms at 40 ms -> E = 14)."""
        return max(0, self.first_ms // self.chunk_ms - 1)

    @property
    def first_frames(self) -> int:
        return (self.extra_blocks + 1) * self.g

    @property
    def mask(self) -> BlockCausal:
        return BlockCausal(self.g, self.first_frames)

    def frames_after(self, step: int) -> int:
        """Encoder frames available after chunk step ``step`` (step 0 = the first block)."""
        return self.first_frames + step * self.g


def complete_frames(mel_frames: int) -> int:
    """Encoder frames whose conv receptive field lies inside ``mel_frames`` mel frames."""
    return max(0, (mel_frames - 1) // MEL_PER_FRAME)


def embed(encoder, mel: torch.Tensor, n_frames: int, offset: int = 0) -> torch.Tensor:
    """conv1 -> GELU -> conv2 -> GELU on the mel, frames ``[offset, n_frames)`` plus their positions."""
    if n_frames > complete_frames(mel.shape[-1]):
        raise ValueError(f"{n_frames} encoder frames need {2 * n_frames + 1} mel frames, got {mel.shape[-1]}")
    if n_frames > encoder.embed_positions.num_embeddings:
        raise ValueError(f"{n_frames} encoder frames exceed Whisper's {encoder.embed_positions.num_embeddings} positions (30 s)")
    # Only what frames [offset, n) depend on: conv1 outputs j in [2*offset - 1, 2n - 1], which read
    # mel frames [2*offset - 2, 2n]. Both convs run unpadded on that window; the zero padding of the
    # full-length convs is added back only at the true start of the utterance.
    j_lo = max(0, 2 * offset - 1)
    window = mel[..., max(0, j_lo - 1) : 2 * n_frames + 1]
    if j_lo == 0:
        window = F.pad(window, (1, 0))
    x = F.gelu(F.conv1d(window, encoder.conv1.weight, encoder.conv1.bias))
    if offset == 0:
        x = F.pad(x, (1, 0))  # conv2's left padding (conv1 output -1)
    x = F.gelu(F.conv1d(x, encoder.conv2.weight, encoder.conv2.bias, stride=2)).transpose(1, 2)
    return x + encoder.embed_positions.weight[offset:n_frames]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def _layer(layer, x: torch.Tensor, mask, q_pos: torch.Tensor, kv_pos: torch.Tensor, past: tuple | None):
    """One pre-norm encoder layer on new frames ``x``; attention also sees ``past`` (k, v). Returns (x, (k, v))."""
    attn = layer.self_attn
    h = layer.self_attn_layer_norm(x)
    q, k, v = (_heads(p(h), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    backend = "sdpa"  # FlexAttention has no backward on CPU; SDPA with the dense block mask serves both
    o = attend(q, k, v, mask, q_pos=q_pos, kv_pos=kv_pos, scale=attn.head_dim**-0.5, backend=backend)
    x = x + attn.out_proj(o.transpose(1, 2).reshape(x.shape))
    h = layer.final_layer_norm(x)
    x = x + layer.fc2(F.gelu(layer.fc1(h)))
    return x, (k, v)


def encode_prefix(encoder, mel: torch.Tensor, n_frames: int, chunking: Chunking | None) -> torch.Tensor:
    """The first ``n_frames`` encoder outputs under the block-causal mask (``None``: bidirectional,
    which on 1500 frames is exactly transformers' encoder). Differentiable: the training path."""
    x = embed(encoder, mel, n_frames)
    pos = torch.arange(n_frames, device=x.device)
    mask = None if chunking is None else chunking.mask
    for layer in encoder.layers:
        x, _ = _layer(layer, x, mask, pos, pos, None)
    return encoder.layer_norm(x)


@dataclass
class IncrementalEncoder:
    """Streaming encoder: each call encodes only the frames that became available; earlier frames'
    keys and values are cached per layer, so a chunk costs its own frames, not the prefix."""

    encoder: object
    chunking: Chunking
    done: int = 0
    cache: list = field(default_factory=list)

    @torch.no_grad()
    def step(self, mel: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Encoder outputs for frames ``[done, n_frames)`` given the mel so far (at least ``2 n + 1`` frames)."""
        if n_frames <= self.done:
            return mel.new_zeros(mel.shape[0], 0, self.encoder.config.d_model)
        x = embed(self.encoder, mel, n_frames, offset=self.done)
        q_pos = torch.arange(self.done, n_frames, device=x.device)
        kv_pos = torch.arange(n_frames, device=x.device)
        new_cache = []
        for i, layer in enumerate(self.encoder.layers):
            x, kv = _layer(layer, x, self.chunking.mask, q_pos, kv_pos, self.cache[i] if self.cache else None)
            new_cache.append(kv)
        self.cache, self.done = new_cache, n_frames
        return self.encoder.layer_norm(x)
