"""The detector metrics rank known-good and known-broken videos the way they promise."""

import numpy as np
import pytest

from ..data import make_clip
from ..metrics import Reference, aggregate, score_video


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
