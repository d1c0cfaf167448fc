"""``python -m experiments.streamdit``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce streamdit``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {"bench": (".bench:main", "time a buffer step of the small model or the 4B stand-in ([--arch 4b|small] [--res 512] [--chunk 2] [--json])")}

sys.exit(experiment_main(__package__, TOOLS))
