"""STDO (CVPR 2023): video super-resolution by overfitting one small model per difficulty chunk."""

from shared.registry import ExperimentSpec, Table

SPEC = ExperimentSpec(
    title="STDO: video super-resolution by spatial-temporal data overfitting",
    paper="Li, Ji, Qin, Niu, Ren, Afghah, Guo, Ma. Towards High-Quality and Efficient Video Super-Resolution via Spatial-Temporal Data Overfitting. CVPR 2023 (arXiv 2303.08331)",
    description=(
        "Every frame is cut into patches; a general SR model's PSNR labels each patch; all patches of the video are "
        "ranked and cut into k equal quantile chunks; one WDSR-A per chunk is overfit to it (train == test) and ships "
        "with the video beside a per-frame chunk map. JSTDO trains one model on a difficulty-weighted sample instead."
    ),
    tables={
        "stdo": Table(
            title="PSNR (mean-MSE over patches, shave 4; and full frames) per clip and scale, averaged over seeds; size and speed",
            rows=("bicubic", "single", "single_long", "temporal", "random", "cafm", "stdo", "jstdo"),
            metrics=("psnr", "psnr_frame", "gain_db", "params", "kb_shipped", "fps"),
            headline="psnr",
            higher_is_better=True,
        ),
    },
    preset_notes={
        "smoke": "4 carphone frames at x2, a tiny model, a few steps: plumbing only, seconds",
        "cpu": "the three bundled clips at x2 and x4, 3 seeds, a 40k-parameter WDSR, 300 steps per model (see README for time)",
        "paper": "the official recipe (full WDSR-A, 50 epochs per chunk model) on bigbuckbunny at x2 and x4; GPU only",
    },
)
