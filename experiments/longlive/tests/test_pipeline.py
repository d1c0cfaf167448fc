"""StreamDiffusionV2's pipeline: the host's blocks over gloo ranks give every stream exactly the
single-process frames (float64), for 2 and 3 ranks and a cache policy that evicts; the split covers
every block once; the model's four parts are its forward."""

import numpy as np
import pytest
import torch

from shared.errors import ConfigError
from shared.streaming import FrameSink

from ..model import CachedAttention, new_caches
from ..pipeline import pipelined, stage_layers
from .test_stream import CFG, trained_looking


@pytest.mark.parametrize("depth, ranks", [(4, 2), (4, 3), (5, 2), (3, 3)])
def test_the_stages_cover_every_block_once_in_order(depth, ranks):
    layers = [i for r in range(ranks) for i in stage_layers(depth, ranks, r)]
    assert layers == list(range(depth)) and all(len(stage_layers(depth, ranks, r)) for r in range(ranks))
    with pytest.raises(ConfigError, match="cannot split"):
        stage_layers(depth, depth + 1, 0)


def test_the_models_parts_are_its_forward():
    model = trained_looking(1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, CFG.chunk, 3, CFG.size, CFG.size, generator=g, dtype=torch.float64)
    sigma, text = torch.rand(2, CFG.chunk, generator=g, dtype=torch.float64), torch.tensor([[1, 7, 2, 8], [3, 9, 0, 0]])
    policy = FrameSink(CFG.tokens_per_frame, sink_frames=1, window_frames=2)
    whole = model(x, sigma, text, CachedAttention(new_caches(CFG, policy, 2, torch.float64), CFG.rope(), write=False))
    attention = CachedAttention(new_caches(CFG, policy, 2, torch.float64), CFG.rope(), write=False)
    cond, words = model.conditioning(sigma, text, torch.float64)
    h = model.run_blocks(model.embed(x), cond, words, attention, range(0, 1))
    parts = model.head(model.run_blocks(h, cond, words, attention, range(1, CFG.depth)), cond)
    assert torch.equal(parts, whole)


@pytest.mark.parametrize("ranks, streams", [(2, 3), (3, 2)])
def test_the_pipeline_over_gloo_ranks_gives_every_stream_the_single_process_frames(ranks, streams):
    """Three streams through 2 ranks (and two through 3, a depth-2 host cannot split in 3: depth 3
    here), 4 chunks each under a sink + window policy that evicts, float64: equal to one process."""
    from dataclasses import replace

    from ..model import CausalVideoDiT

    cfg = replace(CFG, depth=3)
    torch.manual_seed(0)
    model = CausalVideoDiT(cfg).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("ada.weight", "ada.bias", "ada_out.weight", "patch_out.weight")):
                param.normal_(0, 0.2)
    model.eval()
    policy = FrameSink(cfg.tokens_per_frame, sink_frames=1, window_frames=2)
    text = torch.tensor([[1, 7, 2, 8], [3, 9, 0, 0], [4, 7, 5, 8]])[:streams]
    _, single = pipelined(model, policy, text, chunks=4, ranks=1, seed=5)
    timing, split = pipelined(model, policy, text, chunks=4, ranks=ranks, seed=5)
    assert split.shape == (streams, 4 * cfg.chunk, 3, cfg.size, cfg.size) and split.dtype == torch.float64
    assert torch.allclose(split, single, atol=1e-12, rtol=0)
    assert not torch.allclose(split[0], split[1])  # streams are distinct (own prompt and noise)
    assert timing.frames == streams * 4 * cfg.chunk and len(timing.chunk_ms) == streams * 4


def test_the_tool_times_one_and_two_ranks_on_one_thread_each_and_refuses_bad_widths(tmp_path, capsys):
    """The tool's rows (an untrained wider host, timing only) say what was timed and that the frames
    agree; the single process runs on one thread, as each rank does, and gives the threads back."""
    import json

    from ..pipeline import main

    threads = torch.get_num_threads()
    args = ["--ranks", "1", "2", "--streams", "2", "--chunks", "2", "--width", "32", "--repeats", "2", "--json", str(tmp_path / "p.json")]
    assert main(args) == 0
    assert torch.get_num_threads() == threads
    out = json.loads((tmp_path / "p.json").read_text())
    rows = out["rows"]
    assert [(r["ranks"], r["repeat"]) for r in rows] == [(1, 0), (2, 0), (1, 1), (2, 1)] and all(r["width"] == 32 and not r["trained"] for r in rows)
    assert rows[0]["max_difference_to_first"] == 0 and max(r["max_difference_to_first"] for r in rows) < 1e-4
    assert all(r["fps"] > 0 and r["frames"] == 2 * 2 * 2 for r in rows)
    ratio = [rows[1]["fps"] / rows[0]["fps"], rows[3]["fps"] / rows[2]["fps"]]
    assert out["paired"]["2 / 1 ranks"]["fps"] == pytest.approx([np.mean(ratio), abs(ratio[0] - ratio[1]) / 2])
    assert out["provenance"]["command"][-len(args):] == args and "commit" in out["provenance"]
    before = (tmp_path / "p.json").read_bytes()
    assert main(args) == 2 and (tmp_path / "p.json").read_bytes() == before  # a published result is not overwritten
    assert main(["--width", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # one line each, no traceback
    assert len(err) == 2 and "exists; choose another --json" in err[0] and "multiple of 16" in err[1]
