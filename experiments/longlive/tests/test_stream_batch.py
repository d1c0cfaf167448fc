"""StreamDiffusionV2's stream batch: every chunk it emits is the sequential per-level sampler's (the same
noise draws, float64), the level caches hold what a dense recomputation at that level sees, rows move
one level per tick, and the tool runs end to end."""

import json

import pytest
import torch

from shared.streaming import FrameSink, Full

from ..model import DenseAttention
from ..stream import Stream, sigmas_for
from ..stream_batch import StreamBatch, fixed_levels, main, sequential_levels
from .test_stream import CFG, trained_looking, visible

TEXT = torch.tensor([[1, 7, 2, 8], [3, 9, 0, 0]])
LEVELS = [0.8, 0.625, 0.3]  # three rows: a middle row exists, so a row that skips a level is caught


def sources(chunks: int, seed: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, CFG.chunk, 3, CFG.size, CFG.size, generator=g, dtype=torch.float64) for _ in range(chunks)]


def policy():
    return FrameSink(CFG.tokens_per_frame, sink_frames=1, window_frames=3)  # evicts from the fourth chunk on


def run_batch(model, levels, srcs, strengths=None, seed=5):
    batch = StreamBatch(model, policy(), viewers=2, levels=levels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    emitted = []
    for c, src in enumerate(srcs):
        out = batch.push(TEXT, src, None if strengths is None else strengths[c])
        emitted.append(out)
    emitted += batch.flush(TEXT)
    return batch, emitted


def test_stream_batch_emits_the_sequential_per_level_samplers_chunks():
    model, srcs = trained_looking(3), sources(6)
    batch, emitted = run_batch(model, LEVELS, srcs)
    # the pipeline fills: nothing comes out for the first n - 1 pushes, then one chunk per push
    assert [e is None for e in emitted[: len(srcs)]] == [True] * (len(LEVELS) - 1) + [False] * (len(srcs) - len(LEVELS) + 1)
    reference = sequential_levels(model, policy(), 2, LEVELS, TEXT, srcs, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert batch.video().shape == reference.shape == (2, 6 * CFG.chunk, 3, CFG.size, CFG.size)
    assert torch.allclose(batch.video(), reference, atol=1e-12, rtol=0)
    # and it is not the Self Forcing sampler (clean context pass), which the student was trained with
    stream = Stream(model, policy(), batch=2, generator=torch.Generator().manual_seed(5), dtype=torch.float64, sigmas=sigmas_for())
    clean = torch.cat([stream.next_chunk(TEXT, source=s, strength=torch.full((2,), 0.8, dtype=torch.float64)) for s in srcs], dim=1)
    assert (clean - reference).abs().max() > 1e-3


def test_per_chunk_strengths_ride_with_their_chunk():
    model, srcs = trained_looking(4), sources(5, seed=6)
    strengths = [torch.tensor([0.7 + 0.05 * c, 0.95 - 0.04 * c], dtype=torch.float64) for c in range(5)]
    batch, _ = run_batch(model, LEVELS, srcs, strengths)
    reference = sequential_levels(model, policy(), 2, LEVELS, TEXT, srcs, strengths, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(batch.video(), reference, atol=1e-12, rtol=0)
    fixed, _ = run_batch(model, LEVELS, srcs)
    assert (fixed.video() - batch.video()).abs().max() > 1e-3
    with pytest.raises(ValueError, match="strength"):
        batch.push(TEXT, srcs[0], torch.tensor([0.6, 0.9], dtype=torch.float64))  # not above the second level
    # each viewer's strength is its own: viewer i at (0.72, 0.9) is the run with every viewer at viewer i's
    per_viewer, _ = run_batch(model, LEVELS, srcs, [torch.tensor([0.72, 0.9], dtype=torch.float64)] * 5)
    for i, s in enumerate((0.72, 0.9)):
        alone, _ = run_batch(model, [s, *LEVELS[1:]], srcs)
        assert torch.allclose(per_viewer.video()[i], alone.video()[i], atol=1e-12, rtol=0)


def test_a_chunk_enters_as_its_source_noised_to_the_first_level():
    """x = (1 - s) source + s noise: at tiny levels the emitted chunks are the source frames."""
    model, srcs = trained_looking(7), sources(4, seed=9)
    batch, _ = run_batch(model, [2e-4, 1e-4], srcs)
    assert (batch.video() - torch.cat(srcs, dim=1)).abs().max() < 5e-3


@pytest.mark.parametrize("make_policy", [lambda: Full(10_000), policy], ids=["full", "sink_window"])
def test_a_level_cache_holds_the_earlier_chunks_at_that_level(make_policy):
    """Chunk c's forward at level i equals one dense forward over every chunk's level-i input, each
    at level i, under the mask of what each chunk saw (every earlier frame under Full; sink +
    window otherwise): what a level cache holds is exactly those keys and values."""
    model, srcs, record = trained_looking(5), sources(5, seed=7), []
    sequential_levels(model, make_policy(), 2, LEVELS, TEXT, srcs, generator=torch.Generator().manual_seed(8), dtype=torch.float64, record=record)
    inputs = {(c, i): x for c, i, x, _ in record}
    outputs = {(c, i): x0 for c, i, _, x0 in record}
    tpf, ch = CFG.tokens_per_frame, CFG.chunk
    for c in (1, len(srcs) - 1):  # a chunk that sees everything, and one past the window's eviction
        chunks = range(c + 1)  # every chunk so far; the mask lets each query see what its chunk saw
        frames = [k * ch + j for k in chunks for j in range(ch)]
        allowed = torch.tensor([[kf in visible(qf // ch, make_policy()) for kf in frames] for qf in frames])
        token_frame = torch.arange(len(frames) * tpf) // tpf
        positions = torch.cat([torch.arange(f * tpf, (f + 1) * tpf) for f in frames])
        for i, level in enumerate(LEVELS):
            seq = torch.cat([inputs[(k, i)] for k in chunks], dim=1)  # every chunk shown, at this level
            v = model(seq, torch.full(seq.shape[:2], level, dtype=torch.float64), TEXT,
                      DenseAttention(CFG.rope(), positions, allowed[token_frame][:, token_frame]))[:, -ch:]
            assert torch.allclose(outputs[(c, i)], inputs[(c, i)] - level * v, atol=1e-10, rtol=0), (c, i)

def test_text_to_video_levels_and_bad_levels():
    sigmas = sigmas_for()
    assert fixed_levels(sigmas, 1.0) == sigmas
    assert fixed_levels(sigmas, 0.8) == [0.8, sigmas[-1]]
    model = trained_looking(6)
    t2v = StreamBatch(model, policy(), viewers=2, levels=sigmas, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for _ in range(4):
        t2v.push(TEXT)
    t2v.flush(TEXT)
    reference = sequential_levels(model, policy(), 2, sigmas, TEXT, [None] * 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.allclose(t2v.video(), reference, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="levels"):
        StreamBatch(model, policy(), viewers=2, levels=[0.5, 0.8])
    with pytest.raises(ValueError, match="first level must be 1"):
        StreamBatch(model, policy(), viewers=2, levels=[0.8, 0.5]).push(TEXT)


def test_the_tool_times_three_samplers_and_checks_the_batch(tmp_path, capsys):
    out = tmp_path / "sb.json"
    assert main(["--clips", "2", "--frames", "8", "--strengths", "0.8", "--viewers", "1", "2", "--seeds", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for setting in result["settings"].values():
        assert setting["max_abs_diff_stream_batch_vs_levels"] < 1e-4
        rows = setting["rows"]
        assert set(rows) == {"self_forcing", "levels", "stream_batch"}
        assert all(len(r["edit"]) == 2 for r in rows.values())
    assert "stream_batch / levels" in capsys.readouterr().out
    assert main(["--json", str(out)]) == 2  # refuses to overwrite
    assert main(["--viewers", "9", "--clips", "4"]) == 2
    assert "--viewers" in capsys.readouterr().err
