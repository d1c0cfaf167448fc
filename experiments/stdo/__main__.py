"""``python -m experiments.stdo``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce stdo``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {
    "fit": (".tool:fit_main", "overfit a bundle of chunk models to a video (VIDEO --scale 4 --chunks 4 [--out BUNDLE])"),
    "upscale": (".tool:upscale_main", "upscale a low-resolution video with a bundle (LOWRES_VIDEO BUNDLE OUT.mp4)"),
    "sweep": (".sweep:main", "collect a model size x k sweep of runs into one JSON (RUNS_DIR --out FILE.json)"),
}

sys.exit(experiment_main(__package__, TOOLS))
