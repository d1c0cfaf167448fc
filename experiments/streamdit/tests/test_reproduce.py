"""The table's plumbing: a finished run's models score new rows (``models_from``) exactly as they
did in that run, a run trained otherwise is refused, and the prompt-switch rows switch the prompt."""

import csv
import json

import pytest
import torch

from shared.errors import ConfigError
from shared.procedural import COLOURS, VOCAB
from shared.runner import reproduce

from ..reproduce import switched_prompts

EXPERIMENT = __package__.split(".")[1]


def results(run) -> dict:
    with open(run.dir / "results.csv") as f:
        return {(r["row"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


def test_models_from_scores_new_rows_on_the_same_models_without_training(tmp_path):
    first = reproduce(EXPERIMENT, "smoke", ["eval.rows=[streamdit_mixed]"], outputs=tmp_path / "a")
    assert ("switch_mixed", "frames_to_follow") in results(first)  # the switch row comes beside the model it needs
    table_only = reproduce(EXPERIMENT, "smoke", ["eval.rows=[streamdit_mixed]", "eval.switch_rows=false", f"models_from={first.dir}"],
                           outputs=tmp_path / "c")
    assert {row for row, _ in results(table_only)} == {"streamdit_mixed", "data"}  # no switch rows
    second = reproduce(EXPERIMENT, "smoke", ["eval.rows=[switch_mixed,streamdit_mixed]", f"models_from={first.dir}"], outputs=tmp_path / "b")
    for name in ("uniform", "mixed"):
        assert (second.dir / "checkpoints" / f"model_{name}.pt").read_bytes() == (first.dir / "checkpoints" / f"model_{name}.pt").read_bytes()
    logged = [json.loads(line)["scope"] for line in open(second.dir / "metrics.jsonl")]
    assert not any(scope.startswith("train/") for scope in logged)  # nothing trained again
    a, b = results(first), results(second)
    for key in (("streamdit_mixed", "validity"), ("streamdit_mixed", "breaks"), ("switch_mixed", "frames_to_follow"), ("switch_mixed", "switch_jump")):
        assert b[key] == pytest.approx(a[key], abs=1e-12)


@pytest.mark.parametrize("override, named", [("trainer.seed=1", "trainer.seed"), ("train.steps=7", "train"), ("model.dim=48", "model")])
def test_models_from_a_run_trained_otherwise_is_refused_before_a_run_directory(tmp_path, override, named):
    first = reproduce(EXPERIMENT, "smoke", ["eval.rows=[full_clip]"], outputs=tmp_path / "a")
    with pytest.raises(ConfigError, match=f"trained with other.*{named}"):
        reproduce(EXPERIMENT, "smoke", ["eval.rows=[full_clip]", f"models_from={first.dir}", override], outputs=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="not a run directory"):
        reproduce(EXPERIMENT, "smoke", [f"models_from={tmp_path}"], outputs=tmp_path / "b")


def test_models_from_ignores_settings_the_other_runs_code_did_not_have(tmp_path):
    """A run made before a key existed (here: distill.rollout_every, dropped from its config.yaml)
    still lends its models; a changed value of a key both have is still refused."""
    first = reproduce(EXPERIMENT, "smoke", ["eval.rows=[full_clip]"], outputs=tmp_path / "a")
    saved = (first.dir / "config.yaml").read_text()
    (first.dir / "config.yaml").write_text("\n".join(line for line in saved.splitlines() if "rollout_every" not in line))
    reproduce(EXPERIMENT, "smoke", ["eval.rows=[full_clip]", f"models_from={first.dir}"], outputs=tmp_path / "b")
    with pytest.raises(ConfigError, match="trained with other distill"):
        reproduce(EXPERIMENT, "smoke", ["eval.rows=[full_clip]", f"models_from={first.dir}", "distill.teacher_s=3"], outputs=tmp_path / "c")


def test_a_switch_off_the_chunk_grid_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of the chunk size of switch_distilled"):
        reproduce(EXPERIMENT, "smoke", ["eval.rows=[switch_distilled]", "eval.switch.at=9"], outputs=tmp_path)
    assert not list(tmp_path.glob("*/*/checkpoints/model_*.pt"))


def test_the_switch_recolours_object_0_only():
    text = torch.tensor([[VOCAB.index("red"), VOCAB.index("circle"), VOCAB.index("green"), VOCAB.index("square")]])
    new_text, after = switched_prompts(text, [["red", "green"]])
    assert after == [[next(c for c in COLOURS if c not in ("red", "green")), "green"]]
    assert VOCAB[int(new_text[0, 0])] == after[0][0] and torch.equal(new_text[0, 1:], text[0, 1:])


def test_the_table_trains_the_rollout_student_on_its_own_rollouts(tmp_path, monkeypatch):
    from .. import train as t

    made = []
    original = t.rollout_pool
    monkeypatch.setattr(t, "rollout_pool", lambda model, cfg, step, device: made.append(step) or original(model, cfg, step, device))
    run = reproduce(EXPERIMENT, "smoke", ["eval.rows=[distilled_framesink,distilled_framesink_rollout]", "train.memory_prob=1.0"], outputs=tmp_path)
    assert made  # only the rollout student rolls out (the data student never does: checked by the count below)
    student, rollout = (torch.load(run.dir / "checkpoints" / f"model_{n}.pt", weights_only=False)["model"] for n in ("student", "student_rollout"))
    assert not all(torch.equal(student[k], rollout[k]) for k in student)
    assert len(made) == 3  # distill.steps 3, rollout_every 1 in the smoke preset: one pool per step, all from the rollout student
    assert ("distilled_framesink_rollout", "validity") in results(run)
