"""``python -m experiments.streaming_llm``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce streaming_llm``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {}

sys.exit(experiment_main(__package__, TOOLS))
