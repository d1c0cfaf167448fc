"""The host streams exactly: chunk-by-chunk generation through the caches equals one recomputation
over the kept frames (float64), for every frame policy; the sampler and RoPE are pinned exactly."""

import math

import pytest
import torch

from shared.streaming import DeepSink, FrameSink, Full, ParticipativeCompression, Rope3D

from ..model import CachedAttention, CausalVideoDiT, DenseAttention, HostConfig, new_caches
from ..stream import Stream, sigmas_for

CFG = HostConfig(size=12, patch=4, chunk=2, dim=24, depth=2, heads=2, rope_bands=(4, 4, 4), text_len=4)  # 9 tokens per frame (odd grid)


def trained_looking(seed: int = 0) -> CausalVideoDiT:
    """The host with its zero-initialised gates and output layer randomised, so every path carries signal."""
    torch.manual_seed(seed)
    model = CausalVideoDiT(CFG).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("ada.weight", "ada.bias", "ada_out.weight", "patch_out.weight")):
                param.normal_(0, 0.2)
    return model.eval()


def visible(chunk_of_query: int, policy, chunk: int = CFG.chunk) -> list[int]:
    """The frames a chunk sees under a frame policy when it arrives: the kept frames and its own."""
    first = chunk_of_query * chunk
    own = list(range(first, first + chunk))
    if isinstance(policy, Full):
        return list(range(first)) + own
    sinks = list(range(min(policy.sink_frames, first)))
    recent = list(range(max(policy.sink_frames, first - (policy.window_frames - 1)), first))
    return sinks + recent + own


def recompute(model, text, policy, sigmas, noises, chunks):
    """Offline: chunk c's step i is one dense forward over [all earlier clean frames (sigma 0), the
    noisy chunk] under the static mask each chunk's arrival defines; the same noise draws."""
    tpf, c = CFG.tokens_per_frame, CFG.chunk
    frames, draws = [], iter(noises)
    for _ in range(chunks):
        x = next(draws)
        for i, sigma in enumerate(sigmas):
            seq = torch.cat([*frames, x], dim=1)
            n_frames = seq.shape[1]
            frame_of = torch.arange(n_frames * tpf) // tpf
            allowed = torch.zeros(n_frames, n_frames, dtype=torch.bool)
            for q in range(n_frames):
                allowed[q, visible(q // c, policy)] = True
            mask = allowed[frame_of][:, frame_of]
            level = torch.cat([torch.zeros(1, n_frames - c), torch.full((1, c), sigma)], dim=1).double()
            v = model(seq, level, text, DenseAttention(CFG.rope(), torch.arange(n_frames * tpf), mask))[:, -c:]
            x0 = x - sigma * v
            if i < len(sigmas) - 1:
                x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * next(draws)
        frames.append(x0)
    return torch.cat(frames, dim=1)


@pytest.mark.parametrize("policy", [Full(10_000), FrameSink(CFG.tokens_per_frame, sink_frames=2, window_frames=3),
                                    FrameSink(CFG.tokens_per_frame, sink_frames=1, window_frames=4)],
                         ids=["full", "sink2_window3", "sink1_window4"])
def test_the_cached_stream_equals_recomputation_over_the_kept_frames(policy):
    model = trained_looking()
    text = torch.tensor([[1, 7, 3, 8]])
    stream = Stream(model, policy, batch=1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    video = stream.generate(text, chunks=5)
    noises, g = [], torch.Generator().manual_seed(3)
    for _ in range(5 * len(stream.sigmas)):
        noises.append(torch.randn(1, CFG.chunk, 3, CFG.size, CFG.size, generator=g, dtype=torch.float64))
    offline = recompute(model, text, policy, stream.sigmas, noises, 5)
    assert video.shape == (1, 10, 3, CFG.size, CFG.size)
    assert torch.allclose(video, offline, atol=1e-10, rtol=0), float((video - offline).abs().max())
    if not isinstance(policy, Full):  # the window matters: a full-cache stream differs after the first eviction
        full = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(3), dtype=torch.float64).generate(text, chunks=5)
        first_evicting = next(c for c in range(5) if visible(c, policy) != visible(c, Full(1)))
        cut = first_evicting * CFG.chunk
        assert torch.allclose(video[:, :cut], full[:, :cut], atol=1e-10) and not torch.allclose(video[:, cut:], full[:, cut:], atol=1e-6)


def test_skipping_the_context_pass_would_change_the_stream():
    """The cache must hold the *clean* chunk's K/V: a stream whose caches kept the last denoising
    step's (noisy) keys would differ, so the context pass is not a no-op."""
    model = trained_looking(1)
    text = torch.tensor([[2, 8, 0, 0]])
    stream = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stream.next_chunk(text)
    clean_k = stream.caches[0].k[:, :, : stream.caches[0].length].clone()
    noisy = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = noisy.noise()
    model(x, noisy._sigma(1.0), text, CachedAttention(noisy.caches, noisy.rope, write=True))
    assert not torch.allclose(clean_k, noisy.caches[0].k[:, :, : noisy.caches[0].length], atol=1e-3)


def test_the_warped_schedule_is_self_forcings():
    assert sigmas_for(shift=5.0) == pytest.approx([1.0, 0.9375, 5 / 6, 0.625], abs=1e-12)
    assert sigmas_for(shift=8.0) == pytest.approx([1.0, 0.96, 8 / 9, 0.7272727], abs=1e-6)
    assert sigmas_for(shift=1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="decreasing"):
        sigmas_for((250, 500))


def test_the_exit_step_returns_that_steps_x0_and_only_it_carries_gradient():
    """Training runs the inference sampler: stopping at the last step gives the inference output;
    an earlier exit gives that step's x0, with gradient from that one forward only."""
    model = trained_looking(2)
    text = torch.tensor([[4, 9, 0, 0]])
    full = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = full.next_chunk(text)
    exit_last = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(exit_last.next_chunk(text, exit_step=3), out)
    early = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x0 = early.next_chunk(text, exit_step=1, grad=True)
    assert x0.requires_grad and not early.caches[0].k.requires_grad and not early.frames[0].requires_grad
    x0.square().sum().backward()
    rollout_grad = [p.grad.clone() for p in model.parameters()]
    assert rollout_grad[0].abs().sum() > 0
    # gradient locality: the same as re-running only the exit step's forward, from its (detached) input
    model.zero_grad()
    again = Stream(model, Full(10_000), batch=1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    peek = CachedAttention(again.caches, again.rope, write=False)
    with torch.no_grad():
        x = again.noise()
        x0_first = x - again.sigmas[0] * model(x, again._sigma(again.sigmas[0]), text, peek)
        x = (1 - again.sigmas[1]) * x0_first + again.sigmas[1] * again.noise()
    (x - again.sigmas[1] * model(x, again._sigma(again.sigmas[1]), text, peek)).square().sum().backward()
    for got, want in zip(rollout_grad, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, atol=1e-12)


def test_switch_modes_keep_clear_and_recache_every_kept_slot():
    model = trained_looking(3)
    old, new = torch.tensor([[1, 7, 0, 0]]), torch.tensor([[3, 8, 0, 0]])
    policy = FrameSink(CFG.tokens_per_frame, sink_frames=2, window_frames=3)

    def after_four_chunks():
        stream = Stream(model, policy, batch=1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        stream.generate(old, chunks=4)
        return stream

    stream = after_four_chunks()
    before = [c.k[:, :, : c.length].clone() for c in stream.caches]
    stream.switch(new, mode="recache")
    after = [c.k[:, :, : c.length] for c in stream.caches]
    assert stream.caches[0].length == 6 * CFG.tokens_per_frame  # sinks 0-1, frames 4-5 and the last chunk 6-7
    assert torch.allclose(before[0], after[0], atol=1e-12)  # layer 0's keys come before any cross-attention: the prompt cannot reach them
    per_slot_changed = (before[1] - after[1]).abs().amax(dim=(0, 1, 3)) > 1e-9
    assert per_slot_changed.all() and after[1].abs().amax(dim=(0, 1, 3)).min() > 0  # sinks too, and none zeroed (LongLive #20)

    kept = after_four_chunks()
    snapshot = [c.k.clone() for c in kept.caches]
    kept.switch(new, mode="keep")
    assert all(torch.equal(c.k, s) for c, s in zip(kept.caches, snapshot))

    cleared = after_four_chunks()
    cleared.switch(new, mode="clear")
    assert len(cleared.caches[0]) == 0 and cleared.caches[0].next_pos == 8 * CFG.tokens_per_frame
    cleared.next_chunk(new)  # positions go on: the next chunk is frames 8-9
    assert cleared.caches[0].pos[: cleared.caches[0].length].tolist() == list(range(8 * CFG.tokens_per_frame, 10 * CFG.tokens_per_frame))
    with pytest.raises(ValueError, match="keep, clear or recache"):
        cleared.switch(new, mode="forget")


def test_3d_rope_moves_only_the_temporal_band_and_equals_rotating_post_rope_keys():
    rope = Rope3D(head_dim=12, tokens_per_frame=9, width=3, bands=(4, 4, 4))
    k = torch.randn(2, 3, 18, 12, dtype=torch.float64)
    pos = torch.arange(18) + 9 * 5  # frames 5 and 6
    shifted = rope.apply(k, pos - 9 * 3)  # three frames earlier
    base = rope.apply(k, pos)
    assert torch.equal(shifted[..., 4:], base[..., 4:])  # rows and columns untouched
    assert not torch.allclose(shifted[..., :4], base[..., :4])
    # Deep Forcing's way: rotate the already rotated temporal band by exp(-i 3 omega) in float64
    omega = 1.0 / (10000.0 ** (torch.arange(0, 4, 2, dtype=torch.float64) / 4))
    angle = torch.cat([-3 * omega, -3 * omega])
    t = base[..., :4]
    rotated = t * angle.cos() + torch.cat([-t[..., 2:], t[..., :2]], dim=-1) * angle.sin()
    assert torch.allclose(rotated, shifted[..., :4], atol=1e-12)
    # the coordinates are (frame, row, column)
    assert rope.coordinates(torch.tensor([0, 5, 9 * 7 + 6])).tolist() == [[0, 0, 0], [0, 1, 2], [7, 2, 0]]


def test_deep_sink_attention_uses_realigned_sink_positions_exactly():
    """A chunk under DeepSink sees the sinks and the recent frames; the sink keys are rotated as if
    the sink frames sat just before the oldest kept frame (float64 reference written out here)."""
    tpf, heads, d = CFG.tokens_per_frame, CFG.heads, CFG.head_dim
    policy = DeepSink(tpf, sink_frames=2, window_frames=3)
    torch.manual_seed(0)
    caches = new_caches(CFG, policy, batch=1, dtype=torch.float64)
    stored = []
    for _ in range(4):  # four clean chunks written: frames 0..7
        k, v = torch.randn(2, 1, heads, CFG.chunk * tpf, d, dtype=torch.float64)
        stored.append((k, v))
        caches[0].update(k, v)
    q, k_new, v_new = torch.randn(3, 1, heads, CFG.chunk * tpf, d, dtype=torch.float64)
    out = CachedAttention(caches[:1], CFG.rope(), write=False)(0, q, k_new, v_new)
    keys = torch.cat([s[0] for s in stored] + [k_new], dim=2)
    values = torch.cat([s[1] for s in stored] + [v_new], dim=2)
    kept_frames = [0, 1, 6, 7, 8, 9]  # sinks 0-1, window 3 - 1 = 2 recent frames (6, 7), the chunk (8, 9)
    tokens = torch.cat([torch.arange(f * tpf, (f + 1) * tpf) for f in kept_frames])
    positions = tokens.clone()
    positions[: 2 * tpf] += (6 - 2) * tpf  # sinks moved to frames 4-5, right before frame 6
    rope = CFG.rope()
    logits = rope.apply(q, torch.arange(8 * tpf, 10 * tpf)) @ rope.apply(keys[:, :, tokens], positions).transpose(-1, -2) / math.sqrt(d)
    expected = torch.softmax(logits, dim=-1) @ values[:, :, tokens]
    assert torch.allclose(out, expected, atol=1e-12)


def test_participative_compression_keeps_the_frames_the_last_context_pass_attended_most():
    """At each context pass the chunk's queries' attention mass per cached slot becomes the score
    (brute force here in float64); the next chunk keeps the sink, the newest frame and the
    most-attended other frames up to the budget, and the kept frames are renumbered contiguously."""
    tpf, heads, d = CFG.tokens_per_frame, CFG.heads, CFG.head_dim
    policy = ParticipativeCompression(tpf, budget_frames=4, recent_frames=1, sink_frames=1)
    cache = new_caches(CFG, policy, batch=1, dtype=torch.float64)[0]
    write = CachedAttention([cache], CFG.rope(), write=True)
    torch.manual_seed(0)
    for _ in range(3):  # frames 0-5: six frames cached, over the budget of four
        q, k, v = torch.randn(3, 1, heads, CFG.chunk * tpf, d, dtype=torch.float64)
        write(0, q, k, v)
    keys = CFG.rope().apply(cache.k[:, :, : cache.length], cache.pos[: cache.length])
    probs = torch.softmax(CFG.rope().apply(q, cache.pos[4 * tpf : 6 * tpf]) @ keys.transpose(-1, -2) / math.sqrt(d), dim=-1)
    mass = probs.sum(dim=(0, 1, 2))
    assert torch.allclose(cache.score[: cache.length].double(), mass, atol=1e-5)
    per_frame = mass.reshape(6, tpf).sum(dim=1)
    top_two = sorted((1 + torch.argsort(per_frame[1:5], descending=True)[:2]).tolist())  # candidates: frames 1-4 (not the sink 0, not the newest 5)
    q, k, v = torch.randn(3, 1, heads, CFG.chunk * tpf, d, dtype=torch.float64)
    write(0, q, k, v)
    kept = torch.unique(cache.pos[: cache.length] // tpf).tolist()
    assert kept == [0, *top_two, 5, 6, 7]
    kv_rope, q_rope = policy.rope_positions(cache.pos[: cache.length], cache.pos[cache.length - CFG.chunk * tpf : cache.length], None)
    assert torch.equal(kv_rope, torch.arange(6 * tpf))  # kept frames renumbered 0..5, the gaps closed
