"""Samplers: the frame-sink KV cache equals recomputing the memory from the frames the policy keeps,
clips are independent, the cost columns count what runs."""

import pytest
import torch

from ..model import DiTConfig, StreamDiT
from ..sample import FrameSinkMemory, evaluations_per_frame, generate_clips, stream
from ..schedule import Partition, StreamQueue

CFG = DiTConfig(channels=3, frames=4, height=4, width=4, patch=2, dim=16, depth=2, heads=2, window=(2, 2, 2), vocab=16, text_len=2)


def random_model(seed=0) -> StreamDiT:
    torch.manual_seed(seed)
    model = StreamDiT(CFG).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def noise_source(seed):
    g = torch.Generator().manual_seed(seed)
    return g, (lambda shape: torch.randn(shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("sink, window, c", [(1, 2, 2), (2, 1, 1), (1, 3, 1)])
def test_frame_sink_cache_equals_recomputing_memory_from_the_kept_frames(sink, window, c):
    """Reference: after each emission, the memory is the first ``sink`` frames plus the last
    ``window - 1`` older frames plus the incoming chunk, run through ``memory_kv`` from scratch."""
    model = random_model()
    text = torch.tensor([[1, 5], [2, 9]])
    part = Partition.for_buffer(CFG.frames, c, s=2)
    frames = 14
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, CFG.frames, 3, 4, 4, generator=g, dtype=torch.float64)

    # the streaming path under test, with its own generator replaying the same noise
    torch.manual_seed(0)
    got = _stream_with_noise(model, text, part, frames, FrameSinkMemory(sink, window), x0)

    emitted: list[torch.Tensor] = []

    def velocity(x, tau):
        if not emitted:
            return model(x, tau, text)
        past = torch.cat(emitted, dim=1)
        n = past.shape[1]
        newest = list(range(max(sink, n - c - (window - 1)), n))
        keep = sorted(set(range(min(sink, n))) | set(newest))
        return model(x, tau, text, past[:, keep])

    _, noise = noise_source(11)
    queue = StreamQueue.start(velocity, part, x0.clone(), noise=noise)
    while queue.emitted < frames:
        chunk = queue.step(velocity)
        if chunk is not None:
            emitted.append(chunk)
    want = torch.cat(emitted, dim=1)[:, :frames]
    assert torch.allclose(got, want, atol=1e-10)
    no_memory = _stream_with_noise(model, text, part, frames, None, x0)
    assert not torch.allclose(got, no_memory, atol=1e-6)  # the memory is read


def _stream_with_noise(model, text, part, frames, memory, x0):
    """``stream`` with its start noise replaced by ``x0`` and the queue noise from seed 11."""
    from .. import sample

    original = sample._noise
    first = {"done": False}
    _, fresh = noise_source(11)

    def patched(generator, dtype, device):
        def draw(shape):
            if not first["done"]:
                first["done"] = True
                return x0.clone()
            return fresh(shape)
        return draw

    sample._noise = patched
    try:
        return stream(model, text, part, frames, generator=torch.Generator(), memory=memory)
    finally:
        sample._noise = original


def test_independent_clips_have_buffer_length_and_a_fixed_seed_repeats():
    model = random_model().float()
    text = torch.tensor([[1, 5]])
    a = generate_clips(model, text, 10, steps=3, generator=torch.Generator().manual_seed(0))
    b = generate_clips(model, text, 10, steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 10, 3, 4, 4) and torch.equal(a, b)
    assert not torch.allclose(a[:, :2], a[:, 4:6])  # the second clip starts from new noise


def test_a_partition_for_another_buffer_is_a_clear_error():
    with pytest.raises(ValueError, match="differs from the model's 4 frames"):
        stream(random_model(), torch.tensor([[1, 2]]), Partition.for_buffer(8, 2), 4)


def test_cost_columns():
    assert evaluations_per_frame("clips", None, 32, 2.0, 16, False) == (64, 4.0)
    assert evaluations_per_frame("stream", Partition.for_buffer(16, 1, 2), 0, 2.0, 16, False) == (64, 4.0)
    assert evaluations_per_frame("stream", Partition.for_buffer(16, 2, 1), 0, 1.0, 16, False) == (8, 0.5)  # the student: N levels
    assert evaluations_per_frame("stream", Partition.for_buffer(16, 2, 1), 0, 1.0, 16, True) == (8, 0.5625)
