"""Template: fit a small model to a known function; copy this folder to start a new method.

This file only declares the SPEC (no heavy imports): the registry reads it to drive the CLI,
the README table and the tests. The folder name is the experiment's name.
"""

from shared.registry import ExperimentSpec, Table

SPEC = ExperimentSpec(
    title="Template: regression to a known function, measured against its noise floor",
    paper="(none: the forkable starting point for a new method)",
    description=(
        "Fits a constant, a linear model and an MLP to y = f(x) + noise with known noise variance. "
        "A correct fit reaches test MSE close to the noise floor; a broken one cannot."
    ),
    tables={
        "fit": Table(
            title="test error relative to the Bayes-optimal error (the noise variance)",
            rows=("constant", "linear", "mlp"),
            metrics=("test_mse", "mse_over_floor", "test_r2", "train_seconds", "params"),
            headline="mse_over_floor",
            higher_is_better=False,
        )
    },
    preset_notes={"smoke": "seconds, for CI", "cpu": "about 30 s on 2 cores", "paper": "longer fit, wider MLP"},
)
