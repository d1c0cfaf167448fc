"""``KVCache``: a fixed-capacity slot table for one attention layer, driven by a policy.

Storage never grows or reallocates inside a stream (shapes stay fixed for compiled graphs and
CUDA graphs); memory is bounded by ``policy.budget + max_chunk`` slots however long the stream.

    k, v      [B, Hkv, capacity, D]   keys stored *before* RoPE, values
    pos       [capacity]              stream position of each slot (-1 = empty)
    frame     [capacity]              frame / chunk id (pos // tokens_per_frame by default)
    pinned    [capacity]              sinks: never evicted by budgeted selection
    score     [capacity]              accumulated attention mass (ParticipativeCompression)

One step of a stream: ``view = cache.update(k_new, v_new)`` evicts by policy, appends the new
slots and returns the pre-RoPE keys, values and positions to attend over; ``cache.rope_positions``
(or ``cache.attend``) applies the policy's RoPE rule. Compacting policies keep slots in stream
order; the ring policy writes in place and keeps positions per slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import attend as attend_fn
from .attention import triton_decode
from .masks import dense_mask
from .policies import Policy, SlotMeta
from .rope import Rope


class CacheBudgetError(ValueError):
    """A step asked the cache for more slots than its budget allows."""


@dataclass
class CacheView:
    k: torch.Tensor  # [B, Hkv, N, D], pre-RoPE
    v: torch.Tensor  # [B, Hkv, N, Dv]
    kv_pos: torch.Tensor  # [N] stream positions
    q_pos: torch.Tensor  # [m] stream positions of the tokens just appended


class KVCache:
    def __init__(
        self,
        policy: Policy,
        *,
        batch: int,
        kv_heads: int,
        head_dim: int,
        max_chunk: int = 1,
        value_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if max_chunk < 1:
            raise ValueError(f"max_chunk must be at least 1, got {max_chunk}")
        self.policy = policy
        self.ring = getattr(policy, "ring", False)
        self.tokens_per_frame = getattr(policy, "tokens_per_frame", 1)
        self.max_chunk = max_chunk
        self.capacity = policy.budget + max_chunk
        shape = (batch, kv_heads, self.capacity)
        self.k = torch.zeros(*shape, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(*shape, value_dim or head_dim, dtype=dtype, device=device)
        self.pos = torch.full((self.capacity,), -1, dtype=torch.long, device=device)
        self.frame = torch.full((self.capacity,), -1, dtype=torch.long, device=device)
        self.pinned = torch.zeros(self.capacity, dtype=torch.bool, device=device)
        self.score = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        self.length = 0  # compacting layout: slots [0, length) are filled
        self.next_pos = 0  # stream position of the next token

    def __len__(self) -> int:
        return int((self.pos >= 0).sum()) if self.ring else self.length

    def _meta(self) -> SlotMeta:
        n = self.length
        return SlotMeta(self.pos[:n], self.frame[:n], self.pinned[:n], self.score[:n])

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, frame: torch.Tensor | None = None) -> CacheView:
        """Evict by policy, append ``k_new``/``v_new`` ``[B, Hkv, m, D]`` (pre-RoPE), return the view."""
        m = k_new.shape[2]
        if k_new.shape[:2] != self.k.shape[:2] or k_new.shape[3] != self.k.shape[3] or v_new.shape[:3] != k_new.shape[:3]:
            raise ValueError(f"new keys {tuple(k_new.shape)} / values {tuple(v_new.shape)} do not fit a cache of {tuple(self.k.shape)}")
        if m > self.max_chunk:
            raise CacheBudgetError(
                f"a chunk of {m} tokens exceeds this cache's max_chunk={self.max_chunk} "
                f"(capacity {self.capacity} = budget {self.policy.budget} + max_chunk); build the cache with max_chunk >= {m}"
            )
        device = self.pos.device
        new_pos = self.next_pos + torch.arange(m, device=device)
        new_frame = torch.div(new_pos, self.tokens_per_frame, rounding_mode="floor") if frame is None else frame.to(device)
        new_pinned = self.policy.pinned(new_pos, new_frame)
        if getattr(self.policy, "needs_content", False):  # adaptive sinks: the pins follow the keys and values
            n = self.length
            self.pinned[:n], new_pinned = self.policy.repin(self._meta(), self.k[:, :, :n], self.v[:, :, :n], k_new, v_new, new_frame)
        if self.ring:
            slots = self.policy.slots(new_pos, self.capacity)
        else:
            keep = self.policy.select(self._meta(), m)
            n_keep = len(keep)
            if n_keep + m > self.capacity:
                raise CacheBudgetError(
                    f"{type(self.policy).__name__} keeps {n_keep} slots and {m} arrive, over the capacity {self.capacity}; "
                    f"the stream is longer than the policy's budget ({self.policy.budget}) allows"
                )
            if n_keep < self.length or not torch.equal(keep, torch.arange(n_keep, device=device)):
                for buf in (self.k, self.v):  # gather first, then write: overlapping moves are safe
                    buf[:, :, :n_keep] = buf[:, :, keep]
                for buf in (self.pos, self.frame, self.pinned, self.score):
                    buf[:n_keep] = buf[keep]
                if n_keep + m < self.length:  # stale slots the new tokens will not overwrite
                    for buf, empty in ((self.pos, -1), (self.frame, -1), (self.pinned, False), (self.score, 0.0)):
                        buf[n_keep : self.length] = empty
            slots = slice(n_keep, n_keep + m)  # a slice, not an index tensor: basic indexing is much cheaper per step
            self.length = n_keep + m
        self.k[:, :, slots] = k_new.to(self.k.dtype)
        self.v[:, :, slots] = v_new.to(self.v.dtype)
        self.pos[slots] = new_pos
        self.frame[slots] = new_frame
        self.pinned[slots] = new_pinned
        self.score[slots] = 0.0
        self.next_pos += m
        return self.view(new_pos)

    def peek(self, k_new: torch.Tensor, v_new: torch.Tensor) -> CacheView:
        """The view ``update`` would return for these new keys, without writing anything: the slots
        the policy keeps when ``m`` tokens arrive, then the new keys at the next stream positions.

        Few-step video diffusion (Self Forcing, LongLive, Deep Forcing) attends each denoising step
        of a chunk like this and writes the chunk once, with its clean keys, in a context pass
        (``update``): the selection is the same, so the steps and the pass see the same keys."""
        m = k_new.shape[2]
        device = self.pos.device
        new_pos = self.next_pos + torch.arange(m, device=device)
        if self.ring:
            overwritten = torch.zeros(self.capacity, dtype=torch.bool, device=device)
            overwritten[self.policy.slots(new_pos, self.capacity)] = True
            keep = torch.nonzero((self.pos >= 0) & ~overwritten).flatten()
            keep = keep[torch.argsort(self.pos[keep])]
        else:
            keep = self.policy.select(self._meta(), m)
        pos = torch.cat([self.pos[keep], new_pos])
        k = torch.cat([self.k[:, :, keep], k_new.to(self.k.dtype)], dim=2)
        v = torch.cat([self.v[:, :, keep], v_new.to(self.v.dtype)], dim=2)
        return CacheView(k, v, pos, new_pos)

    def view(self, q_pos: torch.Tensor) -> CacheView:
        n = self.capacity if self.ring else self.length
        return CacheView(self.k[:, :, :n], self.v[:, :, :n], self.pos[:n], q_pos)

    def rope_positions(self, view: CacheView, slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions RoPE uses for the view's keys and queries, by the policy's rule. ``slots``: the
        cache slots the view's keys come from (default: the first ``len(view.kv_pos)``)."""
        slots = torch.arange(len(view.kv_pos), device=view.kv_pos.device) if slots is None else slots
        meta = SlotMeta(view.kv_pos, self.frame[slots], self.pinned[slots], self.score[slots])
        valid = view.kv_pos >= 0
        if valid.all():
            return self.policy.rope_positions(view.kv_pos, view.q_pos, meta)
        # ring with empty slots: number only the filled ones; empty slots are masked anyway
        kv_rope = torch.zeros_like(view.kv_pos)
        sub = SlotMeta(view.kv_pos[valid], meta.frame[valid], meta.pinned[valid], meta.score[valid])
        kv_rope[valid], q_rope = self.policy.rope_positions(view.kv_pos[valid], view.q_pos, sub)
        return kv_rope, q_rope

    def positions_shared_by_the_chunk(self, view: CacheView, mask) -> bool:
        """Whether one set of RoPE positions serves every query of the chunk just appended, i.e.
        equals what each query would have got fed token by token. True for stream positions; for
        positions inside the cache (numbered among the keys a query sees) only when no key is
        hidden from any query of the chunk (a ring larger than its window holds keys a query must not
        count), so that every query sees a prefix of the same order."""
        policy_rope = type(self.policy).rope_positions
        if getattr(self.policy, "reposition", "absolute") == "absolute" and policy_rope is Policy.rope_positions:
            return True
        if policy_rope is not Policy.rope_positions:  # a rule of its own (DeepSink): numbered per query
            return False
        seen = view.kv_pos >= 0
        return torch.equal(dense_mask(mask, view.q_pos, view.kv_pos) & seen, (view.kv_pos[None, :] <= view.q_pos[:, None]) & seen)

    def attend(self, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, rope: Rope | None = None, **attend_kwargs) -> torch.Tensor:
        """One streaming step: update with the new (pre-RoPE) keys, rotate by the policy's positions,
        and attend the new queries ``[B, H, m, D]`` under the policy's mask.

        A chunk of m > 1 queries gives each query the RoPE positions it would have had fed token by
        token (chunked prefill at in-cache positions): one rotation for all when they agree
        (``positions_shared_by_the_chunk``), else query by query over the keys each one sees."""
        return self.attend_view(q, self.update(k_new, v_new), rope, **attend_kwargs)

    def attend_view(self, q: torch.Tensor, view: CacheView, rope: Rope | None = None, **attend_kwargs) -> torch.Tensor:
        """``attend`` after the update: the queries of the tokens ``update`` just appended, over ``view``."""
        mask = attend_kwargs.pop("mask", self.policy.attention_mask())
        if rope is not None and not self.positions_shared_by_the_chunk(view, mask):
            return torch.cat([self._attend_one_query(q[:, :, i : i + 1], view, i, mask, rope, **attend_kwargs) for i in range(q.shape[2])], dim=2)
        k = view.k
        if rope is not None:
            kv_rope, q_rope = self.rope_positions(view)
            if attend_kwargs.get("backend") == "triton" and q.shape[2] == 1 and rope.inv_freq_values is None:  # the fused hot path
                scale = attend_kwargs.get("scale") or q.shape[-1] ** -0.5
                return triton_decode(q, k, view.v, mask, view.q_pos, view.kv_pos, scale, theta=rope.theta, kv_rope_pos=kv_rope, q_rope_pos=int(q_rope[0]))
            q, k = rope.apply(q, q_rope), rope.apply(k, kv_rope)
        if getattr(self.policy, "needs_scores", False):
            allowed = dense_mask(mask, view.q_pos, view.kv_pos) & (view.kv_pos >= 0)
            return self._attend_scoring(q, k, view.v, allowed, torch.arange(len(view.kv_pos), device=q.device), attend_kwargs.get("scale"))
        return attend_fn(q, k, view.v, mask, q_pos=view.q_pos, kv_pos=view.kv_pos, **attend_kwargs)

    def _attend_scoring(self, q, k, v, allowed: torch.Tensor | None, slots: torch.Tensor, scale: float | None) -> torch.Tensor:
        """Attention written out (the reference backend's formula) so that its probabilities also
        feed ``score``: scoring policies (H2O, participative compression) accumulate the mass each
        query gave each key it saw, without a second pass over the keys."""
        group, work = q.shape[1] // k.shape[1], torch.promote_types(q.dtype, torch.float32)
        logits = (q.to(work) @ k.to(work).repeat_interleave(group, dim=1).transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        self.score[slots] += probs.sum(dim=(0, 1, 2)).to(self.score.dtype)
        return (probs @ v.to(work).repeat_interleave(group, dim=1)).to(q.dtype)

    def _attend_one_query(self, q: torch.Tensor, view: CacheView, i: int, mask, rope: Rope, **attend_kwargs) -> torch.Tensor:
        """Query ``i`` of the chunk over the keys it sees, at the positions the policy gives that set."""
        q_pos = view.q_pos[i : i + 1]
        slots = torch.nonzero(dense_mask(mask, q_pos, view.kv_pos)[0] & (view.kv_pos >= 0)).flatten()
        sub = CacheView(view.k[:, :, slots], view.v[:, :, slots], view.kv_pos[slots], q_pos)
        kv_rope, q_rope = self.rope_positions(sub, slots)
        q, k = rope.apply(q, q_rope), rope.apply(sub.k, kv_rope)
        if getattr(self.policy, "needs_scores", False):
            return self._attend_scoring(q, k, sub.v, None, slots, attend_kwargs.get("scale"))
        if attend_kwargs.get("backend") == "triton":
            attend_kwargs = attend_kwargs | {"backend": "auto"}  # the keys are rotated here, not in the fused kernel
        return attend_fn(q, k, sub.v, None, q_pos=q_pos, kv_pos=sub.kv_pos, **attend_kwargs)

    @torch.no_grad()
    def score_with(self, queries: torch.Tensor, rope: Rope | None = None, scale: float | None = None) -> None:
        """Add the attention mass that ``queries`` ``[B, H, r, D]`` (the newest r tokens' queries,
        pre-RoPE) give each filled slot to ``score``, summed over batch, heads and queries.
        Each query row contributes exactly 1 in total (ParticipativeCompression's statistic)."""
        if self.ring:
            raise NotImplementedError("score_with needs a compacting policy; the ring never selects by score")
        view = self.view(self.pos[: self.length][-queries.shape[2] :])
        k = view.k
        if rope is not None:
            kv_rope, q_rope = self.rope_positions(view)
            queries, k = rope.apply(queries, q_rope), rope.apply(k, kv_rope)
        group = queries.shape[1] // k.shape[1]
        logits = (queries.float() @ k.float().repeat_interleave(group, dim=1).transpose(-1, -2)) * (scale or queries.shape[-1] ** -0.5)
        self.score[: self.length] += torch.softmax(logits, dim=-1).sum(dim=(0, 1, 2))

    def recache(self, recompute: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """LongLive's KV re-cache on a prompt switch: recompute keys and values of every kept slot,
        sinks included, with ``recompute(pos, frame) -> (k, v)`` under the new condition.

        Sinks are refilled, never left zeroed (LongLive issue #20: zeroed sink slots corrupted the
        cache for good)."""
        n = self.capacity if self.ring else self.length
        filled = torch.nonzero(self.pos[:n] >= 0).flatten()
        k, v = recompute(self.pos[filled], self.frame[filled])
        self.k[:, :, filled] = k.to(self.k.dtype)
        self.v[:, :, filled] = v.to(self.v.dtype)
        self.score[filled] = 0.0
