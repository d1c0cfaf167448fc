"""``python -m experiments.queen``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce queen``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {
    "claims": (".claims:main", "the claims over completed runs, paired by seed, met only beyond 2 s.e. (RUN ... [--out FILE])"),
    "entering": (".entering:main", "an object enters mid-stream: QUEEN with and without densification after frame 1, paired over seeds ([--seeds ...] [--out FILE])"),
}

sys.exit(experiment_main(__package__, TOOLS))
