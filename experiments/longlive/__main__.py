"""``python -m experiments.longlive``: the experiment's tools, and ``reproduce`` (= ``streamlab reproduce longlive``).
With no argument it lists them (``--help``)."""

import sys

from shared.cli import experiment_main

TOOLS = {
    "generate": (".tool:generate_main", "stream a video from the trained host: --prompt red circle [--switch-at 48 blue square] --frames 200 --out clip.mp4"),
    "serving": (".serving:main", "StreamDiffusionV2's SLO-aware batching against static batching, simulated on the host's measured cost per chunk"),
    "pipeline": (".pipeline:main", "StreamDiffusionV2's pipeline: the host's blocks over gloo ranks, several streams in flight; FPS and latency against one process"),
    "stream_batch": (".stream_batch:main", "StreamDiffusionV2's stream batch: every denoising level of successive chunks in one forward; FPS, latency and quality against the sequential samplers"),
    "v2v": (".v2v:main", "StreamDiffusionV2's motion-aware noise controller: video-to-video edits of slow and fast clips against fixed noise strengths"),
    "streamdiffusion_v2": (".streamdiffusion_v2:main", "table streamdiffusion_v2: each component's paired effect against its strongest baseline, from the four tools' published JSON"),
    "ship": (".tool:ship_main", "make a clean run's self-forcing student the generate tool's default (weights/, with provenance)"),
}

sys.exit(experiment_main(__package__, TOOLS))
