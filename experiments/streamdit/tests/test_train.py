"""Training: the losses mean what they say (oracle distillation target, guidance), a step lowers the
loss, a resumed run ends where an uninterrupted one does, a checkpoint from another configuration is
refused, and two DDP processes under torchrun (gloo, CPU) agree with each other and with one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.config import compose
from shared.errors import ConfigError
from shared.registry import get

from ..model import StreamDiT
from ..sample import guided
from ..schedule import Partition
from ..train import Batch, flow_matching_loss, load_model, make_batch, model_config, teacher_segment, train

EXPERIMENT = __package__.split(".")[1]  # the folder this test lives in: a fork tests itself


ROOT = Path(__file__).resolve().parents[3]


def smoke_cfg(**overrides):
    cfg = compose(get(EXPERIMENT), "smoke", [f"{k}={v}" for k, v in overrides.items()])
    return cfg


class Oracle(torch.nn.Module):
    """The exact velocity of the straight path from a known X0 to a known X1 (text-independent)."""

    def __init__(self, x1, x0):
        super().__init__()
        self.x1, self.x0 = x1, x0

    def forward(self, x, tau, text, memory=None):
        return (self.x1 - self.x0).repeat(len(x) // len(self.x1), *([1] * (x.dim() - 1)))


@pytest.mark.parametrize("c, s, power", [(2, 4, 1.0), (1, 3, 1.0), (4, 2, 1.0), (2, 4, 2.0)])
def test_oracle_teacher_gives_the_exact_segment_displacement(c, s, power):
    """With the true velocity, s teacher micro-steps move every chunk by s / T of (X1 - X0), so the
    student's target (end - start) N is exactly X1 - X0 for every chunk, at any guidance scale."""
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(2, 8, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 8, 3, 4, 4, generator=g, dtype=torch.float64)
    batch = Batch(x1, x1[:, :0], torch.ones(2, 2, dtype=torch.long), [0, 1])
    part = Partition.for_buffer(8, c, s)
    start, tau, target = teacher_segment(Oracle(x1, x0), batch, x0, part, guidance=3.0, power=power)
    assert torch.allclose(target, x1 - x0, atol=1e-10)
    head, tail = tau[0, :c], tau[0, -c:]
    assert torch.allclose(head, torch.full_like(head, ((part.N - 1) / part.N) ** power)) and torch.equal(tail, torch.zeros_like(tail))
    assert torch.allclose(start, tau[..., None, None, None] * x1 + (1 - tau[..., None, None, None]) * x0)


def test_guidance_is_linear_in_its_scale_and_one_is_the_conditional_model():
    cfg = model_config(smoke_cfg())
    torch.manual_seed(0)
    model = StreamDiT(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, cfg.frames, 3, cfg.height, cfg.width, generator=g, dtype=torch.float64)
    tau = torch.rand(2, cfg.frames, generator=g, dtype=torch.float64)
    text = torch.tensor([[1, 7], [3, 9]])
    v1, v2, v3 = (guided(model, text, w)(x, tau) for w in (1.0, 2.0, 3.0))
    assert torch.allclose(v1, model(x, tau, text)) and not torch.allclose(v2, v1)
    assert torch.allclose(v3 - v2, v2 - v1, atol=1e-10)


def test_steps_on_one_batch_lower_the_flow_matching_loss():
    cfg = smoke_cfg()
    torch.manual_seed(0)
    model = StreamDiT(model_config(cfg))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = make_batch(cfg, 0, 4)
    losses = []
    for _ in range(8):
        loss = flow_matching_loss(model, batch, [2], cfg, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    cfg = smoke_cfg(**{"trainer.checkpoint_every": 2})
    whole, _ = train(cfg, "flow", 4, 1e-3, tmp_path / "whole.pt", chunk_sizes=[1, 2, 4, 8])
    stopped = tmp_path / "stopped.pt"
    _stop_after(cfg, 2, 4, stopped)
    resumed, _ = train(cfg, "flow", 4, 1e-3, stopped, chunk_sizes=[1, 2, 4, 8])
    assert torch.load(stopped, weights_only=False)["step"] == 4
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _stop_after(cfg, stop: int, steps: int, path: Path):
    """Train a ``steps``-step schedule but die after ``stop`` steps (the checkpoint at ``stop`` stays)."""
    from .. import train as t

    original = t.make_batch
    calls = {"n": 0}

    def dying(*args, **kwargs):
        if calls["n"] == stop:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(*args, **kwargs)

    t.make_batch = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, "flow", steps, 1e-3, path, chunk_sizes=[1, 2, 4, 8])
    finally:
        t.make_batch = original
    assert torch.load(path, weights_only=False)["step"] == stop


def test_a_checkpoint_from_another_configuration_is_a_clear_error(tmp_path):
    cfg = smoke_cfg()
    train(cfg, "flow", 1, 1e-3, tmp_path / "m.pt", chunk_sizes=[8])
    other = smoke_cfg(**{"model.dim": 48})
    with pytest.raises(ValueError, match="another model configuration.*dim"):
        load_model(other, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="another model configuration"):
        train(other, "flow", 2, 1e-3, tmp_path / "m.pt", chunk_sizes=[8])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(cfg, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="train kind"):
        train(cfg, "distill", 1, 1e-3, None)  # a student needs its teacher


WORKER = """
import json, sys
import torch
from shared.config import compose
from shared.registry import get
from experiments.EXPERIMENT.train import distributed, parameter_checksum, train
cfg = compose(get("EXPERIMENT"), "smoke", ["train.batch_size=4"])
torch.set_num_threads(1)
model, _ = train(cfg, "flow", 3, 1e-3, None, chunk_sizes=[1, 2, 4, 8])
rank, world = distributed()
with open(sys.argv[1] + f"/rank{rank}.json", "w") as f:
    json.dump({"world": world, "checksum": parameter_checksum(model), "first": model.patch_in.weight.flatten()[:8].tolist()}, f)
if world > 1:  # as train.main does: a gloo group left to the interpreter's exit can abort a rank
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


def test_two_gloo_processes_under_torchrun_agree_with_each_other_and_with_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("EXPERIMENT", EXPERIMENT))  # a script outside the package: absolute names
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "STREAMLAB_PROGRESS": "0"}
    for folder, procs in (("two", 2), ("one", 1)):
        (tmp_path / folder).mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", str(script), str(tmp_path / folder)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert ranks[0]["world"] == 2 and single["world"] == 1
    assert ranks[0]["checksum"] == ranks[1]["checksum"] and ranks[0]["first"] == ranks[1]["first"]
    assert torch.allclose(torch.tensor(ranks[0]["first"]), torch.tensor(single["first"]), atol=1e-5)
    assert ranks[0]["first"] != pytest.approx([0.0] * 8)


def test_the_plain_rows_train_the_papers_dit_without_the_ffn_convolution(tmp_path):
    """models.<name>.model overrides the architecture of that trained model only: the *_plain models
    have no FFN convolution (the paper's DiT), the others keep the preset's; a plain checkpoint is
    refused as the convolutional model and loads as itself."""
    cpu = compose(get(EXPERIMENT), "cpu", [])
    assert model_config(cpu, "mixed").local_conv == 3 and model_config(cpu).local_conv == 3
    assert model_config(cpu, "uniform_plain").local_conv == 0 and model_config(cpu, "mixed_plain").local_conv == 0
    assert cpu.models.mixed_plain.init == "uniform_plain" and list(cpu.models.mixed_plain.chunks) == list(cpu.models.mixed.chunks)
    cfg = smoke_cfg(**{"model.local_conv": 3})
    plain, _ = train(cfg, "flow", 1, 1e-3, tmp_path / "plain.pt", chunk_sizes=[8], name="uniform_plain")
    conv, _ = train(cfg, "flow", 1, 1e-3, tmp_path / "conv.pt", chunk_sizes=[8], name="uniform")
    assert not any("conv" in k for k in plain.state_dict()) and any("conv" in k for k in conv.state_dict())
    with pytest.raises(ValueError, match="another model configuration.*local_conv"):
        load_model(cfg, tmp_path / "plain.pt", name="uniform")
    assert load_model(cfg, tmp_path / "plain.pt", name="uniform_plain").cfg.local_conv == 0
    for row, model in (("full_clip_plain", "uniform_plain"), ("streamdit_mixed_plain", "mixed_plain")):
        assert compose(get(EXPERIMENT), "cpu", [], row=("streamdit", row)).method.model == model


def test_the_table_trains_the_plain_rows_models_without_the_convolution(tmp_path):
    from shared.runner import reproduce

    run = reproduce(EXPERIMENT, "smoke", ["eval.rows=[streamdit_mixed_plain]", "model.local_conv=3"], outputs=tmp_path)
    for name in ("uniform_plain", "mixed_plain"):
        state = torch.load(run.dir / "checkpoints" / f"model_{name}.pt", weights_only=False)
        assert state["model_config"]["local_conv"] == 0 and not any("conv" in k for k in state["model"])
    assert not (run.dir / "checkpoints" / "model_mixed.pt").exists()  # only what the row needs


# ---- the frame-sink student trained on its own rollouts ------------------------------------------


def _memory_step(cfg, want_memory=True):
    """A step whose global batch carries memory frames (or none)."""
    from ..train import make_batch

    return next(s for s in range(100) if (make_batch(cfg, s, 1).memory.shape[1] > 0) == want_memory)


def test_rollout_batches_take_the_buffer_and_its_memory_from_one_rollout():
    """Pool frame f of rollout j holds the value 100 j + f: every example's memory is that rollout's
    first frame and the frames just before its buffer, which starts where the memory ends."""
    from ..train import make_batch, rollout_batch

    cfg = smoke_cfg(**{"train.memory_max": 3, "train.text_dropout": 0.0})
    B, gap = int(cfg.buffer), int(cfg.data.memory_gap)
    frames = (100 * torch.arange(3).reshape(3, 1) + torch.arange(gap + B)).float().reshape(3, gap + B, 1, 1, 1).expand(3, gap + B, 3, 16, 16)
    texts = torch.tensor([[1, 2], [3, 4], [5, 6]])
    checked = 0
    for step in range(40):
        batch = make_batch(cfg, step, 4, 2)
        out = rollout_batch(batch, (frames, texts), cfg, step, offset=2)
        m = batch.memory.shape[1]
        if m == 0:
            assert out is batch  # data batches without memory stay data
            continue
        for n in range(4):
            first = int(out.x1[n, 0, 0, 0, 0])
            j, g = first // 100, first % 100
            assert torch.equal(out.x1[n, :, 0, 0, 0], torch.arange(first, first + B).float())
            want = [100 * j] + list(range(100 * j + g - (m - 1), 100 * j + g))
            assert out.memory[n, :, 0, 0, 0].tolist() == want and torch.equal(out.text[n], texts[j])
            assert m <= g <= gap
        checked += 1
    assert checked >= 5


def test_the_pool_is_the_students_own_frame_sink_stream():
    from ..sample import FrameSinkMemory, stream
    from ..train import rollout_pool

    cfg = smoke_cfg()
    torch.manual_seed(0)
    model = StreamDiT(model_config(cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    frames, text = rollout_pool(model.train(), cfg, 6, "cpu")
    assert model.training and frames.shape[:2] == (int(cfg.distill.rollout_pool), int(cfg.data.memory_gap) + int(cfg.buffer))
    part = Partition.for_buffer(int(cfg.buffer), int(cfg.distill.teacher_c), 1)
    memory = FrameSinkMemory(int(cfg.eval.memory.sink_frames), int(cfg.eval.memory.window_frames))
    want = stream(model.eval(), text, part, frames.shape[1], 1.0, torch.Generator().manual_seed(int(cfg.trainer.seed) * 7919 + 6), memory)
    assert torch.equal(frames, want)


def test_the_rollout_student_rolls_out_anew_every_rollout_every_steps_and_resumes_exactly(tmp_path, monkeypatch):
    from .. import train as t

    cfg = smoke_cfg(**{"train.memory_prob": 1.0, "distill.rollout_every": 2, "trainer.checkpoint_every": 2})
    torch.manual_seed(0)
    teacher = StreamDiT(model_config(cfg))
    with torch.no_grad():  # signal on every path (a fresh DiT's zero output layer makes every target 0)
        for p in teacher.parameters():
            p.normal_(0, 0.2)
    made = []
    original = t.rollout_pool
    monkeypatch.setattr(t, "rollout_pool", lambda model, c, step, device: made.append(step) or original(model, c, step, device))
    whole, _ = train(cfg, "distill", 5, 1e-3, tmp_path / "whole.pt", teacher=teacher, init=teacher.state_dict(), memory_source="rollout")
    assert made == [0, 2, 4]
    data, _ = train(cfg, "distill", 5, 1e-3, tmp_path / "data.pt", teacher=teacher, init=teacher.state_dict())
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), data.state_dict().values()))
    stopped = tmp_path / "stopped.pt"
    original_batch = t.make_batch
    calls = {"n": 0}

    def dying(*args, **kwargs):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original_batch(*args, **kwargs)

    monkeypatch.setattr(t, "make_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, "distill", 5, 1e-3, stopped, teacher=teacher, init=teacher.state_dict(), memory_source="rollout")
    monkeypatch.setattr(t, "make_batch", original_batch)
    resumed, _ = train(cfg, "distill", 5, 1e-3, stopped, teacher=teacher, init=teacher.state_dict(), memory_source="rollout")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="must divide trainer.checkpoint_every"):
        train(smoke_cfg(**{"distill.rollout_every": 2}), "distill", 1, 1e-3, None, teacher=teacher, memory_source="rollout")
