"""The procedural videos: physics as promised and a detector that reads it back."""

import numpy as np
import pytest

from shared.procedural.clips import VOCAB, Switch, find_objects, make_clip, tokens


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_objects_move_bounce_and_stay_inside(seed):
    clip = make_clip(np.random.default_rng(seed), frames=40, size=32, objects=2)
    assert clip.video.shape == (40, 3, 32, 32) and clip.video.min() >= -1 and clip.video.max() <= 1
    xy = clip.tracks[:, :, :2]
    r = clip.radius[:, None, None]
    assert (xy >= r - 1e-9).all() and (xy <= 32 - r + 1e-9).all()
    speed = np.linalg.norm(np.diff(xy, axis=1), axis=2)
    assert (speed > 0.1).all()  # always moving
    # constant speed away from the walls (a reflection can shorten one step)
    assert np.median(np.abs(speed - np.median(speed, axis=1, keepdims=True))) < 1e-6
    turn = np.diff(clip.tracks[:, :, 2], axis=1)
    assert np.allclose(turn, turn[:, :1]) and (np.abs(turn[:, 0]) > 0).all()  # constant, nonzero spin


def test_the_detector_reads_back_known_centres_when_objects_do_not_overlap():
    errors = []
    for seed in range(20):
        clip = make_clip(np.random.default_rng(seed), frames=6, size=48, objects=2)
        for f in range(6):
            (x0, y0), (x1, y1) = clip.tracks[0, f, :2], clip.tracks[1, f, :2]
            if np.hypot(x1 - x0, y1 - y0) < clip.radius.sum() + 2:
                continue  # overlapping: occlusion moves the visible centroid
            found = find_objects(clip.video[f], clip.colours)
            for k, colour in enumerate(clip.colours):
                assert found[colour] is not None
                errors.append(np.hypot(found[colour][0] - clip.tracks[k, f, 0], found[colour][1] - clip.tracks[k, f, 1]))
    assert len(errors) > 60 and np.percentile(errors, 95) < 1.5  # triangles' centroids sit off the circumcentre


def test_absent_colours_are_not_found_and_words_map_to_ids():
    clip = make_clip(np.random.default_rng(5), frames=2, size=32, objects=1)
    absent = [c for c in ("red", "green", "blue") if c not in clip.colours]
    assert all(v is None for v in find_objects(clip.video[0], absent).values())
    ids = tokens(clip.text, 4)
    assert ids.shape == (4,) and ids[2:].tolist() == [0, 0] and [VOCAB[i] for i in ids[:2]] == clip.text
    with pytest.raises(ValueError, match="unknown words"):
        tokens(["purple", "circle"], 4)


def test_a_chosen_prompt_keeps_the_seed_motion_and_is_drawn():
    drawn = make_clip(np.random.default_rng(7), frames=8, size=16, objects=2)
    chosen = make_clip(np.random.default_rng(7), frames=8, size=16, objects=2, colours=["cyan", "yellow"], shapes=["square", "circle"])
    assert np.array_equal(drawn.tracks, chosen.tracks)  # motion does not depend on the prompt
    assert chosen.text == ["cyan", "square", "yellow", "circle"]
    for f in range(8):
        assert set(c for c, v in find_objects(chosen.video[f], ["cyan", "yellow"]).items() if v) == {"cyan", "yellow"}


def test_a_colour_switch_recolours_from_its_frame_and_an_entering_object_appears_there():
    base = make_clip(np.random.default_rng(2), frames=20, size=24, objects=1, colours=["red"], shapes=["square"])
    clip = make_clip(np.random.default_rng(2), frames=20, size=24, objects=1, colours=["red"], shapes=["square"],
                     switches=[Switch(12, 0, colour="blue"), Switch(6, 1, "green", "circle")])
    assert np.array_equal(clip.tracks[0], base.tracks[0])  # the first object moves as without the switches
    assert clip.prompts == [(0, ["red", "square"]), (6, ["red", "square", "green", "circle"]), (12, ["blue", "square", "green", "circle"])]
    assert clip.colours_at(5) == ["red"] and clip.colours_at(12) == ["blue", "green"]
    for f in range(20):
        seen = {c for c, v in find_objects(clip.video[f], ["red", "blue", "green"]).items() if v}
        assert ("red" in seen) == (f < 12) and ("blue" in seen) == (f >= 12)
        assert ("green" in seen) == (f >= 6) or f >= 6 and np.hypot(*(clip.tracks[0, f, :2] - clip.tracks[1, f, :2])) < clip.radius.sum()
    assert np.array_equal(clip.video[:6], make_clip(np.random.default_rng(2), frames=20, size=24, objects=1, colours=["red"], shapes=["square"],
                                                    switches=[Switch(12, 0, colour="blue")]).video[:6])


@pytest.mark.parametrize("switch, message", [
    (Switch(0, 0, colour="blue"), "outside the clip"), (Switch(20, 0, colour="blue"), "outside the clip"),
    (Switch(5, 0, colour="purple"), "unknown colour"), (Switch(5, 0, shape="hexagon"), "unknown shape"),
    (Switch(5, 3, colour="blue"), "does not exist"), (Switch(5, 2, colour="cyan"), "both a colour and a shape"),
    (Switch(5, 0, colour="green"), "two objects would be green"), (Switch(5, 0), "changes nothing")])
def test_bad_switches_are_one_clear_error(switch, message):
    with pytest.raises(ValueError, match=message):
        make_clip(np.random.default_rng(0), frames=20, size=16, objects=2, colours=["red", "green"], shapes=["circle", "square"], switches=[switch])
