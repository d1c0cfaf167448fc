"""The DiT's promises that a wrong implementation breaks: per-frame time conditioning, window
locality and the shift, zero-initialised output, clear errors, the 4B stand-in's size."""

import pytest
import torch

from ..model import DiTConfig, StreamDiT, token_path_parameters

TINY = DiTConfig(channels=2, frames=4, height=8, width=8, patch=2, dim=16, depth=1, heads=2, window=(1, 2, 2), vocab=10, text_len=3)


def randomised(cfg: DiTConfig, seed: int = 0) -> StreamDiT:
    """The model with every parameter random (the zero-initialised gates would hide mixing)."""
    torch.manual_seed(seed)
    model = StreamDiT(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def inputs(cfg: DiTConfig, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.frames, cfg.channels, cfg.height, cfg.width, generator=g, dtype=torch.float64)
    tau = torch.rand(2, cfg.frames, generator=g, dtype=torch.float64)
    text = torch.randint(1, cfg.vocab, (2, cfg.text_len), generator=g)
    return x, tau, text


def test_untrained_model_predicts_zero_velocity_and_shapes_round_trip():
    model = StreamDiT(TINY)
    x, tau, text = inputs(TINY)
    out = model(x.float(), tau.float(), text)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))


def test_a_frames_time_reaches_only_its_own_frame_when_windows_do_not_cross_frames():
    """Window (1, 2, 2), one unshifted layer: frames never interact, so d out[frame g] / d tau[f] = 0
    for g != f and nonzero for g = f."""
    model = randomised(TINY)
    x, tau, text = inputs(TINY)
    tau.requires_grad_(True)
    out = model(x, tau, text)
    for f in range(TINY.frames):
        (grad,) = torch.autograd.grad(out[0, f].square().sum(), tau, retain_graph=True)
        assert grad[0, f].abs() > 1e-6
        assert torch.count_nonzero(grad[0, torch.arange(TINY.frames) != f]) == 0 and torch.count_nonzero(grad[1]) == 0


def test_equal_times_are_an_ordinary_dit(monkeypatch):
    """All frames at one time: the model equals an ordinary DiT, whose adaLN modulation is one
    vector per clip (here: frame 0's, broadcast to every frame); with times that differ it does not,
    and which frame carries which time matters."""
    from ..model import Block

    model = randomised(TINY)
    x, _, text = inputs(TINY)
    same = torch.full((2, TINY.frames), 0.3, dtype=torch.float64)
    varied = torch.tensor([[0.1, 0.4, 0.7, 1.0]] * 2, dtype=torch.float64)
    streaming = {name: model(x, tau, text) for name, tau in (("same", same), ("varied", varied))}

    per_frame = Block.modulation
    monkeypatch.setattr(Block, "modulation", lambda self, cond, shared: per_frame(self, cond, shared)[:, :1].expand(-1, cond.shape[1], -1, -1))
    ordinary = {name: model(x, tau, text) for name, tau in (("same", same), ("varied", varied))}
    assert torch.allclose(streaming["same"], ordinary["same"], atol=1e-12)
    assert not torch.allclose(streaming["varied"], ordinary["varied"], atol=1e-6)
    monkeypatch.undo()
    assert not torch.allclose(model(x, varied, text), model(x, varied.flip(1), text))
    assert not torch.allclose(model(x, same, text), model(x, same + 0.2, text))  # the clip's time matters


def test_every_token_carries_its_own_frames_position():
    """Tokens are frame-major (H*W tokens of frame 0, then frame 1, ...): token n gets pos_f[n // (H*W)]."""
    model = randomised(TINY)
    _, H, W = TINY.grid
    positions = model.frame_positions()
    assert positions.shape == (TINY.frames * H * W, TINY.dim)
    for n in range(0, TINY.frames * H * W, 5):
        assert torch.equal(positions[n], model.pos_f[n // (H * W)])


def jacobian_support(cfg: DiTConfig) -> torch.Tensor:
    """[tokens, tokens] bool: does output token i depend on input token j (pixel patches)?"""
    model = randomised(cfg)
    x, tau, text = inputs(cfg)
    Fn, H, W = cfg.grid
    p = cfg.patch
    support = torch.zeros(Fn * H * W, Fn * H * W, dtype=torch.bool)
    for j in range(Fn * H * W):
        xj = x.clone().requires_grad_(True)
        f, r, c = j // (H * W), (j // W) % H, j % W
        out = model(xj, tau, text)
        g = torch.autograd.grad(out[0, f, :, r * p : (r + 1) * p, c * p : (c + 1) * p].square().sum(), xj)[0][0]
        support[j] = g.abs().reshape(Fn, cfg.channels, H, p, W, p).sum(dim=(1, 3, 5)).reshape(-1) > 0
    return support  # support[i, j]: output token i reads input token j


def test_one_layer_reads_only_its_window_and_a_shifted_second_layer_crosses_borders():
    cfg = DiTConfig(channels=1, frames=2, height=8, width=8, patch=2, dim=8, depth=1, heads=1, window=(1, 2, 2), vocab=4, text_len=1)
    support = jacobian_support(cfg)
    Fn, H, W = cfg.grid
    cell = lambda t: (t // (H * W), ((t // W) % H) // 2, (t % W) // 2)
    for i in range(Fn * H * W):
        for j in range(Fn * H * W):
            assert bool(support[i, j]) == (cell(i) == cell(j)), (i, j)
    deeper = jacobian_support(DiTConfig(**{**cfg.__dict__, "depth": 2}))
    assert deeper.sum() > support.sum()
    assert not deeper[:, : H * W].any(dim=1)[H * W :].any()  # window depth 1 in time: frames still never mix


@pytest.mark.parametrize(
    "kw, message",
    [({"height": 9}, "not divisible by the patch"), ({"window": (3, 2, 2)}, "does not divide the token grid"), ({"dim": 15}, "heads")],
)
def test_bad_configurations_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        StreamDiT(DiTConfig(**{**TINY.__dict__, **kw}))


def test_input_of_another_size_is_a_clear_error():
    model = StreamDiT(TINY)
    with pytest.raises(ValueError, match="does not match the model's buffer"):
        model(torch.zeros(1, 4, 2, 16, 8), torch.zeros(1, 4), torch.ones(1, 3, dtype=torch.long))


def test_paper4b_stand_in_has_4_23_billion_token_path_parameters():
    """Brief 2.4: d 3072, 28 layers, 24 heads, SwiGLU 8192, patch 1x2x2 on a [16, 64, 64] latent,
    window 16^3 tokens. Built on the meta device (no memory), counted two ways."""
    cfg = DiTConfig(channels=8, frames=16, height=64, width=64, patch=2, dim=3072, depth=28, heads=24, ffn=8192, swiglu=True,
                    window=(16, 16, 16), vocab=2, text_len=256, adaln_single=True)
    assert token_path_parameters(cfg) == 4_227_858_432  # 28 (8 d^2 + 3 d 8192)
    with torch.device("meta"):
        model = StreamDiT(cfg)
    counted = sum(m.weight.numel() for b in model.blocks for m in (b.qkv, b.proj, b.cross_q, b.cross_kv, b.cross_out, b.ffn.up, b.ffn.down))
    assert counted == token_path_parameters(cfg)


def test_memory_frames_are_frame_local_and_seen_by_every_window():
    """The frame-sink extension: a memory frame's cached keys depend only on that frame (so they can
    be computed once when it is emitted), every buffer window sees them, and no memory is exactly
    the paper's model."""
    model = randomised(TINY)
    x, tau, text = inputs(TINY)
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(2, 3, TINY.channels, TINY.height, TINY.width, generator=g, dtype=torch.float64)
    one_by_one = [model.memory_kv(memory[:, i : i + 1], text) for i in range(3)]
    together = model.memory_kv(memory, text)
    for layer, (k, v) in enumerate(together):
        k_cat = torch.cat([kv[layer][0] for kv in one_by_one], dim=2)
        assert torch.allclose(k, k_cat, atol=1e-12) and torch.allclose(v, torch.cat([kv[layer][1] for kv in one_by_one], dim=2), atol=1e-12)
    assert torch.equal(model(x, tau, text, memory[:, :0]), model(x, tau, text))
    memory.requires_grad_(True)
    out = model(x, tau, text, memory)
    (grad,) = torch.autograd.grad(out[0, 2, :, :2, :2].square().sum(), memory)  # one window of one frame
    assert (grad[0].flatten(1).abs().sum(1) > 0).all() and torch.count_nonzero(grad[1]) == 0  # all 3 frames, own sample only
    with pytest.raises(ValueError, match="memory frames"):
        model(x, tau, text, memory[..., :4].detach())


@pytest.mark.parametrize("conv, reach", [(2, {0}), (3, {-1, 0, 1})])
def test_local_conv_reaches_the_promised_frames_and_memory_stays_frame_local(conv, reach):
    """The optional FFN convolution (not in the paper): 3x3 stays inside a frame, 3x3x3 reaches the
    neighbouring frames only (window (1, 2, 2): attention itself never crosses frames); memory frames
    are convolved alone, so their cached keys still depend on their own frame only."""
    cfg = DiTConfig(**{**TINY.__dict__, "local_conv": conv})
    model = randomised(cfg)
    x, tau, text = inputs(cfg)
    x.requires_grad_(True)
    out = model(x, tau, text)
    (grad,) = torch.autograd.grad(out[0, 2].square().sum(), x)
    touched = {f - 2 for f in range(cfg.frames) if grad[0, f].abs().sum() > 0}
    assert touched == reach
    deeper = randomised(DiTConfig(**{**cfg.__dict__, "depth": 2}))  # layer 1's keys come after layer 0's convolution
    memory = torch.randn(2, 3, cfg.channels, cfg.height, cfg.width, dtype=torch.float64)
    alone = torch.cat([deeper.memory_kv(memory[:, i : i + 1], text)[1][0] for i in range(3)], dim=2)
    assert torch.allclose(deeper.memory_kv(memory, text)[1][0], alone, atol=1e-12)
    with pytest.raises(ValueError, match="local_conv"):
        StreamDiT(DiTConfig(**{**TINY.__dict__, "local_conv": 1}))
