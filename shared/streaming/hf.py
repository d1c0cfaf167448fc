"""Run a transformers decoder (Llama family) through the streaming core, without copying its code.

Two ways in, sharing the cache policies, ``KVCache`` and ``attend``:

1. ``StreamingCache`` (``SinkCache``): a transformers ``Cache`` for ``model.generate`` and plain
   forwards, one ``StreamingLayer`` (a ``CacheLayerMixin``) per decoder layer::

       cache = SinkCache(model, sinks=4, window=252)
       out = model.generate(input_ids, past_key_values=cache, max_new_tokens=200)

   transformers rotates keys at their stream position before the cache sees them; each layer
   un-rotates them with the model's own cos/sin (float32, as its rotary module computes them) and
   keeps them **pre-RoPE**. The policy evicts and numbers the kept keys (positions inside the cache,
   as the paper does). The model's queries arrive rotated at their stream position p, so the layer
   rotates every kept key to (its in-cache position + p - the query's in-cache position): each
   query-key pair then has exactly its in-cache distance, which is all RoPE attention depends on.
   With the model's own attention (sdpa, eager) a forward of m > 1 tokens is exact while no kept key
   is hidden from any of them; longer chunks are refused with a one-line error. With
   ``attn_implementation="streamlab_streaming"`` every chunk is exact: the registered attention
   function un-rotates the queries and attends the way ``KVCache.attend`` does (the policy's mask,
   each query at the positions it would have had token by token).

2. ``StreamingModel``: the project's loop. The model is called with ``position_ids = 0``, so its
   rotary embedding is the identity and the attention layers receive un-rotated queries and keys;
   the registered attention function stores the keys in the layer's ``KVCache`` and applies RoPE
   itself. Nothing is monkey-patched; the model's own cache is off (``use_cache=False``)::

       stream = StreamingModel(model, SinkWindowPolicy(4, 252))
       logits = stream.step(input_ids)        # [B, m] -> [B, m, vocab], m <= max_chunk

RoPE types: default, linear and llama3 (fixed rescaled frequencies), and dynamic NTK while
positions stay inside the original window (beyond it dynamic RoPE rescales; refused there). Others
(yarn, longrope, ...) are refused by name. Left-padded batches are refused with one line: a padded
row's sinks would be padding and its positions differ from the other rows'.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .cache import CacheView, KVCache
from .masks import dense_mask
from .policies import Policy, SinkWindowPolicy
from .rope import Rope

ATTN_IMPLEMENTATION = "streamlab_streaming"


SUPPORTED_ROPE = ("default", "linear", "llama3", "dynamic")


def _streaming_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, streamlab=None, **kwargs):
    layer = getattr(key, "_streamlab_layer", None)
    if layer is not None:  # a StreamingCache layer handed over its pre-RoPE view
        view = layer.view
        q = layer.model_rope.unrotate(query, view.q_pos).to(view.k.dtype)
        out = layer.cache.attend_view(q, view, rope=layer.rope, scale=scaling, backend=layer.backend)
        return out.to(query.dtype).transpose(1, 2).contiguous(), None
    if streamlab is None:
        raise RuntimeError(f"attn_implementation '{ATTN_IMPLEMENTATION}' runs with a shared.streaming.hf.StreamingCache "
                           "(past_key_values=...) or through StreamingModel")
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


def rotary_module(model):
    """The model's rotary-embedding module (the one holding ``inv_freq``), or a one-line error."""
    found = [m for m in model.modules() if hasattr(m, "inv_freq") and hasattr(m, "attention_scaling")]
    if not found:
        raise NotImplementedError(f"{type(model).__name__} has no rotary embedding module with inv_freq: shared.streaming.hf needs a RoPE model")
    rotary = found[0]
    kind = rotary.rope_type if isinstance(rotary.rope_type, str) else "per-layer"
    if kind not in SUPPORTED_ROPE:
        raise NotImplementedError(f"RoPE type {kind!r} is not supported by shared.streaming.hf (supported: {', '.join(SUPPORTED_ROPE)})")
    if float(rotary.attention_scaling) != 1.0:
        raise NotImplementedError(f"RoPE type {kind!r} scales attention by {rotary.attention_scaling}; not supported")
    return rotary


def rope_of(model) -> Rope:
    """Our Rope for a Llama-family model: default RoPE from theta; linear and llama3 from the
    model's rescaled frequencies; dynamic NTK with its original frequencies, refused past the
    original window (positions inside the cache never get there). Others are refused by name."""
    config = model.config
    rotary = rotary_module(model)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    params = getattr(config, "rope_parameters", None) or {}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    if rotary.rope_type == "default":
        return Rope(head_dim, theta=theta)
    frequencies = tuple(float(f) for f in getattr(rotary, "original_inv_freq", rotary.inv_freq).double())
    limit = int(rotary.original_max_seq_len) if rotary.rope_type == "dynamic" else None
    return Rope(head_dim, theta=theta, inv_freq_values=frequencies, max_position=limit)


class ModelRope:
    """The model's own rotation, reproduced exactly: cos/sin = cos/sin(float32(position) x inv_freq)
    in float32 as transformers' rotary modules compute them, applied in float32. Un-rotating what the
    model rotated with these values recovers the pre-RoPE key to float32 rounding."""

    def __init__(self, model):
        rotary = rotary_module(model)
        self.inv_freq = getattr(rotary, "original_inv_freq", rotary.inv_freq).float()
        self.kind = rotary.rope_type
        self.limit = int(rotary.original_max_seq_len) if self.kind == "dynamic" else None
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, D] float32 cos and sin; looked up in a table of the same values (every decode step
        rotates every kept key in every layer, and recomputing the trigonometry dominated)."""
        if not len(positions):
            return self._compute(positions)
        top, low = int(positions.max()), int(positions.min())
        if self.limit is not None and top >= self.limit:
            raise ValueError(f"position {top} is past the {self.limit}-token window where dynamic NTK RoPE rescales its "
                             "frequencies; a StreamingCache keeps positions exact only inside it")
        if low < 0 or top >= 1 << 20:
            return self._compute(positions)
        if self._table is None or self._table[0].shape[0] <= top or self._table[0].device != positions.device:
            self._table = self._compute(torch.arange(1 << max(10, top.bit_length()), device=positions.device))
        return self._table[0][positions], self._table[1][positions]

    def _compute(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq.to(positions.device)[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()

    def _turn(self, x: torch.Tensor, positions: torch.Tensor | range, sign: float) -> torch.Tensor:
        if (isinstance(positions, range) and positions.start >= 0 and self._table is not None and positions.stop <= self._table[0].shape[0]
                and self._table[0].device == x.device):
            cos, sin = self._table[0][positions.start : positions.stop], self._table[1][positions.start : positions.stop]  # views, no gather
        else:
            cos, sin = self.cos_sin(torch.as_tensor(positions, device=x.device) if isinstance(positions, range) else positions)
        xf = x.float()
        half = xf.shape[-1] // 2
        rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
        return xf * cos + sign * rotated * sin

    def rotate(self, x: torch.Tensor, positions: torch.Tensor | range) -> torch.Tensor:
        return self._turn(x, positions, 1.0)

    def unrotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self._turn(x, positions, -1.0)


class PaddedBatchError(ValueError):
    """A left-padded batch was given to a StreamingCache."""


def _refuse_padding(module, args, kwargs):
    """Forward pre-hook of a model a StreamingCache was built for: the cache assumes every row's
    tokens sit at the stream positions it counts (no padding, no custom position ids)."""
    cache = kwargs.get("past_key_values")
    if not isinstance(cache, StreamingCache):
        return
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all()):
        raise PaddedBatchError("left-padded batches are refused by StreamingCache: a padded row's sinks would be padding; "
                               "stream rows of equal length, or one row at a time")
    positions = kwargs.get("position_ids")
    if isinstance(positions, torch.Tensor) and positions.numel():
        expected = cache.get_seq_length() + torch.arange(positions.shape[-1], device=positions.device)
        if not bool((positions == expected).all()):
            raise PaddedBatchError(f"position_ids {positions[..., :3].tolist()}... are not the stream positions {expected[:3].tolist()}... "
                                   "the cache counts; StreamingCache needs unpadded rows at their stream positions")


class StreamingLayer(CacheLayerMixin):
    """One decoder layer's cache: a ``KVCache`` under ``policy`` holding pre-RoPE keys (module docstring)."""

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, policy: Policy, model_rope: ModelRope, rope: Rope, max_chunk: int, streamlab_attention, backend: str = "auto"):
        super().__init__()
        self.policy, self.model_rope, self.rope, self.max_chunk, self.backend = policy, model_rope, rope, max_chunk, backend
        self._streamlab_attention = streamlab_attention  # () -> bool: is the model using our attention function?
        self.cache: KVCache | None = None
        self.view: CacheView | None = None
        # keys numbered by their place in the cache with the base rule (StreamingLLM's), in which
        # case a decode step's positions are a contiguous range
        self._ranked = getattr(policy, "reposition", "absolute") == "cache" and type(policy).rope_positions is Policy.rope_positions

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, head_dim = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        storage = torch.float64 if key_states.dtype == torch.float64 else torch.float32  # pre-RoPE keys kept at float32 or better
        self.cache = KVCache(self.policy, batch=batch, kv_heads=heads, head_dim=head_dim, max_chunk=self.max_chunk,
                             value_dim=value_states.shape[-1], dtype=storage, device=key_states.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        first = self.cache.next_pos
        positions = range(first, first + key_states.shape[2])
        self.model_rope.cos_sin(torch.tensor([first + key_states.shape[2] - 1], device=key_states.device))  # grows the table (and checks the RoPE limit) when needed
        self.view = view = self.cache.update(self.model_rope.unrotate(key_states, positions), value_states)
        if self._streamlab_attention():
            keys = view.k
            keys._streamlab_layer = self  # the attention function takes the view from here
            return keys, view.v
        if getattr(self.policy, "needs_scores", False):
            raise ValueError(f"{type(self.policy).__name__} selects by attention scores, which the model's own attention does not give; "
                             f"load the model with attn_implementation='{ATTN_IMPLEMENTATION}'")
        # the model's own attention: the keys the new tokens see, in stream order, at in-cache + shift positions
        n = len(view.kv_pos)
        if len(positions) == 1 and not self.cache.ring and self._ranked:
            # the common decode step: keys numbered 0..n-1 in the cache, the new token last, so keys
            # sit at first - n + 1 .. first: one contiguous range of the cos/sin table
            keys = self.model_rope.rotate(view.k, range(first - n + 1, first + 1))
            return keys.to(self.dtype), view.v.to(self.dtype)
        order, hidden = self._visible(view.kv_pos, view.q_pos)
        if hidden:
            raise ValueError(f"a forward of {len(positions)} tokens through {type(self.policy).__name__} would hide cached keys from some of "
                             f"them, which the model's own attention cannot do; feed fewer tokens at a time or load the model with "
                             f"attn_implementation='{ATTN_IMPLEMENTATION}'")
        if len(order) == len(view.kv_pos) and bool((order == torch.arange(len(order), device=order.device)).all()):
            sorted_view = view  # already the keys to show, in stream order (a compacting cache, one new token)
        else:
            sorted_view = CacheView(view.k[:, :, order], view.v[:, :, order], view.kv_pos[order], view.q_pos)
        kv_rope, q_rope = self.cache.rope_positions(sorted_view, order)
        keys = self.model_rope.rotate(sorted_view.k, kv_rope + (first - q_rope[0]))
        return keys.to(self.dtype), sorted_view.v.to(self.dtype)

    def _visible(self, kv_pos: torch.Tensor, q_pos: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(slots any new token sees, in stream order; whether some of them are hidden from some new
        token, which a plain causal mask cannot express). A single token never hides any."""
        if len(q_pos) == 1 and not self.cache.ring:  # a compacting policy keeps, in stream order, what the next token sees
            return torch.arange(len(kv_pos), device=kv_pos.device), False
        allowed = dense_mask(self.policy.attention_mask(), q_pos, kv_pos) & (kv_pos >= 0)
        order = torch.nonzero(allowed.any(0)).flatten()
        order = order[torch.argsort(kv_pos[order])]
        hidden = len(q_pos) > 1 and not torch.equal(allowed[:, order], kv_pos[order][None, :] <= q_pos[:, None])
        return order, hidden

    def _after_update_sizes(self, query_length: int) -> int:
        """How many keys ``update`` will return for ``query_length`` new tokens (the mask needs it first)."""
        if not self.is_initialized:
            return query_length
        cache = self.cache
        new_pos = cache.next_pos + torch.arange(query_length, device=cache.pos.device)
        if cache.ring:
            pos = cache.pos.clone()
            pos[cache.policy.slots(new_pos, cache.capacity)] = new_pos
        else:
            pos = torch.cat([cache.pos[: cache.length][cache.policy.select(cache._meta(), query_length)], new_pos])
        return len(self._visible(pos, new_pos)[0])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        n = self._after_update_sizes(query_length)
        return n, self.get_seq_length() + query_length - n  # the kept keys sit just before the new tokens

    def get_seq_length(self) -> int:
        """Tokens streamed so far (generate counts positions from it), not the entries kept."""
        return self.cache.next_pos if self.is_initialized else 0

    def get_max_length(self) -> int:
        return -1  # a stream has no end; memory is bounded by the policy's budget

    def reset(self) -> None:
        self.cache, self.view, self.is_initialized = None, None, False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("StreamingCache does not support beam search (reorder_cache); use greedy or sampling")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("StreamingCache cannot crop: evicted tokens are gone (assisted decoding is not supported)")


class StreamingCache(Cache):
    """A transformers ``Cache`` that streams under a shared.streaming policy (module docstring).

    ``max_chunk``: the most tokens one forward may add (the prompt, for ``generate``); it sizes the
    fixed buffers (budget + max_chunk slots per layer)."""

    def __init__(self, model, policy: Policy, *, max_chunk: int = 1024, backend: str = "auto"):
        _register()
        config = model.config
        layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        if any(t != "full_attention" for t in layer_types):
            raise NotImplementedError(f"StreamingCache streams full-attention layers only; this model has {sorted(set(layer_types))}")
        model_rope, rope = ModelRope(model), rope_of(model)
        config_ref = weakref.ref(config)

        def streamlab_attention() -> bool:
            cfg = config_ref()
            return cfg is not None and cfg._attn_implementation == ATTN_IMPLEMENTATION

        super().__init__(layers=[StreamingLayer(policy, model_rope, rope, max_chunk, streamlab_attention, backend) for _ in layer_types])
        self.policy = policy
        if not getattr(model, "_streamlab_padding_hook", False):
            model.register_forward_pre_hook(_refuse_padding, with_kwargs=True)
            model._streamlab_padding_hook = True


def SinkCache(model, sinks: int = 4, window: int = 252, **kwargs) -> StreamingCache:
    """StreamingLLM's cache for ``model.generate``: ``sinks`` first tokens + the ``window`` most recent,
    at positions inside the cache (the paper's rule). ``window`` counts the cached entries besides the
    sinks, so a new token sees sinks + window + itself."""
    return StreamingCache(model, SinkWindowPolicy(sinks, sinks + window, reposition="cache"), **kwargs)


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
