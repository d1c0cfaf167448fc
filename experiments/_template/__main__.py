"""``python -m experiments._template``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce _template``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {}

sys.exit(experiment_main(__package__, TOOLS))
