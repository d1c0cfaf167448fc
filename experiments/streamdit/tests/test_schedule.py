"""Brief test plan 10.1, 10.2, 10.5: partition algebra, buffered flow matching, the stream queue."""

import pytest
import torch

from ..schedule import (
    Partition,
    StreamQueue,
    euler_sample,
    make_xt,
    training_times,
    velocity_target,
)


def test_partition_algebra_and_bad_chunk_sizes():
    p = Partition.for_buffer(16, c=2, s=4)
    assert (p.K, p.N, p.c, p.s, p.B, p.T) == (0, 8, 2, 4, 16, 32)
    assert Partition.for_buffer(7, c=3, s=8, K=1).N == 2
    with pytest.raises(ValueError, match="must divide"):
        Partition.for_buffer(16, c=3)
    with pytest.raises(ValueError, match="N, c, s >= 1"):
        Partition(0, 0, 2, 1)


@pytest.mark.parametrize("N, c, K", [(1, 8, 0), (4, 2, 0), (8, 1, 0), (2, 3, 1)])
def test_training_times_lie_in_their_bands_and_chunks_share_one(N, c, K):
    p = Partition(K, N, c, 1)
    tau = training_times(p, 1000, torch.Generator().manual_seed(0))
    assert tau.shape == (1000, p.B) and (tau[:, :K] == 1).all()
    chunks = tau[:, K:].reshape(1000, N, c)
    assert (chunks == chunks[:, :, :1]).all()
    for j in range(N):  # head (j = 0) is the cleanest band
        lo, hi = (N - 1 - j) / N, (N - j) / N
        assert (chunks[:, j, 0] >= lo).all() and (chunks[:, j, 0] <= hi).all()
        assert chunks[:, j, 0].max() - chunks[:, j, 0].min() > 0.9 / N  # the whole band is used
    assert (chunks[:, :-1, 0] >= chunks[:, 1:, 0]).all()  # monotone: cleaner towards the head


def test_buffered_interpolation_is_standard_flow_matching_per_frame():
    g = torch.Generator().manual_seed(1)
    x1, x0 = torch.randn(2, 5, 3, 4, 4, generator=g), torch.randn(2, 5, 3, 4, 4, generator=g)
    tau = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0], [0.3] * 5])
    xt = make_xt(x1, x0, tau, sigma_min=1e-5)
    for b in range(2):
        for f in range(5):
            t = float(tau[b, f])
            assert torch.allclose(xt[b, f], t * x1[b, f] + (1 - (1 - 1e-5) * t) * x0[b, f])
    assert torch.equal(make_xt(x1, x0, torch.ones(2, 5)), x1) and torch.equal(make_xt(x1, x0, torch.zeros(2, 5)), x0)
    # the target is the straight path's velocity: x1 = x0 + target over unit time
    assert torch.allclose(x0 + velocity_target(x1, x0), x1, atol=1e-6)


def toy_velocity(x, tau):
    """A velocity that depends non-linearly on the state and on each frame's own time."""
    t = tau.reshape(*tau.shape, *([1] * (x.dim() - 2)))
    return torch.tanh(x) * (1 + t) - 0.3 * x.roll(1, dims=1) * t


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_one_chunk_spanning_the_buffer_is_the_ordinary_sampler_bit_for_bit(power):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 6, 3, 5, generator=g)
    p = Partition.for_buffer(6, c=6, s=7)  # N = 1: uniform generation with 7 steps
    queue = StreamQueue.start(toy_velocity, p, x0, power=power)
    out = [queue.step(toy_velocity) for _ in range(7)]
    assert all(o is None for o in out[:-1])
    assert torch.equal(out[-1], euler_sample(toy_velocity, x0, 7, power=power))
    if power != 1.0:
        assert not torch.allclose(out[-1], euler_sample(toy_velocity, x0, 7))  # the schedule matters


@pytest.mark.parametrize("K, N, c, s", [(0, 4, 1, 2), (0, 2, 2, 4), (1, 1, 3, 8), (0, 3, 2, 1)])
def test_stream_emits_in_order_at_tau_one_with_a_constant_shape(K, N, c, s):
    """Brief figure 13 configurations: after each emission the levels are back to the partition's
    pattern, every chunk is emitted after exactly s steps, shapes never change, and each emitted
    frame has passed every level from its start to T."""
    p = Partition(K, N, c, s)
    x0 = torch.randn(1, p.B, 2, 3, generator=torch.Generator().manual_seed(3))
    queue = StreamQueue.start(toy_velocity, p, x0)
    pattern = queue.levels.clone()
    assert pattern[:K].eq(p.T).all() and [int(pattern[K + j * c]) for j in range(N)] == [(N - 1 - j) * s for j in range(N)]
    emitted_steps, seen_tau = [], []
    for step in range(1, 5 * s + 1):
        seen_tau.append(queue.tau[0].clone())
        references = queue.x[:, :K].clone()
        out = queue.step(toy_velocity)
        assert queue.x.shape == x0.shape
        if K and out is None:  # clean reference frames (tau = 1) are held, not integrated further
            assert torch.equal(queue.x[:, :K], references) and queue.levels[:K].eq(p.T).all()
        if out is not None:
            emitted_steps.append(step)
            assert out.shape == (1, c, 2, 3) and torch.isfinite(out).all()
            assert torch.equal(queue.levels, pattern)
            if K:  # references are the last emitted frames
                assert torch.equal(queue.x[:, :K], out[:, -K:])
    assert emitted_steps == [s * k for k in range(1, 6)] and queue.emitted == 5 * c
    assert max(float(t.max()) for t in seen_tau) <= 1.0


def test_fresh_frames_start_from_noise_and_the_noise_is_used_once():
    p = Partition(0, 2, 1, 1)
    x0 = torch.randn(1, 2, 4)
    draws = []

    def noise(shape):
        draws.append(torch.full(shape, float(len(draws) + 10)))
        return draws[-1]

    queue = StreamQueue.start(lambda x, t: torch.zeros_like(x), p, x0, noise=noise)
    queue.step(lambda x, t: torch.zeros_like(x))
    assert torch.equal(queue.x[:, -1], draws[0][:, 0]) and int(queue.levels[-1]) == 0
