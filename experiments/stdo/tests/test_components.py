"""One test per STDO component that a one-line break must fail (the review's list): the label
shave's default, the k-fold compute of the total-compute rows, JSTDO's fractions towards the
hardest chunk, the cosine schedule's length, and the general model never seeing the clip it labels."""

import numpy as np
import pytest
import torch

from shared import registry
from shared.config import compose

from .. import chunking
from .. import labels as labels_module
from .. import method as method_module
from ..model import WDSR, build, count_parameters, equal_parameter_width
from ..patches import make_grid
from ..train import overfit, steps_for, total_steps_for

EXPERIMENT = __package__.split(".")[1]


def cfg(preset="smoke", row="stdo", overrides=()):
    return compose(registry.get(EXPERIMENT), preset, list(overrides), row=("stdo", row))


def patches(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lr = torch.randint(0, 256, (n, 3, 6, 6), generator=g, dtype=torch.uint8)
    hr = torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    return lr, hr


def test_labels_shave_scale_plus_four_by_default(monkeypatch):
    seen = []
    monkeypatch.setattr(labels_module, "label_patches", lambda model, lr, hr, scale, shave, device: seen.append(shave) or np.zeros(len(lr)))
    lr, hr = patches()
    c = cfg(overrides=["labels.source=bicubic"])
    assert c.labels.shave is None  # the default is the official rule, not a number
    labels_module.make_labels(c, lr, hr, 3, "carphone", device="cpu")
    labels_module.make_labels(cfg(overrides=["labels.source=bicubic", "labels.shave=2"]), lr, hr, 3, "carphone", device="cpu")
    assert seen == [7, 2]


def test_the_general_model_never_trains_on_the_clip_it_labels(monkeypatch):
    from ..data import BUNDLED, load_video

    seen = {}
    monkeypatch.setattr(labels_module, "train_general", lambda images, scale, g, model, device, checkpoint: seen.setdefault("images", images) and model)
    monkeypatch.setattr(labels_module, "label_patches", lambda *a, **k: np.zeros(4))
    lr, hr = patches(4)
    labels_module.make_labels(cfg(overrides=["labels.general.frames_per_clip=2", "labels.general.photographs=false"]), lr, hr, 2, "carphone", device="cpu")
    carphone = load_video("carphone").frames
    assert len(seen["images"]) == 2 * (len(BUNDLED) - 1)  # two frames of every other clip
    assert not any(img.shape == carphone[0].shape and any(np.array_equal(img, f) for f in carphone) for img in seen["images"])


def test_in_epoch_presets_jstdo_and_single_long_get_the_compute_of_the_k_stdo_models(monkeypatch):
    """train.epochs (the paper preset): each STDO model makes epochs passes over its own chunk; JSTDO
    (which sees about half the patches) and single_long get the sum of those steps, not their own
    epochs; single makes epochs passes over every patch (the paper's baseline), the same total."""
    calls = {}

    def fake_overfit(model, lr, hr, training_set, steps, cfg_train, desc="", **kw):
        calls.setdefault(desc.split()[0], []).append(steps)
        return model

    monkeypatch.setattr(method_module, "overfit", fake_overfit)
    lr, hr = patches(70)
    grid = make_grid(24, 24, 2, rows=2, cols=2)
    labels = np.random.default_rng(3).normal(30, 2, 70)
    over = ["chunks=3", "train.epochs=5", "train.batch_size=4"]
    for row in ("stdo", "jstdo", "single_long", "single"):
        method_module.fit_upscaler(cfg(row=row, overrides=over), lr, hr, labels, grid, 17, seed=0, device="cpu")
    sizes = np.bincount(chunking.quantile_chunks(labels, 3)[0], minlength=3)
    assert calls["stdo"] == [5 * (int(s) // 4) for s in sizes]
    total = sum(calls["stdo"])
    assert calls["jstdo"] == [total] and calls["single_long"] == [total] and calls["single"] == [5 * (70 // 4)]


def test_total_compute_rows_get_k_times_the_steps_and_jstdo_samples_the_hardest_chunk_fully(monkeypatch):
    """k = 4 quantile chunks of 64 patches; the smoke preset's steps. JSTDO trains one model for 4 x
    steps on all of chunk 0 (lowest PSNR labels: the hardest), 2/3 of chunk 1, 1/3 of chunk 2, none of chunk 3."""
    calls = []

    def fake_overfit(model, lr, hr, training_set, steps, cfg_train, **kw):
        calls.append((steps, training_set(0)))
        return model

    monkeypatch.setattr(method_module, "overfit", fake_overfit)
    lr, hr = patches(64)
    grid = make_grid(24, 24, 2, rows=2, cols=2)  # 4 patches a frame, 16 frames
    labels = np.arange(64, dtype=np.float64)[::-1].copy()  # patch 63 is the hardest
    base = cfg(overrides=["chunks=4"])
    steps = int(base.train.steps)
    assert total_steps_for(base.train, [16] * 4) == 4 * steps and steps_for(base.train, 64) == steps
    method_module.fit_upscaler(cfg(row="jstdo", overrides=["chunks=4"]), lr, hr, labels, grid, 16, seed=0, device="cpu")
    (jstdo_steps, chosen), = calls
    assert jstdo_steps == 4 * steps
    hardest, easiest = set(range(48, 64)), set(range(0, 16))
    assert hardest <= set(chosen.tolist()) and not easiest & set(chosen.tolist())
    calls.clear()
    method_module.fit_upscaler(cfg(row="single_long", overrides=["chunks=4"]), lr, hr, labels, grid, 16, seed=0, device="cpu")
    method_module.fit_upscaler(cfg(row="single", overrides=["chunks=4"]), lr, hr, labels, grid, 16, seed=0, device="cpu")
    assert [c[0] for c in calls] == [4 * steps, steps]


def test_the_cosine_schedule_reaches_its_floor_at_the_last_step():
    c = cfg()
    lrs = []
    torch.manual_seed(0)
    lr, hr = patches(32)
    overfit(WDSR(2, num_blocks=1, num_residual_units=4, width_multiplier=1), lr, hr, lambda epoch: np.arange(32), 7, c.train, seed=0, device="cpu",
            log=lambda metrics, step: lrs.append((step, metrics["lr"])))
    assert lrs[-1][0] == 7 and lrs[-1][1] == pytest.approx(float(c.train.lr_min), rel=1e-6, abs=1e-12)


def test_labels_from_a_pretrained_general_model_file(tmp_path):
    """labels.source=file: the labels are the PSNR of the file's model (a bare state dict or a run's
    general checkpoint, where it sits under "model"); a missing file, a model for another scale and
    a missing path are refused in one line."""
    from shared.errors import ConfigError, DataError

    from ..model import build
    from ..train import train_general

    lr, hr = patches(12)
    c = cfg()
    torch.manual_seed(4)
    model = train_general(list(labels_module.general_images("carphone", 1, False)), 2, c.labels.general, build(c.model, 2), device="cpu",
                          checkpoint=tmp_path / "general.pt")  # a run's checkpoint: {"model", "optimizer", "schedule", "step"}
    expected = labels_module.label_patches(model, lr, hr, 2, 2, device="cpu")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    for name in ("general.pt", "bare.pt"):
        got = labels_module.make_labels(cfg(overrides=["labels.shave=2", "labels.source=file", f"labels.file={tmp_path / name}"]), lr, hr, 2, "carphone", device="cpu")
        np.testing.assert_array_equal(got, expected)
    untrained = labels_module.label_patches(build(c.model, 2), lr, hr, 2, 2, device="cpu")
    assert not np.allclose(untrained, expected)  # the file's weights are what labels
    torch.save(build(c.model, 3).state_dict(), tmp_path / "x3.pt")
    with pytest.raises(DataError, match="not a general model for this WDSR at x2"):
        labels_module.make_labels(cfg(overrides=["labels.shave=2", "labels.source=file", f"labels.file={tmp_path / 'x3.pt'}"]), lr, hr, 2, "carphone", device="cpu")
    with pytest.raises(DataError, match="no such file"):
        labels_module.make_labels(cfg(overrides=["labels.shave=2", "labels.source=file", f"labels.file={tmp_path / 'none.pt'}"]), lr, hr, 2, "carphone", device="cpu")
    with pytest.raises(ConfigError, match="needs labels.file"):
        labels_module.make_labels(cfg(overrides=["labels.shave=2", "labels.source=file"]), lr, hr, 2, "carphone", device="cpu")


def test_h264_lowres_frames_are_what_a_streaming_client_decodes():
    """data.lr_crf: the LR frames go through libx264 and back (4:2:0, or 4:4:4 for odd sides); a
    higher crf loses more; crf outside 0-51 is refused in one line; prepare() hands every row the
    decoded frames."""
    from omegaconf import OmegaConf

    from shared.errors import ConfigError
    from shared.metrics import psnr

    from ..data import h264_lowres, load_video, lowres_frames
    from ..reproduce import prepare

    lr = lowres_frames(load_video("carphone", max_frames=6), 2)  # 88x72: even sides
    good, poor = h264_lowres(lr, 18), h264_lowres(lr, 40)
    assert good.shape == poor.shape == lr.shape and good.dtype == np.uint8

    def db(x):
        return float(psnr(torch.from_numpy(x).float() / 255, torch.from_numpy(lr).float() / 255))

    assert 15 < db(poor) < db(good) - 5 < 55
    odd = lr[:, :71, :87]
    assert np.abs(h264_lowres(odd, 0).astype(int) - odd).max() <= 3  # 4:4:4 at crf 0: only the colour conversion's rounding
    with pytest.raises(ConfigError, match="crf is 0-51"):
        h264_lowres(lr, 60)
    clip = OmegaConf.create({"name": "carphone", "max_frames": 4, "stride": 1})
    plain = prepare(cfg(overrides=["labels.source=bicubic"]), clip, 2, "cpu")
    streamed = prepare(cfg(overrides=["labels.source=bicubic", "data.lr_crf=40"]), clip, 2, "cpu")
    assert np.array_equal(streamed["lr"], h264_lowres(plain["lr"], 40)) and not np.array_equal(streamed["lr"], plain["lr"])
    assert streamed["labels"].mean() < plain["labels"].mean()  # bicubic from worse LR frames scores lower


# ---- CaFM: one shared model, a channel-wise modulation per chunk ----------------------------------


def _perturbed(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mod_" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def test_cafm_starts_as_its_backbone_and_each_sample_takes_its_own_chunks_modulation():
    torch.manual_seed(0)
    plain = WDSR(2, num_blocks=2, num_residual_units=8, width_multiplier=2).double()
    cafm = WDSR(2, num_blocks=2, num_residual_units=8, width_multiplier=2, chunks=3).double()
    missing, unexpected = cafm.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("mod_" in k for k in missing) and len(missing) == 2 * (1 + 2 * 2)
    x = torch.rand(5, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for j in range(3):  # identity modulations: exactly the backbone
        assert torch.allclose(cafm(x, j), plain(x), atol=1e-12)
    _perturbed(cafm)
    route = torch.tensor([2, 0, 1, 1, 0])
    mixed = cafm(x, route)
    for n in range(5):
        assert torch.allclose(mixed[n], cafm(x[n : n + 1], int(route[n]))[0], atol=1e-12)
    assert not torch.allclose(cafm(x, 0), cafm(x, 1))
    with pytest.raises(ValueError, match="needs the chunk"):
        cafm(x)


def test_cafm_modulation_reaches_the_head_and_both_convolutions_of_every_block():
    torch.manual_seed(0)
    cafm = _perturbed(WDSR(2, num_blocks=2, num_residual_units=8, width_multiplier=2, chunks=2).double())
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    cafm(x, torch.tensor([0, 1])).square().sum().backward()
    for name, p in cafm.named_parameters():
        if "mod_" in name:  # every modulation, of both chunks, gets a gradient
            assert p.grad is not None and (p.grad.abs().sum(dim=-1) > 0).all(), name


def test_cafm_is_as_wide_as_stdos_k_models_parameters_allow():
    c = cfg("cpu")
    single = count_parameters(build(c.model, 2))
    for k in (2, 4):
        width = equal_parameter_width(c.model, 2, k)
        assert width > c.model.num_residual_units
        assert count_parameters(build(c.model, 2, k, width)) <= k * single < count_parameters(build(c.model, 2, k, width + 1))


def test_cafm_row_trains_one_shared_model_on_every_patch_with_routes_and_the_compute_of_k_models(tmp_path):
    c = cfg(row="cafm", overrides=["chunks=2"])
    assert c.method.modulated and c.method.chunking == "temporal" and c.method.total_compute
    lr, hr = patches(48)
    grid = make_grid(12, 12, 2, 2, 2)  # 4 patches per frame, 12 frames
    labels = np.linspace(20, 30, 48)
    seen = {}
    original = method_module.overfit

    def spy(model, lr_p, hr_p, training_set, steps, cfg_train, **kw):
        seen.update(steps=steps, members=training_set(0), route=kw["route"], chunks=model.chunks)
        return original(model, lr_p, hr_p, training_set, steps, cfg_train, **kw)

    method_module.overfit = spy
    try:
        up = method_module.fit_upscaler(c, lr, hr, labels, grid, 12, seed=0, device="cpu")
    finally:
        method_module.overfit = original
    assert seen["steps"] == total_steps_for(c.train, [24, 24]) and len(seen["members"]) == 48 and seen["chunks"] == 2
    assert np.array_equal(seen["route"], chunking.temporal_chunks(12, 4, 2)) and np.array_equal(up.chunk, seen["route"])
    shared = up.models[0].model
    assert all(v.model is shared for v in up.models) and up.parameters == count_parameters(shared)
    from ..bundle import load_bundle, save_bundle

    size = save_bundle(tmp_path / "c.stdo", up, c.model, 12)
    assert size < 1.5 * count_parameters(shared) * 4 + 20_000  # the shared model once, not once per chunk
    loaded, _ = load_bundle(tmp_path / "c.stdo")
    assert torch.equal(loaded.upscale(lr, device="cpu"), up.upscale(lr, device="cpu"))


def test_training_routes_each_patch_through_its_own_chunks_modulation():
    """Patches of chunk 1 only: chunk 0's modulation never moves, chunk 1's does."""
    torch.manual_seed(0)
    model = WDSR(2, num_blocks=1, num_residual_units=8, width_multiplier=2, chunks=2)
    lr, hr = patches(32)
    route = np.repeat([0, 1], 16)
    before = {k: v.clone() for k, v in model.state_dict().items() if "mod_" in k}
    overfit(model, lr, hr, lambda e: np.arange(16, 32), 5, cfg().train, seed=0, device="cpu", route=route)
    after = model.state_dict()
    assert all(torch.equal(after[k][0], before[k][0]) for k in before)
    assert any(not torch.equal(after[k][1], before[k][1]) for k in before)
