"""The streaming run: frames arrive one at a time, each is trained, encoded to bytes, decoded back
by an independent decoder and evaluated, then checkpointed. A killed run resumes after the last
completed frame (the decoder is rebuilt from the frame files on disk, which also re-verifies them).

Rows (conf/experiment/*.yaml): ``queen`` (gate + quantized latents), ``no_gate``, ``no_quant``
(float32 residuals: the 3DGStream-style point of comparison), ``retrain`` (every frame a fresh fit).
"""

from __future__ import annotations

import itertools
import secrets
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from shared.io import load_checkpoint
from shared.metrics import psnr, ssim
from shared.progress import progress
from shared.timing import median_seconds

from . import codec
from .model import Gaussians, LatentDecoder, nearest_neighbours, render_gaussians, rest_width
from .scene import Scene
from .train import ResidualCodecState, fit_keyframe, train_residual_frame


def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """Renders are evaluated as saved 8-bit images, as in the paper's protocol."""
    return torch.round(image.clamp(0, 1) * 255) / 255


@torch.no_grad()
def evaluate_frame(g: Gaussians, scene: Scene, frame: int, backend: str) -> dict:
    renders = [to_8bit(render_gaussians(g, scene.cameras[c], scene.background, backend=backend)[0]) for c in scene.test_cameras]
    targets = [scene.image(frame, c) for c in scene.test_cameras]
    return {
        "psnr": float(np.mean([psnr(r, t) for r, t in zip(renders, targets)])),
        "ssim": float(np.mean([ssim(r, t).item() for r, t in zip(renders, targets)])),
        "render": renders[0],
    }


def dynamic_labels(g: Gaussians, scene: Scene, frame: int) -> torch.Tensor | None:
    """Which trained Gaussians belong to a moving object: the label of the nearest ground-truth
    Gaussian at the previous frame (only synthetic scenes know this)."""
    if scene.truth is None:
        return None
    gt = scene.truth.frames[frame - 1].xyz
    return scene.truth.dynamic[nearest_neighbours(g.xyz.detach(), gt)[1][:, 0]]


def gate_scores(open_: torch.Tensor, dynamic: torch.Tensor | None) -> dict:
    out = {"gate_open_fraction": float(open_.float().mean())}
    if dynamic is not None:
        tp = float((open_ & dynamic).sum())
        out["gate_precision"] = tp / max(1.0, float(open_.sum()))
        out["gate_recall"] = tp / max(1.0, float(dynamic.sum()))
    return out


@torch.no_grad()
def render_fps(g: Gaussians, scene: Scene, backend: str, repeats: int = 20) -> float:
    """Frames per second: median of ``repeats`` renders, over the test and training cameras in turn
    (after one untimed render, which JIT-compiles gsplat on a GPU)."""
    cameras = itertools.cycle(scene.cameras)
    return 1.0 / median_seconds(lambda: render_gaussians(g, next(cameras), scene.background, backend=backend), repeats, g.xyz.is_cuda, warmup=1)


def max_abs_difference(a: Gaussians, b: Gaussians) -> float:
    if len(a) != len(b):
        return float("inf")
    return max(float((x - y).abs().max()) if x.numel() else 0.0 for x, y in zip(a.as_dict().values(), b.as_dict().values()))


def stream(scene: Scene, cfg: DictConfig, bitstream_dir: Path, run=None, scope: str = "queen") -> dict:
    """Process every frame of ``scene`` online with the row's method; returns the row's metrics.

    Per-frame records (PSNR, bytes, estimate, seconds, gate scores) go to ``run``'s metrics log;
    the test-view renders and gate masks are returned for figures (``per_frame``).
    """
    method = cfg.method
    bitstream_dir = Path(bitstream_dir)
    checkpoint = run.checkpoint_path(f"stream_{scope}") if run is not None else None
    records: list[dict] = []
    extras: dict[str, list] = {"renders": [], "gate_open": [], "dynamic": [], "means_test": []}
    prev: Gaussians | None = None
    codec_state: ResidualCodecState | None = None
    decoder = codec.StreamDecoder()
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, scene.device)
        start, records, extras, prev = state["next_frame"], state["records"], state["extras"], state["prev"]
        if state["codec"] is not None:
            rest = LatentDecoder(cfg.quant.f_rest.latent_dim, rest_width(cfg.sh_degree), cfg.quant.f_rest.basis, cfg.quant.f_rest.init_std).to(scene.device)
            codec_state = ResidualCodecState(cfg, rest, state["codec"]["rest_latent"])
            codec_state.load_state_dict(state["codec"])
        for t in range(start):  # rebuild the independent decoder from the bytes on disk
            path = codec.frame_path(bitstream_dir, t)
            if not path.is_file():
                raise codec.BitstreamError(f"frame {t}: {path.name} is missing from {bitstream_dir}, so the run cannot resume after frame {start - 1}")
            decoder.apply(path.read_bytes(), source=path.name)
    # every frame file carries the stream's id (codec.py); a resumed stream goes on with the id of its frame 0
    stream_id = decoder.stream_id if decoder.stream_id is not None else secrets.randbits(64)
    bar = progress(total=scene.n_frames, initial=start, desc=f"queen/{scope} frames")
    for t in range(start, scene.n_frames):
        t0 = time.perf_counter()
        diagnostics = {}
        if t == 0 or method.retrain:
            key = fit_keyframe(scene, t, cfg)
            committed, rest_symbols = key.commit()
            payload = codec.keyframe_payload(committed, rest_symbols, key.rest_decoder.payload())
            kind = codec.KEY
            if not method.retrain:
                codec_state = ResidualCodecState(cfg, key.rest_decoder, key.params["rest_latent"])
        elif not method.update_frames:  # the paper's "no update" row: frame 1 shown for the whole clip
            committed, payload, kind = prev, {}, codec.RESIDUAL
        else:
            committed, payload, diagnostics = train_residual_frame(prev, codec_state, scene, t, cfg, gate=method.gate, quantize=method.quantize,
                                                                   gate_floats=method.gate_floats, float_attributes=tuple(method.float_attributes))
            kind = codec.RESIDUAL
        seconds = time.perf_counter() - t0

        n_bytes = codec.write_frame(bitstream_dir, t, kind, len(committed), payload, stream_id)
        decoded = decoder.apply(codec.frame_path(bitstream_dir, t).read_bytes(), source=f"frame_{t:05d}.qbin").to(scene.device)
        evaluation = evaluate_frame(committed, scene, t, cfg.backend)
        decoded_eval = evaluate_frame(decoded, scene, t, cfg.backend)
        record = {
            "frame": t, "psnr": evaluation["psnr"], "ssim": evaluation["ssim"], "bytes": n_bytes,
            "estimate_bytes": codec.estimate_bits(payload) / 8, "train_seconds": seconds, "n_gaussians": len(committed),
            "decode_max_abs_error": max_abs_difference(decoded, committed),
            "decoded_render_psnr_vs_trainer": psnr(decoded_eval["render"], evaluation["render"]),
        }
        if "added" in diagnostics:  # densification after frame 1
            record |= {"n_added": diagnostics["added"], "n_removed": diagnostics["removed"]}
        if "gate_values" in diagnostics:
            open_ = diagnostics["gate_values"] > 0
            dynamic = dynamic_labels(prev, scene, t)
            record |= gate_scores(open_, dynamic) | {"mask_fraction": diagnostics["mask_fraction"]}
            extras["gate_open"].append(open_.cpu().numpy())
            extras["dynamic"].append(None if dynamic is None else dynamic.cpu().numpy())
            cam = scene.cameras[scene.test_cameras[0]]
            from kernels.splat.reference import project

            extras["means_test"].append(project(prev.xyz, prev.rot, torch.exp(prev.log_scale), cam.viewmat, cam.K)[1].cpu().numpy())
        extras["renders"].append((evaluation["render"].cpu().numpy() * 255).round().astype(np.uint8))
        records.append(record)
        if run is not None:
            run.logger.log({k: v for k, v in record.items() if k != "frame"}, step=t, scope=scope)
        prev = committed
        if checkpoint is not None:
            run.save_checkpoint(f"stream_{scope}", {
                "next_frame": t + 1, "records": records, "extras": extras, "prev": prev,
                "codec": None if codec_state is None else codec_state.state_dict(),
            })
        bar.update()
        bar.set_postfix(psnr=f"{record['psnr']:.2f}", kB=f"{n_bytes / 1e3:.1f}", refresh=False)
    bar.close()
    return summarise(records, scene, prev, cfg) | {"per_frame": records, "extras": extras}


def summarise(records: list[dict], scene: Scene, final: Gaussians, cfg: DictConfig) -> dict:
    """The table's columns. MB/frame amortises the first frame, as the paper and 3DGStream do."""
    n = len(records)
    total_bytes = sum(r["bytes"] for r in records)
    out = {
        "psnr": float(np.mean([r["psnr"] for r in records])),
        "ssim": float(np.mean([r["ssim"] for r in records])),
        "mb_per_frame": total_bytes / n / 1e6,
        "mb_per_frame_estimate": sum(r["estimate_bytes"] for r in records) / n / 1e6,
        "mb_per_residual_frame": (sum(r["bytes"] for r in records[1:]) / max(1, n - 1)) / 1e6,
        "train_seconds_per_frame": float(np.mean([r["train_seconds"] for r in records])),
        "render_fps": render_fps(final, scene, cfg.backend),
        "decode_max_abs_error": max(r["decode_max_abs_error"] for r in records),
    }
    gated = [r for r in records if "gate_precision" in r]
    if gated:
        out["gate_precision"] = float(np.mean([r["gate_precision"] for r in gated]))
        out["gate_recall"] = float(np.mean([r["gate_recall"] for r in gated]))
        out["gate_open_fraction"] = float(np.mean([r["gate_open_fraction"] for r in gated]))
    return out
