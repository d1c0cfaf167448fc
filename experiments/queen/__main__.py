"""``python -m experiments.queen``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce queen``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {}

sys.exit(experiment_main(__package__, TOOLS))
