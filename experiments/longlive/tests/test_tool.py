"""The generate tool: streams what it is asked, switches prompts where told, refuses bad input in one line (exit 2)."""

import json

import numpy as np
import pytest
import torch

from ..tool import generate_main, ship
from .test_train import tiny_cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from ..train import train

    torch.set_num_threads(1)
    cfg = tiny_cfg()
    path = tmp_path_factory.mktemp("ckpt") / "model_self_forcing.pt"
    teacher, _ = train(cfg, "teacher", 2, None)
    train(cfg, "self_forcing", 1, path, init=teacher.state_dict(), teacher=teacher)
    return path


def run(checkpoint, tmp_path, *args, name="v.npy"):
    out = tmp_path / name
    code = generate_main(["--checkpoint", str(checkpoint), "--out", str(out), "--quiet", "--policy", "window", "--window-frames", "2", *args])
    return code, (np.load(out) if code == 0 else None)


def test_generate_streams_the_frames_and_switches_where_told(checkpoint, tmp_path, capsys):
    code, plain = run(checkpoint, tmp_path, "--prompt", "red", "circle", "--frames", "8", name="a.npy")
    assert code == 0 and plain.shape == (8, 3, 16, 16) and np.isfinite(plain).all()
    assert "8 frames" in capsys.readouterr().out.strip().splitlines()[-1]  # the one-line summary
    code, switched = run(checkpoint, tmp_path, "--prompt", "red", "circle", "--switch-at", "4", "blue", "square", "--frames", "8", name="b.npy")
    assert code == 0
    assert np.array_equal(plain[:4], switched[:4]) and not np.allclose(plain[4:], switched[4:])  # same seed: identical until the switch
    code, kept = run(checkpoint, tmp_path, "--prompt", "red", "circle", "--switch-at", "4", "blue", "square", "--switch-mode", "keep", "--frames", "8", name="c.npy")
    assert code == 0 and not np.allclose(kept[4:], switched[4:])  # recache and keep differ after the switch


@pytest.mark.parametrize("args, message", [
    (["--prompt", "purple", "circle"], "not a colour + shape pair"),
    (["--prompt", "red", "circle", "--switch-at", "40", "blue", "square", "--frames", "8"], "before the last frame"),
    (["--prompt", "red", "circle", "--window-frames", "9"], "more than the 4 frames the model was trained on"),
    (["--prompt", "red", "circle", "--frames", "7"], "multiple of the chunk size"),
])
def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys, args, message):
    code, _ = run(checkpoint, tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_a_foreign_checkpoint_and_an_existing_output_are_refused(checkpoint, tmp_path, capsys):
    state = torch.load(checkpoint, weights_only=False)
    state["host"] = {**state["host"], "dim": 24}
    other = tmp_path / "other.pt"
    torch.save(state, other)
    code, _ = run(other, tmp_path, "--prompt", "red", "circle")
    assert code == 2 and "another configuration" in capsys.readouterr().err
    (tmp_path / "v.npy").write_bytes(b"keep me")
    code, _ = run(checkpoint, tmp_path, "--prompt", "red", "circle", "--frames", "4")
    assert code == 2 and "exists" in capsys.readouterr().err and (tmp_path / "v.npy").read_bytes() == b"keep me"


def test_ship_refuses_a_run_on_uncommitted_changes(tmp_path):
    from shared.errors import DataError

    (tmp_path / "provenance.json").write_text(json.dumps({"git": {"dirty": True, "sha": "x"}}))
    with pytest.raises(DataError, match="uncommitted"):
        ship(tmp_path, tmp_path / "w.pt")


def test_the_shipped_student_streams_out_of_the_box(tmp_path):
    """No --checkpoint: the shipped self-forcing student (weights/, with its provenance) is used."""
    from ..tool import SHIPPED

    assert SHIPPED.is_file() and json.loads(SHIPPED.with_suffix(".json").read_text())["commit"]
    out = tmp_path / "v.npy"
    assert generate_main(["--prompt", "red", "circle", "--frames", "8", "--out", str(out), "--quiet"]) == 0
    video = np.load(out)
    assert video.shape == (8, 3, 16, 16) and video.std() > 0.1  # a trained model draws something, not a flat field
