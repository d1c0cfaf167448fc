"""KV-cache policies: which slots survive, and which RoPE positions they carry.

A policy is a small frozen dataclass; ``KVCache`` asks it three things:

- ``select(meta, incoming)``: the sorted indices of the filled slots to keep before ``incoming``
  new slots are appended (a pure function of positions, frames, pins and scores);
- ``rope_positions(kv_pos, q_pos)``: the positions RoPE uses for the kept keys and the new queries
  (stream positions, or positions inside the cache as StreamingLLM prescribes);
- ``mask()``: the equivalent static mask over stream positions, so that streaming through the
  cache equals one offline ``attend`` with that mask (the tests check exactly this).

``budget`` counts the entries kept before new tokens arrive (StreamingLLM's cache size S).
Policies compose: ``Chain(DeepSink(...), ParticipativeCompression(...))`` applies each selection to
what the previous one kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import masks


@dataclass
class SlotMeta:
    """Metadata of the filled slots, in slot order: positions, frames, pins, scores ``[S]``."""

    pos: torch.Tensor
    frame: torch.Tensor
    pinned: torch.Tensor
    score: torch.Tensor

    def subset(self, idx: torch.Tensor) -> SlotMeta:
        return SlotMeta(self.pos[idx], self.frame[idx], self.pinned[idx], self.score[idx])


def _sorted(idx: torch.Tensor, meta: SlotMeta) -> torch.Tensor:
    return idx[torch.argsort(meta.pos[idx], stable=True)]


def _sinks_and_rest(meta: SlotMeta, sinks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the pinned slots, at most ``sinks`` of them; every other slot), each in stream order."""
    order = torch.argsort(meta.pos, stable=True)
    return order[meta.pinned[order]][:sinks], order[~meta.pinned[order]]


class Policy:
    """Base of all policies. Optional attributes a policy may define (read with defaults by the cache):
    ``reposition`` ("absolute" | "cache"), ``tokens_per_frame`` (1), ``ring`` (False)."""

    budget: int

    def select(self, meta: SlotMeta, incoming: int) -> torch.Tensor:
        raise NotImplementedError

    def pinned(self, pos: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Which new slots are sinks (never evicted by budgeted selection)."""
        return torch.zeros_like(pos, dtype=torch.bool)

    def rope_positions(self, kv_pos: torch.Tensor, q_pos: torch.Tensor, meta: SlotMeta) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self, "reposition", "absolute") == "cache":
            # StreamingLLM §3.2: keys numbered by their place in the cache, in stream order;
            # new queries continue that numbering.
            in_order = len(kv_pos) < 2 or bool((kv_pos[1:] > kv_pos[:-1]).all())  # compacting caches keep stream order
            order = torch.arange(len(kv_pos), device=kv_pos.device) if in_order else torch.argsort(torch.argsort(kv_pos))
            n_old = int((kv_pos < q_pos.min()).sum()) if len(q_pos) else len(kv_pos)
            return order, n_old + torch.arange(len(q_pos), device=q_pos.device)
        return kv_pos, q_pos

    def mask(self) -> masks.MaskSpec:
        raise NotImplementedError

    def attention_mask(self) -> masks.MaskSpec:
        """The mask a step attends under: the static mask, or for policies that select by
        attention scores (and so have none) causal attention over what they keep."""
        try:
            return self.mask()
        except NotImplementedError:
            return masks.Causal()


def _check_reposition(value: str) -> None:
    if value not in ("absolute", "cache"):
        raise ValueError(f"reposition must be 'absolute' or 'cache', got {value!r}")


@dataclass(frozen=True)
class Full(Policy):
    """Dense attention: keep everything, up to ``max_tokens`` (then the cache refuses)."""

    max_tokens: int

    @property
    def budget(self) -> int:
        return self.max_tokens

    def select(self, meta, incoming):
        return torch.arange(len(meta.pos), device=meta.pos.device)

    def mask(self):
        return masks.Causal()


@dataclass(frozen=True)
class SinkWindowPolicy(Policy):
    """StreamingLLM: keep ``sinks`` first tokens plus the most recent, ``budget`` entries in all.

    ``SinkWindowPolicy(0, S)`` is plain window attention. ``reposition="cache"`` gives keys the
    positions 0..N-1 of their place in the cache (the paper's rule); ``"absolute"`` keeps stream
    positions.
    """

    sinks: int
    budget: int
    reposition: str = "cache"

    def __post_init__(self):
        _check_reposition(self.reposition)
        if not 0 <= self.sinks < self.budget:
            raise ValueError(f"need 0 <= sinks < budget, got sinks={self.sinks}, budget={self.budget}")

    def pinned(self, pos, frame):
        return pos < self.sinks

    def select(self, meta, incoming):
        n = len(meta.pos)
        if n <= self.budget:
            return torch.arange(n, device=meta.pos.device)
        if bool(meta.pos[self.sinks - 1] == self.sinks - 1) if self.sinks else True:
            # the steady state of a compacting cache: the sinks are slots 0..sinks-1 and the rest is
            # in stream order, so keep the sinks and the newest budget - sinks (no sorting per step)
            if bool((meta.pos[1:] > meta.pos[:-1]).all()):
                return torch.cat([torch.arange(self.sinks, device=meta.pos.device), torch.arange(n - (self.budget - self.sinks), n, device=meta.pos.device)])
        sink, rest = _sinks_and_rest(meta, self.sinks)
        recent = rest[len(rest) - (self.budget - len(sink)) :]
        return _sorted(torch.cat([sink, recent]), meta)

    def mask(self):
        return masks.SinkWindow(self.sinks, self.budget - self.sinks + 1)


@dataclass(frozen=True)
class Ring(Policy):
    """Rolling ring buffer (Self-Forcing, StreamDiffusionV2): ``sinks`` fixed slots, then new tokens
    overwrite the oldest non-sink slot in place: no data movement, positions stored per slot.

    ``budget`` = sinks + ring length. Attention over the ring equals ``SinkWindow`` with absolute
    positions; this is the layout the Triton decode kernel reads.
    """

    sinks: int
    budget: int
    reposition: str = "absolute"
    ring: bool = True

    def __post_init__(self):
        _check_reposition(self.reposition)
        if not 0 <= self.sinks < self.budget:
            raise ValueError(f"need 0 <= sinks < budget, got sinks={self.sinks}, budget={self.budget}")

    @property
    def window(self) -> int:
        return self.budget - self.sinks

    def slots(self, pos: torch.Tensor, capacity: int) -> torch.Tensor:
        """Slot index of each stream position: sinks in place, then round a ring of ``capacity - sinks``
        slots (the cache sizes it ``window + max_chunk``, so a whole chunk fits beside the window)."""
        return torch.where(pos < self.sinks, pos, self.sinks + (pos - self.sinks) % (capacity - self.sinks))

    def pinned(self, pos, frame):
        return pos < self.sinks

    def select(self, meta, incoming):  # the ring never compacts
        return torch.arange(len(meta.pos), device=meta.pos.device)

    def mask(self):
        return masks.SinkWindow(self.sinks, self.window + 1)


@dataclass(frozen=True)
class FrameSink(Policy):
    """LongLive: evict whole frames only; the first ``sink_frames`` frames are pinned; keep the
    ``window_frames - 1`` most recent frames besides the incoming one (the window counts it)."""

    tokens_per_frame: int
    sink_frames: int
    window_frames: int

    def __post_init__(self):
        if self.tokens_per_frame < 1 or self.sink_frames < 0 or self.window_frames < 1:
            raise ValueError(f"invalid {self}")

    @property
    def budget(self) -> int:
        return (self.sink_frames + self.window_frames - 1) * self.tokens_per_frame

    def pinned(self, pos, frame):
        return frame < self.sink_frames

    def _keep_frames(self, meta) -> torch.Tensor:
        frames = torch.unique(meta.frame)
        sinks = frames[frames < self.sink_frames]
        others = frames[frames >= self.sink_frames]
        recent = others[max(0, len(others) - (self.window_frames - 1)) :]
        return torch.cat([sinks, recent])

    def select(self, meta, incoming):
        keep = torch.isin(meta.frame, self._keep_frames(meta))
        return _sorted(torch.nonzero(keep).flatten(), meta)

    def mask(self):
        return masks.FrameWindow(self.tokens_per_frame, self.window_frames, self.sink_frames)


@dataclass(frozen=True)
class DeepSink(FrameSink):
    """Deep Forcing's deep sink: FrameSink with many sink frames (about half the window) whose
    *temporal* RoPE positions are re-aligned to end ``gap_frames`` before the oldest kept window
    frame: 0 puts the sink directly before it (the "adjacent" reading of the paper's equation);
    the official code's s* = f_cur - L_tail - S leaves a gap of one chunk (``gap_frames`` = the
    chunk; the handbook's worked example, tested). Which one the paper means is unverified.

    Positions stay token positions (frame * tokens_per_frame + offset inside the frame), so a 3D
    RoPE reads the temporal index as ``pos // tokens_per_frame`` and the spatial offset unchanged.
    """

    gap_frames: int = 0

    def rope_positions(self, kv_pos, q_pos, meta):
        frame = torch.div(kv_pos, self.tokens_per_frame, rounding_mode="floor")
        is_sink = frame < self.sink_frames
        window_frames = frame[~is_sink]
        if len(window_frames) == 0:
            return kv_pos, q_pos
        # never moved before where it started: a window still next to the sink leaves it in place
        shift = max(0, int(window_frames.min()) - self.gap_frames - self.sink_frames) * self.tokens_per_frame
        return torch.where(is_sink, kv_pos + shift, kv_pos), q_pos


@dataclass(frozen=True)
class AdaptiveFrameSink(FrameSink):
    """StreamDiffusionV2's adaptive sink (official ``causal_model.py``): a FrameSink whose sink frames
    are replaced when the stream moves away from them. When a chunk is written, each sink frame's
    similarity to it is the cosine between their token-mean keys, averaged with the same for values
    (here also averaged over batch and heads: the cache's slots are shared by the batch); if the least
    similar sink is below ``threshold``, it stops being a sink (and leaves with the window) and the
    chunk's last frame becomes a sink in its place. The official code compares single-frame chunks;
    a multi-frame chunk is compared through its tokens' mean. Sinks are then the pinned frames, not
    the first ones; the choice depends on content, so there is no static mask.
    ``KVCache.update`` calls ``repin`` before every write (``needs_content``)."""

    threshold: float = 0.2
    needs_content = True  # a class attribute: the cache passes keys and values to repin

    def repin(self, meta: SlotMeta, k: torch.Tensor, v: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
              new_frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pins of the filled slots, pins of the new slots): ``k``/``v`` [B, H, S, D] are the filled
        slots' keys and values, ``k_new``/``v_new`` [B, H, m, D] the chunk's."""
        new_pins = torch.zeros(len(new_frame), dtype=torch.bool, device=new_frame.device)
        sink_frames = torch.unique(meta.frame[meta.pinned])
        if len(sink_frames) < self.sink_frames:  # the first frames fill the sink, as in FrameSink
            return meta.pinned, new_frame < self.sink_frames
        def mean_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean(dim=(0, 1))
        chunk_k, chunk_v = k_new.mean(dim=2), v_new.mean(dim=2)  # [B, H, D]
        sims = torch.stack([(mean_cos(k[:, :, meta.frame == f].mean(dim=2), chunk_k) + mean_cos(v[:, :, meta.frame == f].mean(dim=2), chunk_v)) / 2
                            for f in sink_frames])
        if float(sims.min()) >= self.threshold:
            return meta.pinned, new_pins
        pinned = meta.pinned & (meta.frame != sink_frames[int(sims.argmin())])
        return pinned, new_frame == new_frame.max()

    def pinned(self, pos, frame):
        return frame < self.sink_frames

    def _keep_frames(self, meta) -> torch.Tensor:
        frames = torch.unique(meta.frame)
        sinks = torch.unique(meta.frame[meta.pinned])
        others = frames[~torch.isin(frames, sinks)]
        recent = others[max(0, len(others) - (self.window_frames - 1)) :]
        return torch.cat([sinks, recent])

    def mask(self):
        raise NotImplementedError("adaptive sinks depend on the keys and values; there is no static mask")

    def attention_mask(self) -> masks.MaskSpec:
        """Over what the selection kept: full inside a frame, causal across frames (FrameSink's mask
        without its window and sink terms, which the selection has already applied)."""
        return masks.FrameWindow(self.tokens_per_frame, window_frames=2**62)


@dataclass(frozen=True)
class ParticipativeCompression(Policy):
    """Deep Forcing's participative compression: when the cache is over its budget
    (``budget_frames`` frames' worth of tokens), keep the sink frames, the ``recent_frames`` newest
    frames, and the candidates that received the most attention (``KVCache.attend`` accumulates it,
    or ``score_with``) up to the budget. ``granularity="frame"`` keeps whole frames (a frame's mass
    is its tokens' sum); ``"token"`` keeps single tokens, as the official code does (its cap on how
    often one token may be re-chosen is not implemented), so a kept frame may be partial."""

    tokens_per_frame: int
    budget_frames: int
    recent_frames: int
    sink_frames: int = 0
    realign: bool = True  # Deep Forcing re-rotates the kept frames to contiguous positions
    granularity: str = "frame"
    needs_scores = True  # a class attribute: KVCache.attend adds each step's attention mass to the slots' scores

    def __post_init__(self):
        if self.sink_frames + self.recent_frames > self.budget_frames:
            raise ValueError(f"sink_frames + recent_frames must fit in budget_frames: {self}")
        if self.granularity not in ("frame", "token"):
            raise ValueError(f"granularity must be 'frame' or 'token', got {self.granularity!r}")

    def rope_positions(self, kv_pos, q_pos, meta):
        """Kept frames renumbered contiguously in stream order (frame rank x tokens_per_frame +
        offset inside the frame), the new queries after them: the gaps compression left close up.
        Keys are stored pre-RoPE, so this re-rotation is exact (kvpress needs KeyRerotationPress
        for the same on post-RoPE keys)."""
        if not self.realign:
            return kv_pos, q_pos
        frames = torch.div(torch.cat([kv_pos, q_pos]), self.tokens_per_frame, rounding_mode="floor")
        rank = torch.searchsorted(torch.unique(frames), frames)
        renumbered = rank * self.tokens_per_frame + torch.cat([kv_pos, q_pos]) % self.tokens_per_frame
        return renumbered[: len(kv_pos)], renumbered[len(kv_pos) :]

    @property
    def budget(self) -> int:
        return self.budget_frames * self.tokens_per_frame

    def pinned(self, pos, frame):
        return frame < self.sink_frames

    def select(self, meta, incoming):
        if self.granularity == "token":
            return self._select_tokens(meta)
        frames, frame_of_slot = torch.unique(meta.frame, return_inverse=True)  # sorted frame ids
        if len(frames) <= self.budget_frames:
            return torch.arange(len(meta.pos), device=meta.pos.device)
        mass = torch.zeros(len(frames), dtype=torch.float64, device=meta.pos.device).index_add_(0, frame_of_slot, meta.score.double())
        others = torch.nonzero(frames >= self.sink_frames).flatten()
        recent = others[len(others) - self.recent_frames :] if self.recent_frames else others[:0]
        candidates = others[: len(others) - self.recent_frames].flip(0)  # newest first, so that ties go to the newer frame
        n_keep = self.budget_frames - (len(frames) - len(others)) - len(recent)
        chosen = candidates[torch.argsort(mass[candidates], descending=True, stable=True)[: max(0, n_keep)]]
        kept = frames < self.sink_frames
        kept[chosen] = True
        kept[recent] = True
        return _sorted(torch.nonzero(kept[frame_of_slot]).flatten(), meta)

    def _select_tokens(self, meta):
        """Every token of the sink frames and of the ``recent_frames`` newest frames, then the other
        tokens by attention mass (ties: the newer token) up to ``budget_frames`` x tokens_per_frame."""
        device = meta.pos.device
        if len(meta.pos) <= self.budget:
            return torch.arange(len(meta.pos), device=device)
        frames = torch.unique(meta.frame)
        others = frames[frames >= self.sink_frames]
        recent = others[len(others) - self.recent_frames :] if self.recent_frames else others[:0]
        kept = (meta.frame < self.sink_frames) | torch.isin(meta.frame, recent)
        candidates = torch.nonzero(~kept).flatten()
        candidates = candidates[torch.argsort(meta.pos[candidates], descending=True)]  # newest first, so that ties go to the newer token
        n_keep = self.budget - int(kept.sum())
        kept[candidates[torch.argsort(meta.score[candidates].double(), descending=True, stable=True)[: max(0, n_keep)]]] = True
        return _sorted(torch.nonzero(kept).flatten(), meta)

    def mask(self):
        raise NotImplementedError("participative compression depends on attention scores; it has no static mask")


@dataclass(frozen=True)
class HeavyHitters(Policy):
    """H2O (Zhang et al., NeurIPS 2023): keep the ``recent`` newest tokens and, of the older ones,
    the heavy hitters: the most accumulated attention mass (``KVCache.attend`` adds it every
    step), ``budget`` entries in all; ``sinks`` first tokens may be pinned too. Token-level, so no
    static mask: each step attends causally over what is kept. ``reposition="cache"`` numbers the
    kept keys inside the cache, as StreamingLLM does (needed past the model's window)."""

    budget: int
    recent: int
    sinks: int = 0
    reposition: str = "cache"
    needs_scores: bool = True

    def __post_init__(self):
        _check_reposition(self.reposition)
        if self.sinks < 0 or self.recent < 0 or self.sinks + self.recent >= self.budget:
            raise ValueError(f"need sinks + recent < budget (room for heavy hitters): {self}")

    def pinned(self, pos, frame):
        return pos < self.sinks

    def select(self, meta, incoming):
        n = len(meta.pos)
        if n <= self.budget:
            return torch.arange(n, device=meta.pos.device)
        sink, rest = _sinks_and_rest(meta, self.sinks)
        recent, older = rest[len(rest) - self.recent :] if self.recent else rest[:0], rest[: len(rest) - self.recent]
        n_heavy = self.budget - len(sink) - len(recent)
        newest_first = older[torch.argsort(meta.pos[older], descending=True, stable=True)]
        heavy = newest_first[torch.argsort(meta.score[newest_first], descending=True, stable=True)[:n_heavy]]  # ties: the newer
        return _sorted(torch.cat([sink, heavy, recent]), meta)

    def mask(self):
        raise NotImplementedError("heavy hitters depend on attention scores; there is no static mask")


@dataclass(frozen=True)
class Chain(Policy):
    """Apply ``first``'s selection, then ``second``'s on what survived. RoPE and pins follow ``first``."""

    first: Policy
    second: Policy

    @property
    def budget(self) -> int:
        return min(self.first.budget, self.second.budget)

    @property
    def tokens_per_frame(self) -> int:
        return self.first.tokens_per_frame

    @property
    def reposition(self) -> str:
        return self.first.reposition

    def pinned(self, pos, frame):
        return self.first.pinned(pos, frame) | self.second.pinned(pos, frame)

    def select(self, meta, incoming):
        kept = self.first.select(meta, incoming)
        return kept[self.second.select(meta.subset(kept), incoming)]

    def rope_positions(self, kv_pos, q_pos, meta):
        return self.first.rope_positions(kv_pos, q_pos, meta)

    def mask(self):
        return self.first.mask() & self.second.mask()

    def attention_mask(self):
        return self.first.attention_mask() & self.second.attention_mask()

    @property
    def needs_scores(self) -> bool:
        return getattr(self.first, "needs_scores", False) or getattr(self.second, "needs_scores", False)
