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


def _text_per_call(model, text, new_text, part, frames, at, memory=None):
    """Run a stream with a switch at ``at``; return, per call of the model (buffer forwards and
    memory encodings of an emitted chunk), the frames emitted before it and whether it saw the new
    text, and the video."""
    seen, emitted = [], [0]

    def recording(original):
        def call(x, tau_or_text, *rest):
            t = tau_or_text if len(rest) == 0 else rest[0]  # forward(x, tau, text, memory) / memory_kv(frames, text)
            seen.append((emitted[0], bool(torch.equal(t[: len(new_text)], new_text))))
            return original(x, tau_or_text, *rest)
        return call

    model.forward, model.memory_kv = recording(model.forward), recording(model.memory_kv)
    try:
        video = stream(model, text, part, frames, generator=torch.Generator().manual_seed(4), memory=memory,
                       on_chunk=lambda n: emitted.__setitem__(0, n), switch=(at, new_text) if at else None)
    finally:
        del model.forward, model.memory_kv
    return seen, video


@pytest.mark.parametrize("c, at, memory", [(1, 3, None), (2, 4, None), (1, 3, FrameSinkMemory(1, 2)), (2, 6, FrameSinkMemory(1, 3))])
def test_a_prompt_switch_takes_effect_after_the_chunk_that_reaches_its_frame(c, at, memory):
    """Every forward, and every memory encoding of a chunk, before ``at`` frames are out sees the old
    prompt, every one after the new; the frames before the switch are the no-switch stream's bit for
    bit, those after are not; a switch to the same prompt changes nothing."""
    model = random_model().float()
    text, new_text = torch.tensor([[1, 5], [2, 9]]), torch.tensor([[3, 5], [4, 9]])
    part = Partition.for_buffer(CFG.frames, c, s=2)
    seen, video = _text_per_call(model, text, new_text, part, 12, at, memory)
    assert all(new == (done >= at) for done, new in seen)
    assert any(new for _, new in seen) and any(not new for _, new in seen)
    _, plain = _text_per_call(model, text, text, part, 12, None, memory)
    assert torch.equal(video[:, :at], plain[:, :at]) and not torch.allclose(video[:, at:], plain[:, at:])
    _, same = _text_per_call(model, text, text, part, 12, at, memory)
    assert torch.equal(same, plain)


def test_a_prompt_switch_between_chunks_only():
    with pytest.raises(ValueError, match="multiple of c = 2"):
        stream(random_model(), torch.tensor([[1, 2]]), Partition.for_buffer(CFG.frames, 2, s=1), 8, switch=(3, torch.tensor([[3, 2]])))


@pytest.mark.parametrize("at", [4, 5])
def test_clips_take_a_switched_prompt_from_the_next_clip_that_starts_at_or_after_it(at):
    """Clips draw the same noise whatever the prompt, so a switched rollout is the old prompt's clips
    up to the first seam at or after ``at`` and the new prompt's from there."""
    model = random_model().float()
    text, new_text = torch.tensor([[1, 5]]), torch.tensor([[3, 5]])
    switched = generate_clips(model, text, 12, steps=3, generator=torch.Generator().manual_seed(0), switch=(at, new_text))
    old = generate_clips(model, text, 12, steps=3, generator=torch.Generator().manual_seed(0))
    new = generate_clips(model, new_text, 12, steps=3, generator=torch.Generator().manual_seed(0))
    seam = -(-at // CFG.frames) * CFG.frames
    assert torch.equal(switched[:, :seam], old[:, :seam]) and torch.equal(switched[:, seam:], new[:, seam:])
    assert not torch.allclose(old[:, seam:], new[:, seam:])
