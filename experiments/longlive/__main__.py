"""``python -m experiments.longlive``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce longlive``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS: dict[str, tuple[str, str]] = {}

sys.exit(experiment_main(__package__, TOOLS))
