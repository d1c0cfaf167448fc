"""Every config of every experiment composes; bad keys, presets and options fail with one clear line."""

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

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
        (["nothing.here=1"], "smoke", "valid keys at the top level: data, logger, model, optim, paths, preset_name, row, trainer"),
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
