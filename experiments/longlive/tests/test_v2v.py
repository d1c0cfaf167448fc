"""StreamDiffusionV2's video-to-video path and motion-aware noise controller: strength 1 is text-to-video
exactly, a small strength keeps the source, per-stream strengths are each stream's own; the
controller's formula in float64; the edit metrics on the ground truth; the tool end to end."""

import json

import numpy as np
import pytest
import torch

from shared.errors import ConfigError
from shared.procedural import Reference, make_clip, recoloured
from shared.streaming import FrameSink

from ..stream import Stream, sigmas_for
from ..v2v import Fixed, MotionController, chunk_motion, main, score_edit
from .test_stream import CFG, trained_looking

TEXT = torch.tensor([[1, 7, 2, 8], [3, 9, 0, 0]])


def stream(model, seed: int = 3) -> Stream:
    return Stream(model, FrameSink(CFG.tokens_per_frame, sink_frames=1, window_frames=2), batch=2,
                  generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def source(seed: int = 4) -> torch.Tensor:
    return torch.randn(2, CFG.chunk, 3, CFG.size, CFG.size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_strength_one_is_text_to_video_and_a_small_strength_keeps_the_source():
    model = trained_looking(1)
    t2v, v2v = stream(model), stream(model)
    for _ in range(3):  # through the cache: later chunks attend to the earlier outputs
        a = t2v.next_chunk(TEXT)
        b = v2v.next_chunk(TEXT, source=source(), strength=torch.ones(2, dtype=torch.float64))
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    keep = stream(model).next_chunk(TEXT, source=source(), strength=torch.full((2,), 1e-4, dtype=torch.float64))
    assert (keep - source()).abs().max() < 1e-2 and not torch.equal(keep, source())


def test_each_stream_gets_its_own_strength():
    model = trained_looking(2)
    strength = torch.tensor([0.72, 0.79], dtype=torch.float64)
    s = stream(model)
    assert [float(v) for v in s.v2v_levels(strength)[1:]] == [sigma for sigma in sigmas_for() if sigma < 0.72]
    straddling = torch.tensor([0.72, 0.9], dtype=torch.float64)  # 0.833 lies between: below only one stream's strength
    assert [float(v) for v in s.v2v_levels(straddling)[1:]] == [sigma for sigma in sigmas_for() if sigma < 0.72]
    mixed = s.next_chunk(TEXT, source=source(), strength=strength)
    for i in range(2):  # the same noise draws, one strength for both streams: stream i's row matches
        alone = stream(model).next_chunk(TEXT, source=source(), strength=torch.full((2,), float(strength[i]), dtype=torch.float64))
        assert torch.allclose(mixed[i], alone[i], atol=1e-12, rtol=0)
    assert not torch.allclose(mixed[0], stream(model).next_chunk(TEXT, source=source(), strength=strength.flip(0))[0])
    with pytest.raises(ValueError, match="strength"):
        s.v2v_levels(torch.tensor([0.0, 0.5], dtype=torch.float64))


def test_chunk_motion_is_the_largest_rms_step_including_the_frame_before():
    g = torch.Generator().manual_seed(5)
    frames = torch.randn(2, 3, 3, 5, 7, generator=g, dtype=torch.float64)
    before = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    seq = torch.cat([before[:, None], frames], 1)
    expected = torch.tensor([max(float((seq[b, f + 1] - seq[b, f]).pow(2).mean().sqrt()) for f in range(3)) for b in range(2)], dtype=torch.float64)
    assert torch.allclose(chunk_motion(frames, before), expected, atol=1e-12)
    still = frames[:, :1].expand(2, 3, 3, 5, 7)
    assert torch.equal(chunk_motion(still, None), torch.zeros(2, dtype=torch.float64))
    assert (chunk_motion(still, before) > 0).all()  # the step from the frame before counts


def test_the_controller_lowers_noise_with_motion_and_smooths_over_chunks():
    scale = 0.5
    c = MotionController(scale)
    base = torch.zeros(2, 2, 1, 2, 2, dtype=torch.float64)
    moving = base.clone()
    moving[0, 1] = 0.25  # rms step 0.25 = half the scale: d = 0.5
    moving[1, 1] = 3.0  # beyond the scale: d clamps to 1
    first = c(moving, None)
    assert torch.allclose(first, torch.tensor([0.9 * (0.8 - 0.05) + 0.1 * 0.8, 0.9 * (0.8 - 0.1) + 0.1 * 0.8], dtype=torch.float64), atol=1e-12)
    second = c(base, None)  # no motion: back towards s_init, 10 % of the previous strength kept
    assert torch.allclose(second, 0.9 * 0.8 + 0.1 * first, atol=1e-12)
    assert torch.equal(Fixed(0.75)(moving, None), torch.full((2,), 0.75, dtype=torch.float64))
    with pytest.raises(ConfigError):
        MotionController(0.0)
    with pytest.raises(ConfigError):
        Fixed(1.5)


def test_the_edit_metrics_on_the_ground_truth():
    """The input drawn in the edited colours scores an exact edit at its own positions; the unedited
    input scores no edit; an input shifted by 2 pixels scores about 2 pixels of position error."""
    ref = Reference.measure(16, 16, 2, 1.0, 1.3, False)
    clip = make_clip(np.random.default_rng(12), frames=8, size=16, objects=2, speed=1.0, scale=1.3, stripes=False)
    edited = make_clip(np.random.default_rng(12), frames=8, size=16, objects=2, speed=1.0, scale=1.3, stripes=False, colours=recoloured(clip.colours),
                       shapes=clip.shapes)
    good, unedited = score_edit(edited.video, clip, ref), score_edit(clip.video, clip, ref)
    assert good["edit"] == 1.0 and good["found"] > 0.9 and good["position_error"] < 0.5
    assert unedited["edit"] == 0.0
    shifted = np.full_like(edited.video, edited.video.min())
    shifted[..., 2:] = edited.video[..., :-2]  # 2 px to the right (objects near the right wall lose pixels)
    assert 1.5 < score_edit(shifted, clip, ref)["position_error"] < 2.5


def test_the_tool_writes_its_rows_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "v2v.json"
    assert main(["--clips", "2", "--seeds", "0", "--speeds", "2", "--frames", "12", "--fixed", "0.7", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"fixed:0.7", "matched", "motion", "motion_rolling", "motion_adaptive"} and result["motion_scale"] > 0
    assert result["provenance"]["command"][:4] == ["python", "-m", "experiments.longlive", "v2v"] and len(result["provenance"]["commit"]) == 40
    motion_mean = np.mean(result["rows"]["motion"]["2"]["strength"])
    assert result["matched_strength"] == pytest.approx(motion_mean) and result["rows"]["matched"]["2"]["strength"] == [pytest.approx(motion_mean)] * 2
    strengths = result["rows"]["motion"]["2"]["strength"]
    assert len(strengths) == 2 and all(0.7 <= s < 0.8 for s in strengths)  # fast clips: less noise than s_init
    assert {"motion - fixed:0.7 @ speed 2", "motion - matched @ every speed"} <= set(result["paired"])
    sinks, rolling = result["rows"]["motion"]["2"], result["rows"]["motion_rolling"]["2"]
    assert sinks["strength"] == rolling["strength"] and sinks["position_error"] != rolling["position_error"]  # 12 frames: the caches differ
    assert main(["--clips", "2", "--json", str(out)]) == 2  # never overwrites
    assert main(["--frames", "7"]) == 2
    assert "--frames must be a multiple" in capsys.readouterr().err
