"""``python -m experiments.careless_whisper``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce careless_whisper``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {
    "transcribe": (".tool:main", "stream an audio file through causal Whisper (AUDIO [--chunk-ms 300|1000] [--adapter DIR] [--beam N] [--offline] [--json] [--trace])"),
    "generalise": (".generalise:main", "every row on the Asterisk test split and on other speakers, paired by file ([--adapter DIR] [--chunk-ms 300] [--validation] [--out FILE])"),
    "paired": (".paired:main", "two generalise --out files compared file by file: B - A with its s.e. per set (A.json B.json [--row ROW])"),
}

sys.exit(experiment_main(__package__, TOOLS))
