"""Run a transformers decoder (Llama family) through the streaming core, without copying its code.

How: the model is called with ``position_ids = 0``, so its rotary embedding is the identity
(cos = 1, sin = 0) and the attention layers receive **un-rotated** queries and keys. Our attention
function, registered in transformers' ``AttentionInterface``, stores those pre-RoPE keys in the
layer's ``KVCache``, lets the policy evict and assign positions, applies RoPE itself and calls
``attend``. Nothing is monkey-patched; the model's own cache is off (``use_cache=False``).

    stream = StreamingModel(model, SinkWindowPolicy(4, 252))
    logits = stream.step(input_ids)        # [B, m] -> [B, m, vocab], m <= max_chunk
"""

from __future__ import annotations

import contextlib

import torch

from .cache import KVCache
from .policies import Policy
from .rope import Rope

ATTN_IMPLEMENTATION = "streamlab_streaming"


def _streaming_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, streamlab=None, **kwargs):
    if streamlab is None:
        raise RuntimeError(f"attn_implementation '{ATTN_IMPLEMENTATION}' only runs through shared.streaming.hf.StreamingModel")
    cache = streamlab.caches[module.layer_idx]
    out = cache.attend(query, key, value, rope=streamlab.rope, scale=scaling, backend=streamlab.backend)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _streaming_attention)


@contextlib.contextmanager
def attn_implementation(model, name: str):
    """Temporarily switch a model's attention implementation (e.g. to sdpa for a dense baseline)."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield model
    finally:
        model.config._attn_implementation = previous


def rope_of(model) -> Rope:
    """Our Rope for a Llama-family model; refuses RoPE variants it does not reproduce exactly."""
    config = model.config
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise NotImplementedError(f"RoPE type {kind!r} is not supported by shared.streaming.hf (only the default rotary embedding)")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return Rope(head_dim, theta=float(theta))


class StreamingModel:
    """A causal LM fed a token stream chunk by chunk, every layer with its own ``KVCache`` under ``policy``."""

    def __init__(self, model, policy: Policy, *, batch: int = 1, max_chunk: int = 1, backend: str = "auto"):
        _register()
        config = model.config
        self.model = model
        self.rope = rope_of(model)
        self.backend = backend
        parameter = next(model.parameters())
        self.caches = [
            KVCache(policy, batch=batch, kv_heads=config.num_key_value_heads, head_dim=self.rope.head_dim, max_chunk=max_chunk, dtype=parameter.dtype, device=parameter.device)
            for _ in range(config.num_hidden_layers)
        ]

    @property
    def position(self) -> int:
        """Stream position of the next token."""
        return self.caches[0].next_pos

    @torch.no_grad()
    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed ``input_ids`` ``[B, m]``; returns the logits ``[B, m, vocab]``."""
        with attn_implementation(self.model, ATTN_IMPLEMENTATION):
            out = self.model(input_ids=input_ids, position_ids=torch.zeros_like(input_ids), use_cache=False, streamlab=self)
        return out.logits
