"""The detector metrics rank known-good and known-broken videos the way they promise."""

import numpy as np
import pytest

from shared.procedural.clips import make_clip
from shared.procedural.detector import Reference, aggregate, score_video


@pytest.fixture(scope="module")
def ref():
    return Reference.measure(size=16, frames=32, objects=2, speed=1.0, clips=32)


def clips(n=6, frames=48, seed=500):
    return [make_clip(np.random.default_rng(seed + i), frames=frames, size=16, objects=2) for i in range(n)]


def scores(ref, transform, seed=500):
    return aggregate([score_video(transform(c.video), c.colours, ref, 16) for c in clips(seed=seed)])


def test_real_clips_score_like_the_data(ref):
    s = scores(ref, lambda v: v, seed=800)  # seeds the reference never saw
    assert s["validity"] > 0.9 and 0.7 < s["dynamic"] < 1.3 and abs(s["drift"]) < 0.1 and s["jerk_px"] < 1.0


def test_a_frozen_video_has_no_dynamics_and_no_jerk(ref):
    s = scores(ref, lambda v: np.repeat(v[:1], len(v), axis=0))
    assert s["dynamic"] == 0 and s["jerk_px"] == 0 and s["drift"] == 0


def test_recoloured_greyed_and_noise_videos_are_invalid(ref):
    for transform in (lambda v: v[:, [1, 2, 0]], lambda v: np.repeat(v.mean(1, keepdims=True), 3, 1),
                      lambda v: np.random.default_rng(0).uniform(-1, 1, v.shape).astype(np.float32)):
        assert scores(ref, transform)["validity"] < 0.4


def test_objects_fading_out_is_drift(ref):
    def fade(v):
        out = v.copy()
        out[24:] = out[24:] * 0.0 - 0.76  # background grey after frame 24
        return out

    s = scores(ref, fade)
    assert s["drift"] > 0.8 and s["colour_drift"] > 0.05


def test_jittered_positions_raise_jerk(ref):
    def jitter(v):
        rng = np.random.default_rng(1)
        return np.stack([np.roll(f, tuple(rng.integers(-2, 3, 2)), axis=(1, 2)) for f in v])

    assert scores(ref, jitter)["jerk_px"] > 2 * scores(ref, lambda v: v)["jerk_px"]


def test_frames_to_follow_counts_the_delay_of_a_recolouring(ref):
    from shared.procedural import Switch, frames_to_follow
    switched = make_clip(np.random.default_rng(901), frames=40, size=16, objects=2, colours=["red", "green"], shapes=["square", "circle"],
                         switches=[Switch(20, 0, colour="blue")])
    kept = make_clip(np.random.default_rng(901), frames=40, size=16, objects=2, colours=["red", "green"], shapes=["square", "circle"])
    before, after = ["red", "green"], ["blue", "green"]
    assert frames_to_follow(switched.video, 20, before, after, ref) == 0
    late = np.concatenate([kept.video[:27], switched.video[27:]])  # the model follows 7 frames late
    delay = frames_to_follow(late, 20, before, after, ref)
    assert delay == 7  # (seed 901: the objects never overlap after the switch)
    assert frames_to_follow(kept.video, 20, before, after, ref) == 20  # never: censored at the frames left


def test_jumps_are_one_for_smooth_motion_and_large_at_a_seam():
    from shared.procedural import boundary_jump, frame_jump
    clip = make_clip(np.random.default_rng(901), frames=32, size=16, objects=2, stripes=False)
    assert 0.5 < boundary_jump(clip.video, 4) < 1.6
    other = make_clip(np.random.default_rng(902), frames=32, size=16, objects=2, stripes=False)
    seam = np.concatenate([clip.video[:16], other.video[16:]])
    assert frame_jump(seam, 16) > 2 and frame_jump(clip.video, 16) < 1.5
    resets = np.where((np.arange(32) // 4 % 2 == 1)[:, None, None, None], other.video, clip.video)  # chunks alternate between two clips
    assert boundary_jump(resets, 4) > 2
    with pytest.raises(ValueError, match="no boundary"):
        boundary_jump(clip.video[:4], 4)


def test_track_breaks_are_rare_in_the_data_and_found_at_a_seam(ref):
    """Continuity by identity and position: the data's own tracks rarely break (occlusions); a seam
    where the same prompt's objects restart elsewhere breaks every track at the boundary, and a
    chunk-wise seam shows in boundary_breaks (not in the transitions inside chunks)."""
    from shared.procedural import track_breaks

    data = scores(ref, lambda v: v, seed=800)
    assert data["breaks"] < 0.03
    a = make_clip(np.random.default_rng(901), frames=32, size=16, objects=2, stripes=False)
    b = make_clip(np.random.default_rng(902), frames=32, size=16, objects=2, stripes=False, colours=a.colours)  # same prompt, other motion
    assert track_breaks(a.video, a.colours, ref)[15] == 0
    seam = np.concatenate([a.video[:16], np.roll(a.video[16:], 7, axis=-1)])  # from frame 16 the picture is shifted 7 px
    assert track_breaks(seam, a.colours, ref)[15] == 1.0  # transition 15 -> 16: both objects jump (or split at the wrap)
    resets = np.where((np.arange(32) // 4 % 2 == 1)[:, None, None, None], b.video, a.video)  # chunks of 4 alternate between the two
    smooth, seamed = score_video(a.video, a.colours, ref, 8, chunk=4), score_video(resets, a.colours, ref, 8, chunk=4)
    assert seamed["boundary_breaks"] > 0.5 > smooth["boundary_breaks"] and seamed["breaks"] > smooth["breaks"]
    inside = track_breaks(resets, a.colours, ref)[np.arange(1, 32) % 4 != 0]
    assert inside.mean() < 0.1  # the seams are at the boundaries only
    one = a.video.copy()
    one[10] = one[9]  # one frame repeated: motion pauses, nothing breaks
    assert track_breaks(one, a.colours, ref).max() == 0
    vanished = a.video.copy()
    vanished[20:] = np.where(np.abs(vanished[20:] - vanished[20:].min()) < 1e-6, vanished[20:], -1 + 2 * 0.1)  # everything greyed to background
    assert track_breaks(vanished, a.colours, ref)[19] == 1.0


def test_flicker_is_zero_for_the_data_and_grows_with_background_shimmer(ref):
    from shared.procedural import flicker
    from shared.procedural.clips import BACKGROUND

    clip = make_clip(np.random.default_rng(903), frames=24, size=16, objects=2)
    assert flicker(clip.video) == 0.0
    rng = np.random.default_rng(0)
    static = clip.video + 0.04 * rng.standard_normal((1, 1, 16, 16)).astype(np.float32)  # the same blemish every frame
    shimmer = clip.video + 0.04 * rng.standard_normal(clip.video.shape).astype(np.float32)
    assert flicker(static) < 1e-6 < 0.02 < flicker(shimmer) < 0.1
    stronger = clip.video + 0.08 * rng.standard_normal(clip.video.shape).astype(np.float32)
    assert flicker(stronger) > 1.5 * flicker(shimmer)
    assert BACKGROUND * 2 - 1 == pytest.approx(float(clip.video.min()), abs=0.3)
