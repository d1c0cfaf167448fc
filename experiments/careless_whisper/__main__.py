"""``python -m experiments.careless_whisper``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce careless_whisper``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {
    "transcribe": (".tool:main", "stream an audio file through causal Whisper (AUDIO [--model tiny.en] [--chunk-ms 300] [--adapter DIR] [--beam N] [--offline] [--json])")
}

sys.exit(experiment_main(__package__, TOOLS))
