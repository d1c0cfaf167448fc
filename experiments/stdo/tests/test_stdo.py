"""STDO: exact unit tests of each part (handbook brief, section 11), the tool end to end with its
error messages, and a short run on real pixels that checks the relation the paper claims."""

import math

import numpy as np
import pytest
import torch

from shared import registry
from shared.config import compose
from shared.errors import DataError
from shared.metrics import psnr
from shared.video import write_video

from .. import chunking
from ..bundle import load_bundle, save_bundle
from ..data import downscale, load_video
from ..evaluate import (
    patch_mse,
    psnr_from_mse,
    quantise,
    scores,
    upscale_frames,
    upscale_patches,
)
from ..labels import label_patches
from ..method import Upscaler, fit_upscaler
from ..model import WDSR, bicubic_upsample, count_parameters
from ..patches import auto_grid, make_grid, to_frames, to_patches
from ..tool import main as tool_main
from ..train import overfit

EXPERIMENT = __package__.split(".")[1]  # the folder this test lives in: a fork tests itself


def cfg(preset="smoke", row="stdo", overrides=()):
    return compose(registry.get(EXPERIMENT), preset, list(overrides), row=("stdo", row))


@pytest.fixture(scope="module")
def carphone():
    """16 real frames (176x144) and their x2 bicubic LR, cut into a 4 x 4 grid (256 patches)."""
    video = load_video("carphone", max_frames=16)
    lr = downscale(video.frames, 2)
    grid = make_grid(144, 176, 2, rows=4, cols=4)
    return video, lr, grid, to_patches(lr, 4, 4), to_patches(video.frames, 4, 4)


# ---------------------------------------------------------------- patches -------------------


def test_patches_round_trip_exactly_in_index_order():
    frames = torch.randint(0, 256, (3, 12, 20, 3), dtype=torch.uint8)
    patches = to_patches(frames, rows=3, cols=4)
    assert patches.shape == (36, 3, 4, 5)
    assert torch.equal(to_frames(patches, 3, 4), frames)
    grid = make_grid(24, 40, 2, rows=3, cols=4)  # the LR frame is 20x12
    n = grid.index(2, 1, 3)
    assert n == 2 * 12 + 1 * 4 + 3 and grid.position(n) == (2, 1, 3)
    assert torch.equal(patches[n], frames[2, 4:8, 15:20].permute(2, 0, 1))


def test_lr_patch_covers_the_hr_patch_divided_by_the_scale(carphone):
    video, lr, grid, lr_p, hr_p = carphone
    t, i, j = 5, 2, 3
    n = grid.index(t, i, j)
    (lh, lw), (hh, hw) = grid.lr_patch, grid.hr_patch
    assert (hh, hw) == (2 * lh, 2 * lw)
    assert torch.equal(hr_p[n], torch.from_numpy(video.frames[t, i * hh : (i + 1) * hh, j * hw : (j + 1) * hw]).permute(2, 0, 1))
    assert torch.equal(lr_p[n], torch.from_numpy(lr[t, i * lh : (i + 1) * lh, j * lw : (j + 1) * lw]).permute(2, 0, 1))


def test_auto_grid_gives_the_papers_grids_at_1080p():
    assert (auto_grid(1080, 1920, 2).cols, auto_grid(1080, 1920, 2).rows) == (20, 10)
    assert (auto_grid(1080, 1920, 4).cols, auto_grid(1080, 1920, 4).rows) == (10, 5)
    assert auto_grid(1080, 1920, 2).hr_patch == (108, 96)


def test_scales_and_grids_that_do_not_tile_the_frame_are_refused():
    with pytest.raises(DataError, match="does not divide"):
        auto_grid(144, 176, 5)
    with pytest.raises(DataError, match="does not tile"):
        make_grid(144, 176, 2, rows=5, cols=4)


# ---------------------------------------------------------------- chunking ------------------


def official_rule(labels, k):
    """The brief's wording, literally: th_j = sorted[floor(j n / k) - 1], chunk j if th_j < label <= th_{j+1}."""
    s = np.sort(labels)
    th = [-np.inf] + [s[(j * len(s)) // k - 1] for j in range(1, k)] + [np.inf]
    return np.array([next(j for j in range(k) if th[j] < x <= th[j + 1]) for x in labels])


def test_quantile_chunks_follow_the_official_rule_with_ties():
    chunk, th = chunking.quantile_chunks(np.array([1.0, 2.0, 2.0, 3.0]), 2)
    assert th.tolist() == [2.0] and np.bincount(chunk).tolist() == [3, 1]  # the tie goes to the lower chunk
    rng = np.random.default_rng(3)
    labels = np.round(rng.normal(40, 5, 997), 1)  # many ties
    labels[5] = np.inf  # a perfect patch
    for k in (2, 3, 4, 7):
        chunk, _ = chunking.quantile_chunks(labels, k)
        np.testing.assert_array_equal(chunk, official_rule(labels, k))
        assert chunk[5] == k - 1 and set(chunk) == set(range(k))
        means = [labels[(chunk == j) & np.isfinite(labels)].mean() for j in range(k)]
        assert means == sorted(means)  # chunk 0 holds the lowest PSNR (hardest)
        assert max(np.bincount(chunk)) - min(np.bincount(chunk)) < 0.1 * len(labels) / k


def test_quantile_chunks_of_distinct_labels_are_exactly_equal():
    labels = np.random.default_rng(0).permutation(1000).astype(float) + 20
    chunk, _ = chunking.quantile_chunks(labels, 4)
    assert np.bincount(chunk).tolist() == [250] * 4
    assert labels[chunk == 0].max() < labels[chunk == 1].min()


def test_baseline_chunks_have_equal_sizes():
    temporal = chunking.temporal_chunks(16, 10, 3)
    assert temporal.reshape(16, 10)[:, 0].tolist() == [0] * 6 + [1] * 5 + [2] * 5
    assert (temporal.reshape(16, 10) == temporal.reshape(16, 10)[:, :1]).all()  # a frame stays together
    random = chunking.random_chunks(1001, 4, seed=1)
    assert sorted(np.bincount(random).tolist()) == [250, 250, 250, 251]
    assert not np.array_equal(random, chunking.random_chunks(1001, 4, seed=2))
    np.testing.assert_array_equal(random, chunking.random_chunks(1001, 4, seed=1))


def test_jstdo_sampler_takes_all_of_the_hardest_and_none_of_the_easiest():
    fractions = chunking.jstdo_fractions(4)
    assert fractions == pytest.approx([1, 2 / 3, 1 / 3, 0])
    chunk = np.repeat(np.arange(4), [30, 31, 29, 40])
    subset = chunking.jstdo_subset(chunk, fractions, np.random.default_rng(5))
    assert np.bincount(chunk[subset], minlength=4).tolist() == [30, round(2 / 3 * 31), round(1 / 3 * 29), 0]
    np.testing.assert_array_equal(subset, chunking.jstdo_subset(chunk, fractions, np.random.default_rng(5)))
    assert not np.array_equal(subset, chunking.jstdo_subset(chunk, fractions, np.random.default_rng(6)))


# ---------------------------------------------------------------- metrics --------------------


def test_psnr_quantises_shaves_and_averages_mse_not_psnr():
    hr = torch.randint(0, 256, (2, 3, 12, 10), dtype=torch.uint8)
    sr = hr.double() / 255 + 0.3 / 255  # rounds back to hr...
    sr[0, :, 5, 5] += 10 / 255  # ...except one inner pixel of patch 0
    sr[1, :, 0, 0] += 20 / 255  # and one border pixel of patch 1 (shaved away at shave 2)
    mse = patch_mse(sr, hr, shave=2).numpy()
    assert mse[1] == 0 and mse[0] == pytest.approx(3 * (10 / 255) ** 2 / (3 * 8 * 6))
    assert psnr_from_mse(mse) == pytest.approx(-10 * math.log10(mse.mean()))
    assert psnr_from_mse(mse) != pytest.approx(np.mean([-10 * math.log10(m) for m in mse if m > 0]))
    assert torch.equal(quantise(torch.tensor([-0.2, 0.5 / 255, 1.49 / 255, 1.3])), torch.tensor([0, 0, 1, 255], dtype=torch.uint8))


def test_full_frame_psnr_equals_unshaved_mean_patch_psnr(carphone):
    video, _lr, grid, lr_p, hr_p = carphone
    sr = upscale_patches(None, None, lr_p, 2, device="cpu")
    result = scores(sr, hr_p, grid, None)
    frames = to_frames(sr, grid.rows, grid.cols)
    assert result["psnr_frame"] == pytest.approx(psnr(frames.double() / 255, torch.from_numpy(video.frames).double() / 255), abs=1e-9)
    assert len(result["per_frame_psnr"]) == 16
    assert result["psnr"] != pytest.approx(result["psnr_frame"], abs=1e-3)


def test_bicubic_labels_are_bicubic_psnr_per_patch(carphone):
    _, _, _grid, lr_p, hr_p = carphone
    labels = label_patches(None, lr_p, hr_p, 2, shave=6, device="cpu")
    n = 37
    sr = quantise(bicubic_upsample(lr_p[n : n + 1].float() / 255, 2))[0].double() / 255
    expected = psnr(sr[:, 6:-6, 6:-6], hr_p[n, :, 6:-6, 6:-6].double() / 255)
    assert labels.dtype == np.float64 and labels.shape == (256,)
    assert labels[n] == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- WDSR ----------------------


@pytest.mark.parametrize("scale,expected", [(2, 1_190_100), (3, 1_195_605), (4, 1_203_312)])
def test_wdsr_a_has_the_papers_parameter_count(scale, expected):
    assert count_parameters(WDSR(scale)) == expected


def test_wdsr_a_shape_init_and_input_untouched():
    model = WDSR(3, num_blocks=4, num_residual_units=8)
    g = lambda conv: conv.parametrizations.weight.original0
    assert torch.all(g(model.head) == 1) and torch.all(g(model.tail) == 1) and torch.all(g(model.skip) == 1)
    assert torch.all(g(model.body[0].expand) == 2.0) and torch.all(g(model.body[0].reduce) == 0.5)
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(2, 3, 7, 9)
    before = x.clone()
    y = model(x)
    assert y.shape == (2, 3, 21, 27) and torch.equal(x, before)


def test_bicubic_residual_model_starts_exactly_at_bicubic_and_learns():
    model = WDSR(2, num_blocks=2, num_residual_units=16, bicubic_residual=True)
    x = torch.rand(3, 3, 9, 11)
    assert torch.allclose(model(x), bicubic_upsample(x, 2), atol=1e-6)
    model(x).sum().backward()
    assert model.tail.parametrizations.weight.original0.grad.abs().sum() > 0


# ---------------------------------------------------------------- routing, training, bundles --


def test_routing_sends_each_patch_to_its_chunk_model_and_stitches(carphone):
    _, lr, grid, lr_p, _ = carphone
    models = [WDSR(2, num_blocks=1, num_residual_units=8).eval() for _ in range(3)]
    chunk = np.random.default_rng(0).integers(0, 3, len(lr_p))
    routed = upscale_patches(models, chunk, lr_p, 2, device="cpu")
    for n in (0, 17, 255):
        with torch.no_grad():
            alone = quantise(models[chunk[n]](lr_p[n : n + 1].float() / 255))[0]
        assert torch.equal(routed[n], alone)
    frames = upscale_frames(models, chunk.reshape(16, 4, 4), lr, grid, device="cpu")
    np.testing.assert_array_equal(frames, to_frames(routed, 4, 4).numpy())


def test_training_resumes_bit_identically_after_a_kill(carphone, tmp_path, monkeypatch):
    from .. import train as train_module

    _, _, _, lr_p, hr_p = carphone
    train_cfg = cfg(overrides=["train.steps=9", "train.checkpoint_every=4"]).train
    members = np.arange(0, 256, 3)  # 86 patches: 5 batches an epoch, so the run crosses epochs

    def fresh():
        torch.manual_seed(1)
        return WDSR(2, num_blocks=1, num_residual_units=8, bicubic_residual=True)

    straight = overfit(fresh(), lr_p, hr_p, lambda e: members, 9, train_cfg, seed=3, device="cpu")
    real_save = train_module.atomic_torch_save

    def save_then_die(path, obj):  # killed right after the step-4 checkpoint reaches the disk
        real_save(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "atomic_torch_save", save_then_die)
    ckpt = tmp_path / "model.pt"
    with pytest.raises(KeyboardInterrupt):
        overfit(fresh(), lr_p, hr_p, lambda e: members, 9, train_cfg, seed=3, device="cpu", checkpoint=ckpt)
    monkeypatch.setattr(train_module, "atomic_torch_save", real_save)
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    resumed = overfit(fresh(), lr_p, hr_p, lambda e: members, 9, train_cfg, seed=3, device="cpu", checkpoint=ckpt)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(fresh().tail.parametrizations.weight.original0, resumed.tail.parametrizations.weight.original0)


def test_bundle_round_trip_and_corrupt_bundles(carphone, tmp_path):
    _, _lr, grid, lr_p, _ = carphone
    model_cfg = cfg().model
    from ..model import build

    models = [build(model_cfg, 2).eval() for _ in range(2)]
    for m in models:  # not the bicubic-only init
        torch.nn.init.normal_(m.tail.parametrizations.weight.original0, std=0.1)
    chunk = chunking.random_chunks(len(lr_p), 2, seed=0)
    up = Upscaler("stdo", grid, models, chunk)
    size = save_bundle(tmp_path / "b.stdo", up, model_cfg, 16)
    assert size == (tmp_path / "b.stdo").stat().st_size
    loaded, n_frames = load_bundle(tmp_path / "b.stdo")
    assert n_frames == 16 and loaded.grid == grid and loaded.parameters == up.parameters
    assert torch.equal(loaded.upscale(lr_p, device="cpu"), up.upscale(lr_p, device="cpu"))
    data = (tmp_path / "b.stdo").read_bytes()
    (tmp_path / "cut.stdo").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable STDO bundle"):
        load_bundle(tmp_path / "cut.stdo")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not an STDO bundle"):
        load_bundle(tmp_path / "other.pt")
    with pytest.raises(DataError, match="no such bundle"):
        load_bundle(tmp_path / "missing.stdo")


# ---------------------------------------------------------------- data errors ---------------


def test_bad_videos_get_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_video(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01 definitely not a video" * 50)
    with pytest.raises(DataError, match="cannot decode"):
        load_video(tmp_path / "junk.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError):
        load_video(tmp_path / "empty.mp4")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="VSD4K"):
        load_video(tmp_path / "folder")


def test_vsd4k_folder_layout_loads_hr_and_its_own_lr(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "clip/DIV2K_train_HR").mkdir(parents=True)
    (tmp_path / "clip/DIV2K_train_LR_bicubic/X2").mkdir(parents=True)
    hr = rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)
    for t in range(3):
        Image.fromarray(hr[t]).save(tmp_path / f"clip/DIV2K_train_HR/{t + 1:05d}.png")
        Image.fromarray(lr[t]).save(tmp_path / f"clip/DIV2K_train_LR_bicubic/X2/{t + 1:05d}x2.png")
    video = load_video(tmp_path / "clip")
    np.testing.assert_array_equal(video.frames, hr)
    np.testing.assert_array_equal(video.lowres[2], lr)
    from ..data import lowres_frames

    np.testing.assert_array_equal(lowres_frames(video, 2), lr)  # its own LR, not a re-made bicubic
    assert lowres_frames(video, 4).shape == (3, 2, 3, 3)  # no X4 folder: Pillow bicubic


# ---------------------------------------------------------------- the tool ------------------


def test_fit_then_upscale_a_users_video_and_resume_after_a_kill(tmp_path, capsys, monkeypatch):
    frames = load_video("bikes", max_frames=3, stride=40).frames[:, :96, :128]  # a user's video, cropped
    write_video(tmp_path / "talk.mp4", frames, fps=25, crf=0)
    bundle = tmp_path / "talk.stdo"
    args = ["fit", str(tmp_path / "talk.mp4"), "--scale", "2", "--chunks", "2", "--preset", "smoke", "--labels", "bicubic",
            "--out", str(bundle), "--lowres-out", str(tmp_path / "talk_lr.mp4"), "train.steps=8", "train.checkpoint_every=4"]

    from .. import train as train_module

    real_save, saves = train_module.atomic_torch_save, {"n": 0}

    def save_then_die(path, obj):  # the machine dies right after the first checkpoint is on disk
        real_save(path, obj)
        saves["n"] += 1
        if saves["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tool_main(args)
    assert not bundle.exists() and (tmp_path / "talk.stdo.work" / "model0.pt").is_file()
    assert tool_main(args) == 0  # the same command resumes
    assert bundle.is_file() and not (tmp_path / "talk.stdo.work").exists()
    monkeypatch.setattr(train_module, "atomic_torch_save", real_save)
    assert tool_main([*args[:-2], "--out", str(tmp_path / "again.stdo"), "train.steps=8", "train.checkpoint_every=4"]) == 0
    a, _ = load_bundle(bundle)
    b, _ = load_bundle(tmp_path / "again.stdo")
    for ma, mb in zip(a.models, b.models):
        for x, y in zip(ma.state_dict().values(), mb.state_dict().values()):
            assert torch.equal(x, y)  # resumed == uninterrupted
    assert tool_main(args) == 2 and "exists" in capsys.readouterr().err  # never overwritten silently

    out = tmp_path / "talk_sr.mp4"
    assert tool_main(["upscale", str(tmp_path / "talk_lr.mp4"), str(bundle), str(out), "--reference", str(tmp_path / "talk.mp4")]) == 0
    assert "PSNR vs reference" in capsys.readouterr().out
    from shared.video import read_video

    assert read_video(out).shape == (3, 96, 128, 3)
    assert tool_main(["upscale", str(tmp_path / "talk.mp4"), str(bundle), str(tmp_path / "x.mp4")]) == 2  # the HR video is no LR input
    assert "that is the high-resolution size" in capsys.readouterr().err
    assert tool_main(["upscale", str(tmp_path / "talk_lr.mp4"), str(bundle), str(tmp_path / "y.mp4"), "--scale", "4"]) == 2
    assert "made for x2" in capsys.readouterr().err


def test_tool_errors_are_one_line(tmp_path, capsys):
    assert tool_main(["fit", str(tmp_path / "none.mp4"), "--preset", "smoke"]) == 2
    assert "no such file" in capsys.readouterr().err
    write_video(tmp_path / "odd.mp4", np.full((2, 30, 50, 3), 90, np.uint8))
    assert tool_main(["fit", str(tmp_path / "odd.mp4"), "--scale", "4", "--preset", "smoke", "--labels", "bicubic"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert tool_main(["fit", str(tmp_path / "odd.mp4"), "--preset", "smoke", "train.nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    # a refused fit leaves nothing behind, so the corrected command is not refused as "another fit"
    write_video(tmp_path / "clip.mp4", load_video("carphone", max_frames=2).frames)
    fit = ["fit", str(tmp_path / "clip.mp4"), "--preset", "smoke", "--labels", "bicubic", "--out", str(tmp_path / "c.stdo")]
    from ..model import build

    torch.save(build(cfg("smoke").model, 3).state_dict(), tmp_path / "general_x3.pt")
    for extra, needle in ((["--scale", "3"], "does not divide"), (["--scale", "2", "--chunks", "500"], "use at most 32"),
                          (["--scale", "2", "--general-model", str(tmp_path / "general_x3.pt")], "not a general model for this WDSR at x2"),
                          (["--scale", "2", "--lr-crf", "99"], "crf is 0-51"),
                          (["--max-frames", "0"], "--max-frames and --stride must be at least 1")):
        assert tool_main([*fit, *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "c.stdo.work").exists()
    write_video(tmp_path / "tiny.mp4", np.full((1, 8, 8, 3), 90, np.uint8))
    assert tool_main(["fit", str(tmp_path / "tiny.mp4"), "--preset", "smoke", "--labels", "bicubic", "--scale", "2", "--chunks", "1"]) == 2
    assert "leave no pixel inside the labels'" in capsys.readouterr().err and not (tmp_path / "tiny.x2.stdo.work").exists()
    with pytest.raises(SystemExit) as exit_:
        tool_main(["fit"])
    assert exit_.value.code == 2


# ---------------------------------------------------------------- real pixels ---------------


def test_stdo_chunks_beat_random_and_temporal_chunks_on_real_video(carphone):
    """Carphone, 16 frames, x2, bicubic labels, k = 2, tiny WDSR, 150 steps per model (about 20 s)."""
    _, _, grid, lr_p, hr_p = carphone
    labels = label_patches(None, lr_p, hr_p, 2, shave=6, device="cpu")
    bicubic = scores(upscale_patches(None, None, lr_p, 2, device="cpu"), hr_p, grid, None)["psnr"]
    got = {}
    for row in ("single", "temporal", "random", "stdo"):
        c = cfg("cpu", row, ["train.steps=150"])
        up = fit_upscaler(c, lr_p, hr_p, labels, grid, 16, seed=0, device="cpu")
        got[row] = scores(up.upscale(lr_p, device="cpu"), hr_p, grid, up.chunk)
    assert got["stdo"]["psnr"] > got["random"]["psnr"] + 0.1
    assert got["stdo"]["psnr"] > got["temporal"]["psnr"] + 0.1
    assert min(r["psnr"] for r in got.values()) > bicubic + 1.0
    # STDO's chunk 0 holds the hard patches: its PSNR is the lowest
    assert got["stdo"]["per_chunk_psnr"][0] < got["stdo"]["per_chunk_psnr"][1]
