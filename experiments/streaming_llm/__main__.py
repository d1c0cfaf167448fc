"""``python -m experiments.streaming_llm``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce streaming_llm``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {
    "generate-bench": (".generate_bench:main", "model.generate through SinkCache vs DynamicCache on SmolLM2: tokens against the project loop, ms/token ([--prompt 256] [--new 128] [--out FILE])"),
}

sys.exit(experiment_main(__package__, TOOLS))
