"""StreamDiT (2025): real-time streaming text-to-video by denoising a moving buffer of frames at
staggered noise levels with a time-varying, window-attention DiT."""

from shared.registry import ExperimentSpec, Table

QUALITY = ("validity", "jerk_px", "dynamic", "drift", "colour_drift", "breaks", "flicker")

SPEC = ExperimentSpec(
    title="StreamDiT: streaming video generation with a moving buffer",
    paper="Kodaira, Hou, Hou, Georgopoulos, Juefei-Xu, Tomizuka, Zhao. StreamDiT: Real-Time Streaming Text-to-Video Generation. arXiv 2507.03745 (2025)",
    description=(
        "A buffer of frames at staggered noise levels is denoised by a DiT with per-frame adaLN and shifted 3D window "
        "attention; every step emits a clean chunk and takes in noise. Trained by buffered flow matching over mixed "
        "partition schemes, distilled segment-wise into a student with one step per chunk. Here: small models on "
        "procedural clips scored by a detector that reads the known objects back, over rollouts 10x the buffer."
    ),
    tables={
        "streamdit": Table(
            title="long rollouts (10 buffers) from held-out prompts: detector metrics, drift, cost per frame and speed",
            rows=("full_clip", "fifo", "streamdit_c1", "streamdit_mixed", "distilled", "distilled_framesink", "distilled_framesink_rollout",
                  "full_clip_plain", "streamdit_mixed_plain"),
            metrics=(*QUALITY, "boundary_breaks", "levels_per_frame", "forwards_per_frame", "fps"),
            headline="validity",
            higher_is_better=True,
        ),
        "streamdit_switch": Table(
            title="a prompt switch mid-stream (object 0 changes colour at eval.switch.at): frames until followed, the jump at the switch",
            rows=("switch_full_clip", "switch_fifo", "switch_c1", "switch_mixed", "switch_distilled"),
            metrics=("frames_to_follow", "followed", "switch_jump", "validity_after"),
            headline="frames_to_follow",
            higher_is_better=False,
        ),
        "reference": Table(
            title="the procedural clips themselves through the same detector (a perfect generator's scores)",
            rows=("data",),
            metrics=QUALITY,
            headline="validity",
            higher_is_better=True,
        ),
    },
    preset_notes={
        "smoke": "16 px, 8-frame buffer, a 2-layer model, a few steps: plumbing only, seconds",
        "cpu": "16 px, 16-frame buffer, 4-layer d64 DiT (with the FFN convolution, and plain for the _plain rows), 6000 uniform steps + 3000 fine-tuning steps per streaming model + 1000 distillation steps per student (memory from data, and from its own rollouts); 64 prompts x 160 frames (see README for time)",
        "paper": "the brief's GPU plan: 64 px, patch 4, d 256, depth 8, 20k steps; GPU only",
    },
)
