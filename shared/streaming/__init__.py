"""The streaming-attention core every experiment reuses.

- ``masks``     declarative masks over *stream positions* (causal, sliding window, sinks,
                block-causal, frame windows), each giving a dense boolean mask and a FlexAttention
                BlockMask from the same definition
- ``attention`` ``attend(q, k, v, mask=..., backend="auto")``: reference / sdpa / flex / triton
- ``rope``      rotary embeddings applied at attention time (keys are cached before RoPE)
- ``cache``     ``KVCache``: a fixed-capacity slot table (pre-RoPE keys, values, position, frame,
                pinned, score) driven by composable policies (``policies``)
- ``hf``        ``StreamingCache`` / ``SinkCache``: a transformers ``Cache`` that ``model.generate``
                streams through under any policy; ``StreamingModel``: the project's own loop, a
                transformers decoder run through the cache and ``attend`` via a registered
                attention function (no model code copied)

Conventions, stated once:
- Shapes: q ``[B, H, Tq, D]``, k/v ``[B, Hkv, Tk, D]`` with ``H % Hkv == 0`` (grouped-query heads).
- A window ``W`` in a *mask* counts the query itself: a query at position q sees keys k with
  ``q - W < k <= q``. A *policy's* budget counts cached entries kept before new tokens arrive
  (StreamingLLM's "cache size S": the current token then sees S + 1 keys). ``policy.mask()``
  converts one into the other.
- Empty slots of a fixed-capacity cache carry position -1 and are never visible.
- A chunk of m tokens is exact: each of its queries sees the keys, at the RoPE positions, it would
  have had fed one token at a time (frame policies: one frame at a time).
"""

from .attention import BACKENDS, AttentionResult, attend, choose_backend
from .cache import CacheBudgetError, KVCache
from .masks import BlockCausal, Causal, FrameWindow, MaskSpec, SinkWindow, SlidingWindow, Window3D, block_mask, dense_mask
from .policies import AdaptiveFrameSink, Chain, DeepSink, FrameSink, Full, HeavyHitters, ParticipativeCompression, Ring, SinkWindowPolicy
from .rope import Rope, Rope3D

__all__ = [
    "BACKENDS", "AttentionResult", "attend", "choose_backend", "CacheBudgetError", "KVCache",
    "BlockCausal", "Causal", "FrameWindow", "MaskSpec", "SinkWindow", "SlidingWindow", "Window3D", "block_mask", "dense_mask",
    "AdaptiveFrameSink", "Chain", "DeepSink", "FrameSink", "Full", "HeavyHitters", "ParticipativeCompression", "Ring", "SinkWindowPolicy", "Rope", "Rope3D",
]
