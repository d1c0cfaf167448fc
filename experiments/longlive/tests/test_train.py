"""The training recipes: each mask lets exactly the context its recipe promises through, the DMD
gradient is the brief's formula, and a resumed run ends where an uninterrupted one does."""

import pytest
import torch
from omegaconf import OmegaConf

from ..model import CausalVideoDiT, DenseAttention, HostConfig
from ..train import chunk_mask, dmd_loss, flow_loss, host_config, make_batch, teacher_forcing_mask, train

CONF = OmegaConf.load(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "config.yaml")


def tiny_cfg(**train):
    cfg = OmegaConf.merge(CONF, OmegaConf.create({
        "preset_name": "test", "horizon": 4, "data": {"size": 16, "objects": 1},
        "model": {"dim": 16, "depth": 2, "heads": 1, "rope_bands": [8, 4, 4]},  # depth 2: with one block the cached keys never see the prompt
        "train": {"batch_size": 2, "warmup": 1, "generator_every": 2, **train},
        "trainer": {"seed": 3, "log_every": 1, "checkpoint_every": 2}}))
    return cfg


def randomised(host: HostConfig, seed: int = 0) -> CausalVideoDiT:
    torch.manual_seed(seed)
    model = CausalVideoDiT(host).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ada.weight", "ada_out.weight", "patch_out.weight")):
                p.normal_(0, 0.3)
    return model


def test_the_masks_follow_the_recipes():
    m = chunk_mask(frames=4, chunk=2, tokens_per_frame=1)
    assert m.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    tf = teacher_forcing_mask(frames=4, chunk=2, tokens_per_frame=1).int()
    # clean half: block causal among clean tokens only
    assert tf[:4].tolist() == [[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]]
    # noisy chunk i: clean chunks < i and its own noisy chunk, nothing else
    assert tf[4:].tolist() == [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0, 1, 1]]


def test_a_causal_student_never_reads_the_future():
    """Under the block-causal mask a chunk's output does not change when later frames do; under the
    teacher's full attention it does (the test can fail)."""
    host = HostConfig(size=8, patch=4, chunk=2, dim=16, depth=2, heads=1, rope_bands=(8, 4, 4), text_len=4)
    model = randomised(host)
    x = torch.randn(1, 6, 3, 8, 8, dtype=torch.float64)
    later = x.clone()
    later[:, 4:] += 1.0
    sigma = torch.full((1, 6), 0.5, dtype=torch.float64)
    text = torch.tensor([[1, 7, 0, 0]])
    pos = model.positions(6)
    causal = DenseAttention(host.rope(), pos, chunk_mask(6, 2, host.tokens_per_frame))
    full = DenseAttention(host.rope(), pos)
    assert torch.allclose(model(x, sigma, text, causal)[:, :4], model(later, sigma, text, causal)[:, :4], atol=1e-12)
    assert not torch.allclose(model(x, sigma, text, full)[:, :4], model(later, sigma, text, full)[:, :4], atol=1e-6)


def test_dmd_gradient_is_the_normalised_score_difference():
    host = HostConfig(size=8, patch=4, chunk=2, dim=16, depth=1, heads=1, rope_bands=(8, 4, 4), text_len=4)
    teacher, critic = randomised(host, 1), randomised(host, 2)
    text = torch.tensor([[1, 7, 0, 0], [2, 8, 0, 0]])
    video = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    dmd_loss(video, teacher, teacher, text, torch.Generator().manual_seed(0), 5.0, 1.0).backward()
    assert video.grad.abs().max() < 1e-15  # fake == real (guidance 1): nothing to learn, up to rounding
    video.grad = None
    loss = dmd_loss(video, teacher, critic, text, torch.Generator().manual_seed(0), 5.0, 2.0)
    loss.backward()
    # recompute the brief's gradient by hand: d loss / d x = (fake - real) / mean|x - real| / N
    from ..train import noise_levels, x0_of

    g = torch.Generator().manual_seed(0)
    sigma = noise_levels(g, (2, 1), 5.0).expand(2, 4).double()
    noisy = (1 - sigma[..., None, None, None]) * video.detach() + sigma[..., None, None, None] * torch.randn(video.shape, generator=g).double()
    real_c, real_u = x0_of(teacher, noisy, sigma, text), x0_of(teacher, noisy, sigma, torch.zeros_like(text))
    real = real_u + 2.0 * (real_c - real_u)
    fake = x0_of(critic, noisy, sigma, text)
    expected = (fake - real) / (video.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True) / video.numel()
    assert torch.allclose(video.grad, expected.detach(), rtol=1e-9, atol=1e-15)


def test_flow_losses_are_finite_and_teacher_forcing_sees_the_clean_copy():
    cfg = tiny_cfg()
    host = host_config(cfg)
    model = CausalVideoDiT(host)
    video, text = make_batch(cfg, 0, 2)
    assert video.shape == (2, 4, 3, 16, 16) and text.shape == (2, 4)
    for kind in ("teacher", "diffusion_forcing", "teacher_forcing"):
        loss = flow_loss(model, video, text, kind, torch.Generator().manual_seed(0), 5.0)
        assert torch.isfinite(loss) and loss > 0
    # the batch is a pure function of (seed, step, example)
    again, _ = make_batch(cfg, 0, 2)
    assert torch.equal(video, again) and not torch.equal(video, make_batch(cfg, 1, 2)[0])


def test_a_resumed_self_forcing_run_ends_where_an_uninterrupted_one_does(tmp_path):
    cfg = tiny_cfg()
    torch.set_num_threads(1)
    teacher, _ = train(cfg, "teacher", 2, None)
    straight, summary = train(cfg, "self_forcing", 4, tmp_path / "a.pt", init=teacher.state_dict(), teacher=teacher)
    train(cfg, "self_forcing", 2, tmp_path / "b.pt", init=teacher.state_dict(), teacher=teacher)  # killed after 2 iterations
    state = torch.load(tmp_path / "b.pt", weights_only=False)
    assert state["step"] == 2 and "critic" in state
    resumed, _ = train(cfg, "self_forcing", 4, tmp_path / "b.pt", init=teacher.state_dict(), teacher=teacher)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(straight.parameters(), teacher.parameters()))  # the generator moved
    assert summary["steps"] == 4 and summary["seconds"] > 0


class Oracle(torch.nn.Module):
    """Knows the clean clip: returns the exact velocity (x - x0) / sigma = eps - x0, and records the levels it was given."""

    def __init__(self, host, video):
        super().__init__()
        self.cfg, self.video, self.levels = host, video, []
        self.positions = CausalVideoDiT.positions.__get__(self)

    def forward(self, x, sigma, text, attention):
        self.levels.append(sigma)
        clean = self.video if x.shape[1] == self.video.shape[1] else torch.cat([self.video, self.video], dim=1)
        s = sigma[..., None, None, None]
        return torch.where(s > 0, (x - clean) / s.clamp_min(1e-12), torch.zeros_like(x))


def test_an_oracle_velocity_gives_zero_loss_and_levels_follow_each_recipe():
    cfg = tiny_cfg()
    cfg.horizon = 6
    host = host_config(cfg)
    video, text = make_batch(cfg, 0, 2)
    video = video.double()
    for kind in ("teacher", "diffusion_forcing", "teacher_forcing"):
        oracle = Oracle(host, video)
        assert flow_loss(oracle, video, text, kind, torch.Generator().manual_seed(0), 5.0) < 1e-20
        sigma = oracle.levels[0]
        if kind == "teacher":
            assert (sigma == sigma[:, :1]).all()  # one level per clip
        else:
            noisy = sigma[:, -6:]
            chunks = noisy.reshape(2, 3, 2)
            assert (chunks == chunks[..., :1]).all() and not (noisy == noisy[:, :1]).all()  # one level per chunk, chunks independent
        if kind == "teacher_forcing":
            assert (sigma[:, :6] == 0).all()  # the clean copy


def test_the_first_iteration_already_updates_the_generator():
    cfg = tiny_cfg()
    teacher, _ = train(cfg, "teacher", 1, None)
    student, _ = train(cfg, "self_forcing", 1, None, init=teacher.state_dict(), teacher=teacher)
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))


def test_long_tuning_streams_past_the_horizon_with_the_serving_policy_and_scores_the_last_window():
    from ..train import long_policy, rollout

    cfg = tiny_cfg(long_frames=8, long_policy={"sink_frames": 1, "window_frames": 2})
    host = host_config(cfg)
    model = randomised(host, 4).float()
    text = torch.tensor([[1, 7, 0, 0]])
    policy = long_policy(cfg, host)
    tail = rollout(model, text, 8, torch.Generator().manual_seed(0), 3, True, [1.0, 0.9, 0.8, 0.6], policy, keep_last=4)
    whole = rollout(model, text, 8, torch.Generator().manual_seed(0), 3, False, [1.0, 0.9, 0.8, 0.6], policy)
    assert tail.shape[1] == 4 and tail.requires_grad and torch.allclose(tail.detach(), whole[:, 4:])  # the same stream, last window kept
    full_cache = rollout(model, text, 8, torch.Generator().manual_seed(0), 3, False, [1.0, 0.9, 0.8, 0.6])
    assert not torch.allclose(whole[:, 4:], full_cache[:, 4:], atol=1e-5)  # the policy is the one streaming
    teacher, _ = train(cfg, "teacher", 1, None)
    sf, _ = train(cfg, "self_forcing", 1, None, init=teacher.state_dict(), teacher=teacher)
    tuned, _ = train(cfg, "long_tuned", 1, None, init=sf.state_dict(), teacher=teacher)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), sf.parameters()))


def test_the_cost_per_frame_is_timed_over_the_rows_own_rollout_length(monkeypatch):
    """ms_per_frame's last window is the last fps_frames of the row's rollout (12 horizons for the
    deep_forcing table), not of a fixed 10-horizon one."""
    from .. import reproduce
    from ..stream import Stream

    cfg = tiny_cfg()
    cfg.eval.fps_frames = 4
    host = host_config(cfg)
    model = CausalVideoDiT(host).eval()
    method = OmegaConf.create({"policy": {"sink_frames": 1, "window_frames": 2}})
    policy = reproduce.row_policy(method, host, int(cfg.horizon))
    chunks = []
    original = Stream.generate
    monkeypatch.setattr(Stream, "generate", lambda self, text, n, **kw: chunks.append(n) or original(self, text, n, **kw))
    first, last = reproduce.ms_per_frame(model, policy, cfg, torch.zeros(1, 2 * int(cfg.data.objects), dtype=torch.long), "cpu", 12 * int(cfg.horizon))
    assert chunks == [12 * int(cfg.horizon) // host.chunk] and first > 0 and last > 0


def test_deep_sink_rows_take_the_official_one_chunk_gap_and_refuse_positions_wider_than_training():
    from shared.errors import ConfigError
    from shared.streaming import DeepSink

    from .. import reproduce

    cfg = tiny_cfg()
    host = host_config(cfg)
    horizon = int(cfg.horizon)  # 4 frames; chunk 2
    policy = reproduce.row_policy(OmegaConf.create({"policy": {"kind": "deep_sink", "sink_frames": 1, "window_frames": 1, "gap_frames": 1}}), host, horizon)
    assert isinstance(policy, DeepSink) and policy.gap_frames == 1
    assert reproduce.row_policy(OmegaConf.create({"policy": {"kind": "deep_sink", "sink_frames": 1, "window_frames": 2}}), host, horizon).gap_frames == 0
    with pytest.raises(ConfigError, match="sink 1 \\+ gap 2 \\+ window 1 - 1 \\+ chunk 2 = 5"):
        reproduce.row_policy(OmegaConf.create({"policy": {"kind": "deep_sink", "sink_frames": 1, "window_frames": 1, "gap_frames": 2}}), host, horizon)


def test_models_from_scores_new_deep_forcing_rows_on_the_same_student_without_training(tmp_path):
    """A finished run's checkpoints score rows it never had (the sink gap, token compression): the
    student is the very same file, nothing trains again, a row both runs have scores identically;
    a run trained with another seed is refused before any run directory exists."""
    import csv
    import json

    from shared.errors import ConfigError
    from shared.runner import reproduce

    def results(run) -> dict:
        with open(run.dir / "results.csv") as f:
            return {(r["row"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}

    first = reproduce("longlive", "smoke", ["eval.rows=[deep_sink]"], outputs=tmp_path / "a")
    second = reproduce("longlive", "smoke", ["eval.rows=[deep_sink,deep_sink_gap,compressed_tokens]", f"models_from={first.dir}"], outputs=tmp_path / "b")
    for name in ("teacher", "self_forcing"):
        assert (second.dir / "checkpoints" / f"model_{name}.pt").read_bytes() == (first.dir / "checkpoints" / f"model_{name}.pt").read_bytes()
    assert not any(json.loads(line)["scope"].startswith("train/") for line in open(second.dir / "metrics.jsonl"))
    a, b = results(first), results(second)
    for metric in ("validity_12x", "drift_12x", "boundary_jump"):  # the smoke host's validity is 0: the seam ratio carries the signal
        assert b[("deep_sink", metric)] == a[("deep_sink", metric)]
    assert b[("compressed_tokens", "boundary_jump")] != b[("deep_sink", "boundary_jump")] != b[("deep_sink_gap", "boundary_jump")]
    with pytest.raises(ConfigError, match="trained with other.*trainer.seed"):
        reproduce("longlive", "smoke", ["eval.rows=[deep_sink]", f"models_from={first.dir}", "trainer.seed=5"], outputs=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_compression_rows_choose_frame_or_token_granularity():
    from shared.errors import ConfigError

    from .. import reproduce

    cfg = tiny_cfg()
    host = host_config(cfg)
    policy = {"kind": "compressed", "sink_frames": 1, "window_frames": 1, "budget_frames": 2, "recent_frames": 1}
    assert reproduce.row_policy(OmegaConf.create({"policy": policy}), host, 4).granularity == "frame"
    assert reproduce.row_policy(OmegaConf.create({"policy": {**policy, "granularity": "token"}}), host, 4).granularity == "token"
    with pytest.raises(ConfigError, match="granularity"):
        reproduce.row_policy(OmegaConf.create({"policy": {**policy, "granularity": "head"}}), host, 4)
