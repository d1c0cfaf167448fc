"""Autoregressive streaming video on one causal host: Self Forcing's recipe (the host), then
LongLive, Deep Forcing and StreamDiffusionV2 as cache policies, training recipes and serving
around it (brief ``autoregressive_video.md``)."""

from shared.registry import ExperimentSpec, Table

SPEC = ExperimentSpec(
    title="Autoregressive streaming video: Self Forcing's host, LongLive, Deep Forcing, StreamDiffusionV2",
    paper=("Huang, Li, He, Zhou, Shechtman. Self Forcing: Bridging the Train-Test Gap in Autoregressive Video Diffusion. arXiv 2506.08009 (2025); "
           "Yang et al. LongLive: Real-time Interactive Long Video Generation. arXiv 2509.22622 (2025); "
           "Yi et al. Deep Forcing. arXiv 2512.05081 (2025); Feng et al. StreamDiffusionV2. arXiv 2511.07399 (2025)"),
    description=(
        "A causal video DiT generates chunks of 2 frames in 4 denoising steps, attending to earlier frames through the "
        "streaming core's KV cache (pre-RoPE keys, 3D RoPE). Students trained by teacher forcing, diffusion forcing and "
        "self forcing (own KV-cached rollouts with a distribution-matching loss against a bidirectional teacher) stream "
        "held-out prompts for 10x their training length; a colour detector reads the known objects back."
    ),
    tables={
        "self_forcing": Table(
            title="students by training recipe: validity at 1x, 4x and 10x the training length, drift, motion, chunk seams, cost",
            rows=("teacher_forcing", "diffusion_forcing", "self_forcing"),
            metrics=("validity_1x", "validity_4x", "validity_10x", "drift_10x", "dynamic_10x", "boundary_jump", "ms_per_frame"),
            headline="validity_10x",
            higher_is_better=True,
        ),
        "longlive": Table(
            title="LongLive's cache policies on the self-forcing student: full window, short window, short window + frame sink (same budget), and the sink row after streaming long tuning",
            rows=("full_window", "short_window", "sink_window", "sink_window_long_tuned"),
            metrics=("validity_1x", "validity_4x", "validity_10x", "drift_10x", "dynamic_10x", "boundary_jump", "ms_per_frame", "ms_per_frame_last", "frames_seen"),
            headline="validity_10x",
            higher_is_better=True,
        ),
        "longlive_switch": Table(
            title="a prompt switch (object 0 changes colour) with the cache kept, cleared or re-cached (sink + short window)",
            rows=("switch_keep", "switch_clear", "switch_recache"),
            metrics=("frames_to_follow", "followed", "switch_jump", "validity_after"),
            headline="frames_to_follow",
            higher_is_better=False,
        ),
        "deep_forcing": Table(
            title="Deep Forcing (training-free) on the self-forcing student at 12x its training length: rolling window, shallow sink, deep sink with and without RoPE re-alignment, participative compression at the deep sink's budget (frames or tokens), the official code's sink gap",
            rows=("rolling", "shallow_sink", "deep_sink", "deep_sink_unaligned", "compressed", "deep_sink_short", "deep_sink_gap", "compressed_tokens"),
            metrics=("validity_1x", "validity_5x", "validity_12x", "drift_12x", "dynamic_12x", "boundary_jump", "ms_per_frame", "ms_per_frame_last", "frames_seen"),
            headline="validity_12x",
            higher_is_better=True,
        ),
    },
    preset_notes={
        "smoke": "a 2-layer host, a few steps of every training: plumbing only, seconds",
        "cpu": "16 px, a 4-layer d64 host (0.4M parameters), teacher + three students, 8 prompts x 160 frames (see README for time)",
        "paper": "the cpu recipe with longer training and 32 prompts, for a GPU",
    },
)
