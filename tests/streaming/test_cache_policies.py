"""KV cache and policies: streaming equals offline attention, invariants, RoPE, bounded memory."""

import copy

import pytest
import torch

from shared.streaming import (
    AdaptiveFrameSink,
    CacheBudgetError,
    Chain,
    DeepSink,
    FrameSink,
    Full,
    KVCache,
    ParticipativeCompression,
    Ring,
    Rope,
    SinkWindowPolicy,
    attend,
)
from shared.streaming.policies import SlotMeta

B, H, HKV, D = 2, 4, 2, 16
ROPE = Rope(D, theta=10000.0)


def qkv(t, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, heads, t, D, generator=g, dtype=torch.float64).to(dtype) for heads in (H, HKV, HKV))


def stream(policy, q, k, v, chunk, rope=ROPE, **cache_kwargs):
    cache = KVCache(policy, batch=B, kv_heads=HKV, head_dim=D, max_chunk=chunk, dtype=k.dtype, **cache_kwargs)
    outs = [cache.attend(q[:, :, s : s + chunk], k[:, :, s : s + chunk], v[:, :, s : s + chunk], rope=rope, backend="reference") for s in range(0, q.shape[2], chunk)]
    return torch.cat(outs, dim=2), cache


def offline(mask, q, k, v, rope=ROPE):
    pos = torch.arange(q.shape[2])
    return attend(rope.apply(q, pos), rope.apply(k, pos), v, mask, backend="reference")


@pytest.mark.parametrize(
    "policy,chunk",
    [
        (Full(max_tokens=64), 5),
        (SinkWindowPolicy(4, 12, reposition="absolute"), 1),
        (SinkWindowPolicy(4, 12, reposition="absolute"), 3),
        (SinkWindowPolicy(0, 9, reposition="absolute"), 4),
        (Ring(4, 12), 1),
        (Ring(2, 7), 5),
        (FrameSink(tokens_per_frame=3, sink_frames=1, window_frames=3), 3),
        (FrameSink(tokens_per_frame=4, sink_frames=0, window_frames=2), 4),
    ],
    ids=repr,
)
def test_streaming_equals_offline_attention_with_the_equivalent_mask(policy, chunk):
    q, k, v = qkv(45, seed=chunk)
    got, cache = stream(policy, q, k, v, chunk)
    assert torch.allclose(got, offline(policy.mask(), q, k, v), atol=1e-12)
    assert len(cache) <= cache.capacity


def test_in_cache_positions_equal_absolute_without_sinks_and_differ_with_them():
    q, k, v = qkv(40, seed=3)
    window_cache, _ = stream(SinkWindowPolicy(0, 8, reposition="cache"), q, k, v, 1)
    window_abs, _ = stream(SinkWindowPolicy(0, 8, reposition="absolute"), q, k, v, 1)
    assert torch.allclose(window_cache, window_abs, atol=1e-12)  # RoPE is relative
    sink_cache, _ = stream(SinkWindowPolicy(4, 12, reposition="cache"), q, k, v, 1)
    sink_abs, _ = stream(SinkWindowPolicy(4, 12, reposition="absolute"), q, k, v, 1)
    assert (sink_cache - sink_abs).abs().max() > 1e-3  # sinks moved next to the window
    assert torch.allclose(sink_cache[:, :, :13], sink_abs[:, :, :13], atol=1e-12)  # identical until the first eviction


def test_paper_example_positions_inside_the_cache():
    """StreamingLLM §3.2: cache [0, 1, 2, 3, 6, 7, 8] while decoding token 9 uses positions [0 … 7]."""
    policy = SinkWindowPolicy(4, 7, reposition="cache")
    cache = KVCache(policy, batch=1, kv_heads=1, head_dim=2)
    for _ in range(10):
        view = cache.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    assert view.kv_pos.tolist() == [0, 1, 2, 3, 6, 7, 8, 9]
    kv_rope, q_rope = cache.rope_positions(view)
    assert kv_rope.tolist() == list(range(8)) and q_rope.tolist() == [7]


def test_sinks_survive_and_capacity_holds_over_a_100k_token_stream():
    policy = SinkWindowPolicy(4, 60, reposition="cache")
    cache = KVCache(policy, batch=1, kv_heads=1, head_dim=4, max_chunk=16)
    storage = (cache.k.data_ptr(), cache.v.data_ptr(), cache.k.shape)
    chunk = torch.ones(1, 1, 16, 4)
    for _ in range(100_000 // 16):
        view = cache.update(chunk, chunk)
        assert len(view.kv_pos) <= cache.capacity == 76
    assert cache.next_pos == 100_000
    assert view.kv_pos[:4].tolist() == [0, 1, 2, 3] and view.kv_pos[-1].item() == 99_999
    assert view.kv_pos[4:].tolist() == list(range(100_000 - 72, 100_000))  # 56 recent + the 16 new
    kv_rope, q_rope = cache.rope_positions(view)
    assert int(kv_rope.max()) < cache.capacity and int(q_rope.max()) < cache.capacity  # bounded RoPE positions
    assert (cache.k.data_ptr(), cache.v.data_ptr(), cache.k.shape) == storage  # no reallocation, ever


def test_ring_writes_in_place_and_keeps_positions_per_slot():
    policy = Ring(2, 6)
    cache = KVCache(policy, batch=1, kv_heads=1, head_dim=1, max_chunk=1)
    for t in range(20):
        cache.update(torch.full((1, 1, 1, 1), float(t)), torch.zeros(1, 1, 1, 1))
    assert sorted(cache.pos.tolist()) == [0, 1, 15, 16, 17, 18, 19]  # 2 sinks + 4 recent + the current token
    assert torch.equal(cache.k.flatten().long(), cache.pos)  # each slot holds its own token


def test_frame_sink_evicts_whole_frames_and_pins_sinks():
    policy = FrameSink(tokens_per_frame=3, sink_frames=2, window_frames=3)
    cache = KVCache(policy, batch=1, kv_heads=1, head_dim=1, max_chunk=3)
    for _ in range(12):
        view = cache.update(torch.zeros(1, 1, 3, 1), torch.zeros(1, 1, 3, 1))
        frames = cache.frame[: cache.length]
        for f in frames.unique():
            assert int((frames == f).sum()) == 3  # never a partial frame
    assert sorted(cache.frame[: cache.length].unique().tolist()) == [0, 1, 9, 10, 11]
    assert cache.pinned[: cache.length].tolist() == [True] * 6 + [False] * 9
    assert torch.equal(view.kv_pos, torch.sort(view.kv_pos).values)  # stream order


def test_deep_sink_realigns_sink_frames_just_before_the_window():
    policy = DeepSink(tokens_per_frame=2, sink_frames=1, window_frames=2)
    kv_pos = torch.tensor([0, 1, 8, 9, 10, 11])  # frames 0 (sink), 4, 5
    meta = SlotMeta(kv_pos, kv_pos // 2, kv_pos < 2, torch.zeros(6))
    kv_rope, q_rope = policy.rope_positions(kv_pos, torch.tensor([10, 11]), meta)
    assert kv_rope.tolist() == [6, 7, 8, 9, 10, 11]  # frame 0 now sits at frame 3, offsets kept
    assert q_rope.tolist() == [10, 11]


def test_deep_sink_with_a_one_chunk_gap_reproduces_the_official_codes_worked_example():
    """Handbook 3.2: sink S = 10, attention window 21 frames, chunks of 3. At chunk 21-23 the cache
    keeps frames 0-9 and 13-23: the code's s* = f_cur - L_tail - S = 21 - 11 - 10 = 0 leaves the sink
    at 0-9, a gap of one chunk before the tail at 13; each later chunk moves it by +3. The adjacent
    reading (gap 0) puts it at 3-12."""
    def sink_start(policy, kept_window_start):
        kv_pos = torch.cat([torch.arange(10), torch.arange(kept_window_start, kept_window_start + 11)])
        meta = SlotMeta(kv_pos, kv_pos, kv_pos < 10, torch.zeros(len(kv_pos)))
        kv_rope, q_rope = policy.rope_positions(kv_pos, kv_pos[-3:], meta)
        assert torch.equal(kv_rope[10:], kv_pos[10:]) and torch.equal(q_rope, kv_pos[-3:])  # only the sink moves
        assert torch.equal(kv_rope[:10], kv_rope[0] + torch.arange(10))  # contiguous
        return int(kv_rope[0])

    code, adjacent = DeepSink(1, 10, 11, gap_frames=3), DeepSink(1, 10, 11)
    assert [sink_start(code, start) for start in (13, 16, 19)] == [0, 3, 6]
    assert [sink_start(adjacent, start) for start in (13, 16, 19)] == [3, 6, 9]
    assert sink_start(code, 10) == 0 and sink_start(code, 12) == 0  # before the gap opens the sink stays where it began


def test_participative_compression_keeps_the_known_top_frames():
    policy = ParticipativeCompression(tokens_per_frame=2, budget_frames=5, recent_frames=2, sink_frames=1)
    pos = torch.arange(16)  # frames 0..7
    mass = torch.tensor([0.0, 1.0, 9.0, 2.0, 8.0, 3.0, 0.0, 0.0]).repeat_interleave(2)
    keep = policy.select(SlotMeta(pos, pos // 2, pos < 2, mass), incoming=2)
    assert sorted((pos[keep] // 2).unique().tolist()) == [0, 2, 4, 6, 7]
    assert torch.equal(keep, torch.sort(keep).values)


def attention_at_contiguous_frames(cache, q):
    """Brute force, float64: the newest two queries over the cache's keys, every kept frame (whole or
    in part) renumbered contiguously in stream order, offsets inside a frame (2 tokens) kept."""
    pos = cache.pos[: cache.length]
    frames = torch.unique(pos // 2)
    contiguous = torch.tensor([frames.tolist().index(int(f)) for f in pos // 2]) * 2 + pos % 2
    keys = ROPE.apply(cache.k[:, :, : cache.length].double(), contiguous)
    queries = ROPE.apply(q, contiguous[-2:])
    causal = pos[None, :] <= pos[-2:, None]
    scores = torch.einsum("bhqd,bhkd->bhqk", queries, keys.repeat_interleave(H // HKV, 1)) / D**0.5
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ cache.v[:, :, : cache.length].double().repeat_interleave(H // HKV, 1)


def test_token_compression_keeps_sink_recent_and_the_top_scored_tokens():
    """Token granularity: all tokens of the sink and recent frames, then the other tokens by score,
    brute force here; indices in stream order; frames may be kept in part."""
    policy = ParticipativeCompression(tokens_per_frame=3, budget_frames=4, recent_frames=1, sink_frames=1, granularity="token")
    pos = torch.arange(21)  # frames 0..6, 3 tokens each
    score = torch.rand(21, generator=torch.Generator().manual_seed(3)) * 0.1
    score[[4, 5, 9, 10, 11]] = torch.tensor([5.0, 4.0, 3.0, 2.5, 2.0])
    score[[7, 13]] = 1.0  # tied for the last of the six places: the newer token (13) takes it
    keep = policy.select(SlotMeta(pos, pos // 3, pos < 3, score), incoming=3)
    fixed = [0, 1, 2, 18, 19, 20]  # sink frame 0, recent frame 6
    others = sorted((p for p in range(3, 18)), key=lambda p: (-float(score[p]), -p))[: 12 - len(fixed)]
    assert pos[keep].tolist() == sorted(fixed + others) == [0, 1, 2, 4, 5, 9, 10, 11, 13, 18, 19, 20]
    assert len(set((pos[keep] // 3).tolist())) > 4  # partial frames: more frames than the budget's four
    assert policy.select(SlotMeta(pos[:12], pos[:12] // 3, pos[:12] < 3, score[:12]), incoming=3).tolist() == list(range(12))  # within budget
    frame_level = ParticipativeCompression(tokens_per_frame=3, budget_frames=4, recent_frames=1, sink_frames=1)
    assert len(frame_level.select(SlotMeta(pos, pos // 3, pos < 3, score), incoming=3)) == 12
    with pytest.raises(ValueError, match="granularity"):
        ParticipativeCompression(3, 4, 1, granularity="head")


def test_token_compression_attends_at_contiguous_frame_positions():
    """Kept tokens of partial frames keep their place inside the frame; frames renumber contiguously;
    the cache's attention equals attention recomputed with keys rotated to those positions."""
    policy = ParticipativeCompression(tokens_per_frame=2, budget_frames=4, recent_frames=1, sink_frames=1, granularity="token")
    cache = KVCache(policy, batch=B, kv_heads=HKV, head_dim=D, max_chunk=2)
    q, k, v = qkv(20, seed=12)
    for s in range(0, 18, 2):
        cache.update(k[:, :, s : s + 2], v[:, :, s : s + 2])
        cache.score[: cache.length] += torch.rand(cache.length, generator=torch.Generator().manual_seed(s))
    pos = cache.pos[: cache.length]
    assert len(pos) == 10 and len(torch.unique(pos // 2)) > 5  # 8 kept + 2 new, some frames kept in part
    out = cache.attend(q[:, :, 18:20], k[:, :, 18:20], v[:, :, 18:20], rope=ROPE, backend="reference")
    assert torch.allclose(out, attention_at_contiguous_frames(cache, q[:, :, 18:20]), atol=1e-10)


def test_score_with_accumulates_one_unit_of_mass_per_query_row():
    policy = Chain(DeepSink(tokens_per_frame=2, sink_frames=1, window_frames=8), ParticipativeCompression(2, 5, 2, sink_frames=1))
    cache = KVCache(policy, batch=B, kv_heads=HKV, head_dim=D, max_chunk=2)
    q, k, v = qkv(12, seed=5, dtype=torch.float32)
    for s in range(0, 12, 2):
        cache.update(k[:, :, s : s + 2], v[:, :, s : s + 2])
    cache.score_with(q[:, :, -2:], rope=ROPE)
    assert cache.score[: cache.length].sum().item() == pytest.approx(B * H * 2, rel=1e-5)


def test_recache_refills_every_kept_slot_including_sinks():
    policy = FrameSink(tokens_per_frame=2, sink_frames=1, window_frames=2)
    cache = KVCache(policy, batch=1, kv_heads=1, head_dim=2, max_chunk=2)
    for _ in range(6):
        cache.update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    cache.recache(lambda pos, frame: (pos.float().view(1, 1, -1, 1).expand(1, 1, -1, 2) + 100, -pos.float().view(1, 1, -1, 1).expand(1, 1, -1, 2)))
    n = cache.length
    assert torch.equal(cache.k[0, 0, :n, 0], cache.pos[:n].float() + 100)  # sinks (pos 0, 1) refilled, not zeroed
    assert cache.pos[:2].tolist() == [0, 1]


def test_budget_errors_say_what_to_fix():
    cache = KVCache(Full(max_tokens=8), batch=1, kv_heads=1, head_dim=2, max_chunk=4)
    with pytest.raises(CacheBudgetError, match="max_chunk >= 5"):
        cache.update(torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
    for _ in range(3):
        cache.update(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))
    with pytest.raises(CacheBudgetError, match="longer than the policy's budget"):
        cache.update(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))
    with pytest.raises(ValueError, match="sinks < budget"):
        SinkWindowPolicy(8, 8)


def test_rope_matches_transformers_llama_rotary():
    """Same convention as transformers' Llama (rotate-half, not interleaved), and at least as accurate.

    transformers computes the angle ``position * inv_freq`` in float32, so at position 511 its cos/sin
    carry ~3e-5 of rounding; ours come from a float64 table. So: against a float64 evaluation of the
    formula ours must be tight, and against transformers loose enough for float32 angles but far
    tighter than any convention error (interleaving pairs or a wrong theta moves values by O(1)).
    """
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=100000.0, max_position_embeddings=512)
    pos = torch.tensor([[0, 1, 5, 300, 511]])
    x = torch.randn(1, 4, 5, 16, dtype=torch.float32, generator=torch.Generator().manual_seed(3))
    cos, sin = LlamaRotaryEmbedding(config)(x, pos)
    want, _ = apply_rotary_pos_emb(x, x, cos, sin)
    got = Rope(16, theta=100000.0).apply(x, pos[0])

    inv_freq = 1.0 / (100000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16))
    angle = torch.cat([pos[0, :, None].double() * inv_freq] * 2, dim=-1)
    x64 = x.double()
    rotated = torch.cat([-x64[..., 8:], x64[..., :8]], dim=-1)
    exact = x64 * angle.cos() + rotated * angle.sin()

    assert (got.double() - exact).abs().max() < 2e-6
    assert (got - want).abs().max() < 2e-4
    assert got.shape == want.shape


def test_rope_table_lookup_equals_direct_computation():
    rope = Rope(64, theta=1e5)
    for positions in (torch.tensor([0, 5, 1023, 1024, 70000]), torch.arange(3000), torch.tensor([200_000, 3]), torch.tensor([-2, 4])):
        cos, sin = rope.cos_sin(positions)
        want_cos, want_sin = rope._direct(positions)
        assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin)


def test_rope_attention_is_invariant_to_a_global_shift():
    q, k, v = qkv(20, seed=9)
    pos = torch.arange(20)
    base = attend(ROPE.apply(q, pos), ROPE.apply(k, pos), v, backend="reference")
    shifted = attend(ROPE.apply(q, pos + 1000), ROPE.apply(k, pos + 1000), v, backend="reference")
    assert torch.allclose(base, shifted, atol=1e-10)


def test_pre_rope_storage_avoids_the_bf16_rerotation_drift():
    """Why keys are cached before RoPE: rotating stored raw keys once is exact to bf16 rounding;
    re-rotating rotated bf16 keys one step at a time (post-RoPE caches) drifts (brief §6)."""
    rope = Rope(64, theta=1e5)
    g = torch.Generator().manual_seed(0)
    raw = (torch.randn(1, 1, 8, 64, generator=g, dtype=torch.float64) * 1.3).clamp(-4, 4)
    want = rope.apply(raw, torch.full((8,), 300))
    pre_rope = rope.apply(raw.bfloat16(), torch.full((8,), 300)).double()
    drifting = rope.apply(raw.bfloat16(), torch.full((8,), 1000))
    for _ in range(700):
        drifting = rope.apply(drifting, torch.full((8,), -1))
    pre_err, drift_err = (pre_rope - want).abs().max().item(), (drifting.double() - want).abs().max().item()
    assert pre_err < 0.05 and drift_err > 20 * pre_err


# ---------------------------------------------------------------- chunked prefill ------------

# Scoring policies (ParticipativeCompression, HeavyHitters) select once per update, so a chunk and
# its tokens fed one by one keep different sets by design (Deep Forcing compresses per chunk); their
# chunks are checked against the streaming attention in tests/streaming/test_hf_cache.py instead.
CHUNK_POLICIES = [
    SinkWindowPolicy(4, 12, reposition="cache"),
    SinkWindowPolicy(4, 12, reposition="absolute"),
    SinkWindowPolicy(0, 9, reposition="cache"),
    Ring(3, 11),
    Ring(3, 11, reposition="cache"),
    FrameSink(tokens_per_frame=3, sink_frames=1, window_frames=3),
    DeepSink(tokens_per_frame=2, sink_frames=2, window_frames=4),
    Full(max_tokens=80),
]


@pytest.mark.parametrize("chunk", [7, 64])
@pytest.mark.parametrize("policy", CHUNK_POLICIES, ids=repr)
def test_chunked_prefill_equals_token_by_token_at_in_cache_and_absolute_positions(policy, chunk):
    """Every query of a chunk gets the keys and the RoPE positions it would have had fed one token
    at a time: in-cache numbering is per query (a sink's distance to the query does not grow
    along the chunk), stream positions are stream positions. Frame policies attend within a whole
    frame, so their unit is a frame: chunks of whole frames against one frame at a time."""
    unit = getattr(policy, "tokens_per_frame", 1)
    chunk = max(unit, chunk // unit * unit)
    q, k, v = qkv(78, seed=chunk)
    one_by_one, _ = stream(policy, q, k, v, unit)
    chunked, _ = stream(policy, q, k, v, chunk)
    assert torch.allclose(chunked, one_by_one, atol=1e-12)


def test_one_shared_in_cache_numbering_for_a_whole_chunk_would_be_wrong():
    """The mistake the chunk test catches: numbering the chunk's keys once and giving its queries
    consecutive positions after them moves the sinks away from the later queries."""
    policy = SinkWindowPolicy(4, 12, reposition="cache")
    q, k, v = qkv(40, seed=1)
    one_by_one, _ = stream(policy, q, k, v, 1)
    cache = KVCache(policy, batch=B, kv_heads=HKV, head_dim=D, max_chunk=8, dtype=k.dtype)
    outs = []
    for s in range(0, 40, 8):
        view = cache.update(k[:, :, s : s + 8], v[:, :, s : s + 8])
        kv_rope, q_rope = cache.rope_positions(view)  # one numbering for all 8 queries
        outs.append(attend(ROPE.apply(q[:, :, s : s + 8], q_rope), ROPE.apply(view.k, kv_rope), view.v, policy.mask(),
                           q_pos=view.q_pos, kv_pos=view.kv_pos, backend="reference"))
    shared = torch.cat(outs, dim=2)
    assert torch.allclose(shared[:, :, :13], one_by_one[:, :, :13], atol=1e-12)  # the same until eviction starts
    assert (shared - one_by_one).abs().max() > 1e-3


# ---------------------------------------------------------------- compression policies -------


def test_participative_compression_realigns_kept_frames_to_contiguous_positions():
    """After compression the kept frames are renumbered without gaps (Deep Forcing's re-rotation):
    the cache's attention equals attention recomputed here with keys rotated to those positions."""
    policy = ParticipativeCompression(tokens_per_frame=2, budget_frames=4, recent_frames=1, sink_frames=1)
    cache = KVCache(policy, batch=B, kv_heads=HKV, head_dim=D, max_chunk=2)
    q, k, v = qkv(20, seed=11)
    for s in range(0, 18, 2):
        cache.update(k[:, :, s : s + 2], v[:, :, s : s + 2])
        cache.score[: cache.length] += torch.linspace(1.0, 0.0, cache.length, dtype=torch.float32)  # older frames weigh more
    kept_frames = torch.unique(cache.pos[: cache.length] // 2).tolist()
    assert kept_frames != list(range(kept_frames[0], kept_frames[0] + len(kept_frames)))  # compression left gaps
    out = cache.attend(q[:, :, 18:20], k[:, :, 18:20], v[:, :, 18:20], rope=ROPE, backend="reference")
    assert torch.allclose(out, attention_at_contiguous_frames(cache, q[:, :, 18:20]), atol=1e-10)
    unaligned = ParticipativeCompression(tokens_per_frame=2, budget_frames=4, recent_frames=1, sink_frames=1, realign=False)
    pos = cache.pos[: cache.length]
    assert unaligned.rope_positions(pos, pos[-2:], None)[0].tolist() == pos.tolist()


def test_heavy_hitters_keep_the_recent_tokens_and_the_most_attended_older_ones():
    from shared.streaming import HeavyHitters

    policy = HeavyHitters(budget=6, recent=2, sinks=1)
    pos = torch.arange(10)
    score = torch.tensor([0.0, 5.0, 0.1, 7.0, 0.2, 3.0, 0.3, 0.0, 9.0, 9.0])
    keep = policy.select(SlotMeta(pos, pos, pos < 1, score), incoming=1)
    assert pos[keep].tolist() == [0, 1, 3, 5, 8, 9]  # sink 0, heavy 3, 1, 5, recent 8, 9
    tie = policy.select(SlotMeta(pos, pos, pos < 1, torch.zeros(10)), incoming=1)
    assert pos[tie].tolist() == [0, 5, 6, 7, 8, 9]  # equal mass: the newer tokens
    with pytest.raises(ValueError, match="room for heavy hitters"):
        HeavyHitters(budget=4, recent=3, sinks=1)


@pytest.mark.parametrize("policy", [Full(64), SinkWindowPolicy(2, 9), FrameSink(3, 1, 3), DeepSink(3, 2, 2), Ring(2, 9)],
                         ids=["full", "sink_window", "frame_sink", "deep_sink", "ring"])
def test_peek_sees_what_update_would_and_writes_nothing(policy):
    """Few-step video diffusion attends each denoising step with ``peek`` and writes once with
    ``update``: both must show the chunk the same keys, and peek must leave the cache untouched."""
    torch.manual_seed(0)
    cache = KVCache(policy, batch=1, kv_heads=2, head_dim=4, max_chunk=6)
    for _ in range(5):
        cache.update(*torch.randn(2, 1, 2, 6, 4))
        k, v = torch.randn(2, 1, 2, 6, 4)
        state = [t.clone() for t in (cache.k, cache.v, cache.pos, cache.frame, cache.pinned)] + [cache.length, cache.next_pos]
        seen = cache.peek(k, v)
        after = [t.clone() for t in (cache.k, cache.v, cache.pos, cache.frame, cache.pinned)] + [cache.length, cache.next_pos]
        assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(state, after))
        twin = copy.deepcopy(cache)
        written = twin.update(k, v)
        filled = written.kv_pos >= 0
        order = torch.argsort(written.kv_pos[filled])
        assert torch.equal(seen.kv_pos, written.kv_pos[filled][order]) and torch.equal(seen.q_pos, written.q_pos)
        assert torch.equal(seen.k, written.k[:, :, filled][:, :, order]) and torch.equal(seen.v, written.v[:, :, filled][:, :, order])


def test_adaptive_sink_replaces_the_least_similar_sink_by_the_new_frame():
    """StreamDiffusionV2's adaptive sink, one token per frame: sinks e1, e2; a frame near e1 is
    below 0.2 cosine to e2, so frame 1 stops being a sink and the new frame takes its place; the next
    similar frame replaces nothing; the unpinned sink leaves with the window."""
    policy = AdaptiveFrameSink(tokens_per_frame=1, sink_frames=2, window_frames=2, threshold=0.2)
    cache = KVCache(policy, batch=1, kv_heads=1, head_dim=2, max_chunk=1, dtype=torch.float64)
    key = lambda x, y: torch.tensor([x, y], dtype=torch.float64).view(1, 1, 1, 2)  # noqa: E731
    for x, y in ((1, 0), (0, 1)):
        cache.update(key(x, y), key(x, y))
    assert cache.pinned[: cache.length].tolist() == [True, True]
    cache.update(key(1, 0.05), key(1, 0.05))  # cos to frame 0: 0.999, to frame 1: 0.05
    assert dict(zip(cache.frame[: cache.length].tolist(), cache.pinned[: cache.length].tolist())) == {0: True, 1: False, 2: True}
    cache.update(key(1, 0.1), key(1, 0.1))  # similar to both sinks: no change; frame 1 is still the window's newest other frame
    assert dict(zip(cache.frame[: cache.length].tolist(), cache.pinned[: cache.length].tolist())) == {0: True, 1: False, 2: True, 3: False}
    cache.update(key(-1, 0.02), key(-1, 0.02))  # opposite to both: the least similar of the two goes
    sims = {0: -1.0, 2: float(torch.nn.functional.cosine_similarity(torch.tensor([1, 0.05]), torch.tensor([-1, 0.02]), dim=0))}
    survivor = max(sims, key=sims.get)
    assert dict(zip(cache.frame[: cache.length].tolist(), cache.pinned[: cache.length].tolist())) == {survivor: True, 3: False, 4: True}
    mixed = KVCache(policy, batch=1, kv_heads=1, head_dim=2, max_chunk=1, dtype=torch.float64)
    for x, y in ((1, 0), (0, 1)):
        mixed.update(key(x, y), key(x, y))
    mixed.update(key(1, 0.05), key(0.05, 1))  # keys like sink 0, values like sink 1: both average about 0.52, no replacement
    assert mixed.pinned[: mixed.length].tolist() == [True, True, False]
    two = KVCache(policy, batch=1, kv_heads=1, head_dim=2, max_chunk=2, dtype=torch.float64)
    two.update(torch.cat([key(1, 0), key(0, 1)], 2), torch.cat([key(1, 0), key(0, 1)], 2))
    two.update(torch.cat([key(1, 0.1), key(1, 0)], 2), torch.cat([key(1, 0.1), key(1, 0)], 2))  # a 2-frame chunk: its mean decides, its last frame pins
    assert dict(zip(two.frame[: two.length].tolist(), two.pinned[: two.length].tolist())) == {0: True, 1: False, 2: False, 3: True}


def test_adaptive_sink_that_never_fires_is_a_frame_sink_and_streams_exactly():
    """Threshold below any cosine: the same outputs as FrameSink; with a threshold that always fires,
    every step's output equals attention over the original keys and values of exactly the kept
    positions (the cache holds what it says it holds), in float64."""
    q, k, v = qkv(36, seed=3)
    never = AdaptiveFrameSink(tokens_per_frame=3, sink_frames=1, window_frames=3, threshold=-2.0)
    got, _ = stream(never, q, k, v, 3)
    assert torch.allclose(got, stream(FrameSink(3, 1, 3), q, k, v, 3)[0], atol=1e-12)
    always = AdaptiveFrameSink(tokens_per_frame=3, sink_frames=1, window_frames=3, threshold=2.0)
    cache = KVCache(always, batch=B, kv_heads=HKV, head_dim=D, max_chunk=3, dtype=torch.float64)
    sinks = []
    for s in range(0, 36, 3):
        view = cache.update(k[:, :, s : s + 3], v[:, :, s : s + 3])
        out = cache.attend_view(q[:, :, s : s + 3], view, ROPE, backend="reference")
        kept, q_pos = view.kv_pos, view.q_pos
        qr = ROPE.apply(q[:, :, s : s + 3], q_pos).unflatten(1, (HKV, H // HKV))  # query heads grouped by their key head
        logits = qr @ ROPE.apply(k[:, :, kept], kept).unsqueeze(2).transpose(-1, -2) / D**0.5
        logits = logits + torch.where(kept[None, :] // 3 <= q_pos[:, None] // 3, 0.0, float("-inf"))  # full inside a frame, causal across
        assert torch.allclose(out, (torch.softmax(logits, dim=-1) @ v[:, :, kept].unsqueeze(2)).flatten(1, 2), atol=1e-12)
        sinks.append(sorted(cache.frame[: cache.length][cache.pinned[: cache.length]].unique().tolist()))
    assert sinks[0] == [0] and sinks[-1] == [11] and all(len(x) == 1 for x in sinks)  # the newest frame always takes the one sink
