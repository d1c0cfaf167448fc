"""QUEEN (NeurIPS 2024): quantized residual Gaussians for streaming free-viewpoint video."""

from shared.registry import ExperimentSpec, Table

SPEC = ExperimentSpec(
    title="QUEEN: streaming free-viewpoint video as quantized, gated Gaussian residuals",
    paper="Girish, Li, Mazumdar, Shrivastava, Luebke, De Mello. QUEEN: QUantized Efficient ENcoding for Streaming Free-viewpoint Videos. NeurIPS 2024 (arXiv 2412.04469)",
    description=(
        "Frame 1 is a 3DGS fit; every later frame learns attribute residuals (integer latents through learned "
        "decoders, straight-through rounding) and L0-gated position residuals, trained on the changed pixels first. "
        "Each frame is entropy coded (constriction ANS) to a file; an independent decoder rebuilds the scene from the files."
    ),
    tables={
        "queen": Table(
            title="held-out-camera quality, size from bytes on disk (first frame amortised) and speed",
            rows=("queen", "float_gated", "retrain", "no_update", "no_gate", "no_mask", "no_quant", "no_quant_scale"),
            metrics=("psnr", "ssim", "mb_per_frame", "mb_per_frame_estimate", "mb_per_residual_frame", "train_seconds_per_frame", "render_fps"),
            headline="mb_per_frame",
            higher_is_better=False,
        ),
    },
    preset_notes={
        "smoke": "a 16x12 toy scene, 3 frames: plumbing only, seconds",
        "cpu": "the embedded scene at 64x48, 7 cameras, 10 frames, about 3,000 Gaussians, sparse pure-torch renderer; see the README for the time on 2 cores",
        "paper": "N3DV settings (1352x1014, 21 cameras, 300 frames, 10k frame-1 iterations) through gsplat; GPU only",
    },
)
