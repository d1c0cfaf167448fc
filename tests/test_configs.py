"""Every config of every experiment composes; bad keys, presets and options fail with one clear line."""

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from shared import config
from shared.errors import ConfigError
from shared.registry import discover

EXPERIMENTS = discover()
CASES = [(n, p) for n, e in EXPERIMENTS.items() for p in e.spec.presets]
ROWS = [(n, p, t, r) for n, e in EXPERIMENTS.items() for p in e.spec.presets for t, tab in e.spec.tables.items() for r in tab.rows]


@pytest.mark.parametrize("name,preset", CASES)
def test_preset_composes_and_names_itself(name, preset):
    cfg = config.compose(EXPERIMENTS[name], preset)
    assert cfg.preset_name == preset
    assert {"trainer", "logger", "paths"} <= set(cfg), "shared groups missing (defaults: - streamlab)"
    config.to_plain(cfg)  # every interpolation resolves


@pytest.mark.parametrize("name,preset,table,row", ROWS)
def test_every_table_row_composes_at_every_preset(name, preset, table, row):
    cfg = config.compose(EXPERIMENTS[name], preset, row=(table, row))
    assert (cfg.row.table, cfg.row.name) == (table, row)


def test_presets_differ_in_scale():
    template = EXPERIMENTS["_template"]
    smoke, cpu, paper = (config.compose(template, p) for p in ("smoke", "cpu", "paper"))
    assert smoke.optim.steps < cpu.optim.steps < paper.optim.steps


def test_user_override_beats_row_and_preset():
    cfg = config.compose(EXPERIMENTS["_template"], "smoke", ["optim.steps=7", "model.width=3"], row=("fit", "mlp"))
    assert cfg.optim.steps == 7 and cfg.model.width == 3


@pytest.mark.parametrize(
    "overrides,preset,expected",
    [
        (["optim.lrr=1"], "smoke", "unknown config key 'optim.lrr' for experiment '_template'; valid keys under 'optim': batch_size, lr, steps, warmup, weight_decay"),
        (["nothing.here=1"], "smoke", "valid keys at the top level: data, eval, logger, model, optim, override_rows, paths, preset_name, row, trainer"),
        (["model=transformer"], "smoke", "unknown model 'transformer' for experiment '_template'; valid: constant, linear, mlp"),
        ([], "huge", "unknown preset 'huge' for experiment '_template'; valid: smoke, cpu, paper"),
        (["optim.lr=["], "smoke", "cannot parse override"),
    ],
)
def test_bad_config_input_is_one_clear_line(overrides, preset, expected):
    with pytest.raises(ConfigError) as err:
        config.compose(EXPERIMENTS["_template"], preset, overrides)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_unknown_row_names_the_valid_rows():
    with pytest.raises(ConfigError, match="valid: fit/constant, fit/linear, fit/mlp"):
        config.compose(EXPERIMENTS["_template"], "smoke", row=("fit", "transformer"))


@pytest.mark.parametrize("launcher,target", [("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"), ("local", "hydra._internal.core_plugins.basic_launcher.BasicLauncher")])
def test_launcher_configs_compose(launcher, target):
    conf_dir = str(EXPERIMENTS["_template"].conf_dir)
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = hydra_compose("config", overrides=["preset=smoke", f"+launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min > 0


# ---- overrides that cannot mislead ---------------------------------------------------------------

def test_an_override_of_what_the_rows_set_is_refused_naming_the_rows():
    """`model=linear` used to train all three rows as the linear model, labelled constant/linear/mlp."""
    template = EXPERIMENTS["_template"]
    with pytest.raises(ConfigError, match=r"set by rows constant, linear, mlp .*eval\.rows=\[linear\].*override_rows=true"):
        config.compose(template, "smoke", ["model=linear"])
    with pytest.raises(ConfigError, match="set by rows linear of"):
        config.compose(template, "smoke", ["eval.rows=[linear]", "model=mlp"])
    # asked for explicitly: every row is the linear model
    forced = ["override_rows=true", "model=linear"]
    assert {config.compose(template, "smoke", forced, row=("fit", r)).model.kind for r in ("constant", "mlp")} == {"linear"}
    # tuning inside the group a row picks is no conflict, nor is selecting rows
    assert config.compose(template, "smoke", ["eval.rows=[mlp]", "model.width=16"], row=("fit", "mlp")).model.width == 16
    assert list(config.compose(template, "smoke", ["eval.rows=[mlp,linear]"]).eval.rows) == ["mlp", "linear"]
    # QUEEN's rows write method.gate, method.quantize, ...: replacing the whole method dict is refused too
    with pytest.raises(ConfigError, match="'method' is set by rows queen, float_gated, retrain, no_update, no_gate, no_mask, no_quant"):
        config.compose(EXPERIMENTS["queen"], "smoke", ["method={name: q, gate: true, quantize: true, retrain: false}"])


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_refuses_an_override_of_a_row_setting(name):
    experiment = EXPERIMENTS[name]
    settings = config.row_settings(experiment)
    assert settings, f"{name}: no row file sets anything"
    key, rows = next(iter(settings.items()))
    options = config._group_options(experiment, key)  # a config group: name one of its options; a value: its own
    override = f"{key}={options[0]}" if options else f"{key}={OmegaConf.select(config.compose(experiment, 'smoke'), key)}"
    with pytest.raises(ConfigError, match="changes what table rows set"):
        config.compose(experiment, "smoke", [f"eval.rows=[{rows[0]}]", override])


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["optim.steps=abc"], "optim.steps must be an integer"),
        (["optim.lr=fast"], "optim.lr must be a number"),
        (["model.kind=rnn"], "unknown model.kind for '_template'; valid: constant, linear, mlp"),
        (["eval.rows=[linear,lstm]"], "eval.rows: unknown rows lstm"),
        (["trainer.seed=[1]"], "trainer.seed must be an integer"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line(overrides, expected):
    with pytest.raises(ConfigError) as err:
        config.compose(EXPERIMENTS["_template"], "smoke", overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_rows_are_declared_once_in_the_spec(name):
    """SPEC names the rows; the config says ??? (filled from SPEC) and each row has its file."""
    import re

    experiment = EXPERIMENTS[name]
    text = (experiment.conf_dir / "config.yaml").read_text()
    assert re.search(r"^  rows: \?\?\?", text, re.MULTILINE), f"{name}: eval.rows must be ??? in config.yaml"
    spec_rows = [r for t in experiment.spec.tables.values() for r in t.rows]
    files = sorted(p.stem for p in (experiment.conf_dir / "experiment").glob("*.yaml"))
    assert files == sorted(f"{t}_{r}" for t, tab in experiment.spec.tables.items() for r in tab.rows)
    assert list(config.compose(experiment, "smoke").eval.rows) == experiment.spec.default_rows
    for preset in experiment.spec.presets:
        assert set(config.compose(experiment, preset).eval.rows) <= set(spec_rows)
