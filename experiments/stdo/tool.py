"""STDO as a tool: fit a bundle to your own video, then upscale its low-resolution version with it.

    python -m experiments.stdo fit talk.mp4 --scale 4 --chunks 4                # -> talk.x4.stdo (+ talk.x4.lowres.mp4)
    python -m experiments.stdo upscale talk.x4.lowres.mp4 talk.x4.stdo talk.x4.sr.mp4 --reference talk.mp4

``fit`` decodes the video (any file PyAV reads, or a VSD4K clip folder), makes its bicubic LR
frames, labels every patch with the general model (trained on the bundled clips and photographs,
or a pretrained one with ``--general-model PATH``; ``--labels bicubic`` skips that), cuts k quantile chunks and overfits one WDSR per chunk. Its work
lives in ``BUNDLE.work/``: run the same command again after a kill and it resumes from the last
checkpoint; the bundle is written atomically at the end and never overwritten without ``--overwrite``.
Model and training settings come from the experiment config (``--preset``, plus ``key=value``
overrides such as ``train.steps=2000``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, DataError, StreamlabError

USAGE_ERROR = 2


def _compose(preset: str, overrides: list[str], row: tuple[str, str]):
    from shared import config, registry

    return config.compose(registry.get(__package__.split(".")[1]), preset, overrides, row=row)


def fit(args) -> Path:
    from shared.runtime import resolve_device, seed_everything
    from shared.video import write_video

    from .bundle import save_bundle
    from .data import h264_lowres, load_video, lowres_frames
    from .labels import load_general, make_labels
    from .method import fit_upscaler
    from .patches import auto_grid, to_patches

    crf = [f"data.lr_crf={args.lr_crf}"] if args.lr_crf is not None else []
    labels = [f"labels.source={args.labels}"] if not args.general_model else ["labels.source=file", f"labels.file={Path(args.general_model).resolve()}"]
    cfg = _compose(args.preset, [f"chunks={args.chunks}", *labels, *crf, *args.overrides], row=("stdo", args.method))
    device = resolve_device(args.device or cfg.trainer.device)
    seed_everything(args.seed)

    video = load_video(args.video, max_frames=args.max_frames, stride=args.stride)
    out = Path(args.out) if args.out else Path(f"{Path(args.video).with_suffix('')}.x{args.scale}.stdo")
    if out.exists() and not args.overwrite:
        raise DataError(f"{out} exists; pass --overwrite to replace it or --out to write elsewhere")

    # Everything that can be wrong with the input is found before the work folder exists, so a
    # corrected command never meets the leftovers of a refused one.
    t, h, w = video.shape
    lr = lowres_frames(video, args.scale)
    if cfg.data.get("lr_crf") is not None:  # train on what the client will decode (--lr-crf)
        lr = h264_lowres(lr, int(cfg.data.lr_crf), fps=args.fps)
    grid = auto_grid(h, w, args.scale, tuple(cfg.data.lr_patch))
    lr_p, hr_p = to_patches(lr, grid.rows, grid.cols), to_patches(video.frames, grid.rows, grid.cols)
    shave = cfg.labels.shave if cfg.labels.shave is not None else args.scale + 4  # the labels' border, as labels.py
    if min(grid.hr_patch) <= 2 * shave:
        raise DataError(f"{video.name} is {w}x{h}: its {grid.hr_patch[1]}x{grid.hr_patch[0]} patches leave no pixel inside the labels' "
                        f"{shave}-pixel border at x{args.scale} (a patch needs more than {2 * shave} pixels a side): use a larger video")
    if args.method != "single" and args.chunks > len(lr_p):
        raise ConfigError(f"--chunks {args.chunks} is more than the {len(lr_p)} patches of {video.name} ({grid.cols}x{grid.rows} per frame x {t} frames): "
                          f"use at most {len(lr_p)}")

    if cfg.labels.source == "file":  # a general model for another scale or architecture is refused here, not after the work folder exists
        load_general(cfg, args.scale)

    work = out.with_name(out.name + ".work")
    signature = {"video": str(Path(video.source).resolve()), "frames": list(video.shape), "scale": args.scale, "chunks": args.chunks,
                 "method": args.method, "labels": args.labels, "lr_crf": args.lr_crf, "general_model": args.general_model, "preset": args.preset, "overrides": args.overrides, "seed": args.seed}
    if (work / "fit.json").is_file() and json.loads((work / "fit.json").read_text()) != signature:
        raise DataError(f"{work} holds an unfinished fit with other settings; delete it or pass the same arguments to resume")
    work.mkdir(parents=True, exist_ok=True)
    (work / "fit.json").write_text(json.dumps(signature, indent=1))
    print(f"stdo fit: {video.name} {w}x{h}, {t} frames, x{args.scale}, {grid.cols}x{grid.rows} patches of {grid.hr_patch[1]}x{grid.hr_patch[0]} -> {len(lr_p)} patches, {args.chunks} chunks", flush=True)
    labels_path = work / "labels.npy"
    if labels_path.is_file():
        labels = np.load(labels_path)
    else:
        labels = make_labels(cfg, lr_p, hr_p, args.scale, video.name, device=device, checkpoint=work / "general.pt")
        np.save(labels_path, labels)
    start = time.perf_counter()
    upscaler = fit_upscaler(cfg, lr_p, hr_p, labels, grid, t, seed=args.seed, device=device, checkpoints=work)
    from .evaluate import scores, upscale_patches

    result = scores(upscaler.upscale(lr_p, device=device), hr_p, grid, upscaler.chunk)
    bicubic = scores(upscale_patches(None, None, lr_p, args.scale, device=device), hr_p, grid, None)
    size = save_bundle(out, upscaler, cfg.model, t, source=video.source)
    if args.lowres_out:
        write_video(args.lowres_out, lr, fps=args.fps, crf=0)  # already the decoded frames at --lr-crf, if given: lossless from here
    shutil.rmtree(work)
    print(
        f"stdo fit: {out} ({size / 1e3:.0f} kB, {upscaler.parameters:,} parameters in {len(upscaler.models)} model(s)) | "
        f"PSNR {result['psnr']:.2f} dB vs bicubic {bicubic['psnr']:.2f} dB (mean-MSE over patches, shave 4; frames {result['psnr_frame']:.2f} dB) | "
        f"{time.perf_counter() - start:.0f} s" + (f" | LR video {args.lowres_out}" if args.lowres_out else ""),
        flush=True,
    )
    return out


def upscale(args) -> Path:
    import torch

    from shared.progress import progress
    from shared.runtime import resolve_device
    from shared.video import read_video, write_video

    from .bundle import load_bundle
    from .evaluate import upscale_frames

    device = resolve_device(args.device or "auto")
    upscaler, n_frames = load_bundle(args.bundle, device=device)
    grid = upscaler.grid
    lr = read_video(args.lowres)
    t, h, w, _ = lr.shape
    if args.scale is not None and args.scale != grid.scale:
        raise DataError(f"{args.bundle} was made for x{grid.scale}, not x{args.scale}")
    if (h, w) != (grid.lr_height, grid.lr_width):
        hint = ""
        if (h, w) == (grid.lr_height * grid.scale, grid.lr_width * grid.scale):
            hint = " (that is the high-resolution size: give the low-resolution video, which fit writes with --lowres-out)"
        elif (grid.lr_height * grid.scale) % h == 0 and (grid.lr_height * grid.scale) // h in (2, 3, 4):
            hint = f" (that is the x{grid.lr_height * grid.scale // h} size of the fitted video: make a bundle for that scale)"
        raise DataError(
            f"{args.lowres} is {w}x{h}, but {args.bundle} upscales {grid.lr_width}x{grid.lr_height} frames x{grid.scale} "
            f"(a bundle is fit to one video at one scale){hint}"
        )
    if upscaler.chunk is not None and t > n_frames:
        raise DataError(f"{args.lowres} has {t} frames, but the bundle's chunk map covers {n_frames}: fit the bundle on the whole video")
    chunk_map = upscaler.chunk_map(n_frames)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DataError(f"{out} exists; pass --overwrite to replace it")
    frames = np.empty((t, h * grid.scale, w * grid.scale, 3), np.uint8)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in progress(range(t), desc="upscaling frames"):
            frames[i] = upscale_frames(upscaler.models, None if chunk_map is None else chunk_map[i : i + 1], lr[i : i + 1], grid, device=device)[0]
    seconds = time.perf_counter() - start
    write_video(out, frames, fps=args.fps, crf=args.crf)
    line = f"stdo upscale: {out} ({t} frames {w}x{h} -> {w * grid.scale}x{h * grid.scale}, {upscaler.method}, {t / seconds:.1f} frames/s on {device})"
    if args.reference:
        from .evaluate import psnr_from_mse

        ref = read_video(args.reference, max_frames=t)
        if ref.shape != frames.shape:
            raise DataError(f"--reference {args.reference} is {ref.shape[2]}x{ref.shape[1]} with {len(ref)} frames; expected {frames.shape[2]}x{frames.shape[1]} with {t}")
        mse = ((frames.astype(np.float64) - ref.astype(np.float64)) / 255) ** 2
        line += f" | PSNR vs reference {psnr_from_mse(mse.mean()):.2f} dB (full frames, before video encoding)"
    print(line, flush=True)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, for the tool and its subcommands
        self.exit(USAGE_ERROR, f"stdo: error: {message} (see '{self.prog} --help')\n")


def parsers() -> dict[str, argparse.ArgumentParser]:
    f = _Parser(prog="python -m experiments.stdo fit", description="overfit a bundle (k chunk models + chunk map) to a video")
    f.add_argument("video", help="a video file, a VSD4K clip folder, or a bundled clip name (carphone, bikes, bigbuckbunny)")
    f.add_argument("--scale", type=int, default=4)
    f.add_argument("--chunks", type=int, default=4)
    f.add_argument("--method", choices=("stdo", "jstdo", "single"), default="stdo")
    f.add_argument("--labels", choices=("general", "bicubic"), default="general")
    f.add_argument("--general-model", metavar="PATH", help="label with this pretrained general WDSR (a state dict for the preset's model at --scale) instead of training one")
    f.add_argument("--out", help="bundle path (default: VIDEO.x<scale>.stdo)")
    f.add_argument("--lowres-out", help="also write the bicubic LR video a client would receive (H.264: lossless, or at --lr-crf)")
    f.add_argument("--lr-crf", type=int, help="train on the LR frames as decoded from H.264 at this crf (0-51), as a streamed client sees them")
    f.add_argument("--max-frames", type=int)
    f.add_argument("--stride", type=int, default=1)
    f.add_argument("--fps", type=int, default=25)
    f.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "paper"), help="model and training settings (cpu: tiny model; paper: full WDSR-A, 50 epochs)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", help="cpu, cuda (default: the preset's)")
    f.add_argument("--overwrite", action="store_true")
    f.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=2000 model.num_blocks=8")
    u = _Parser(prog="python -m experiments.stdo upscale", description="upscale a low-resolution video with a bundle")
    u.add_argument("lowres")
    u.add_argument("bundle")
    u.add_argument("out")
    u.add_argument("--scale", type=int, help="check that the bundle is for this scale")
    u.add_argument("--reference", help="the original video: report PSNR of the upscaled frames against it")
    u.add_argument("--fps", type=int, default=25)
    u.add_argument("--crf", type=int, default=0, help="H.264 quality of OUT (0: lossless in YUV 4:4:4)")
    u.add_argument("--device")
    u.add_argument("--overwrite", action="store_true")
    return {"fit": f, "upscale": u}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("fit", "upscale"):
        print("usage: python -m experiments.stdo {fit,upscale} ... (or reproduce flags)", file=sys.stderr)
        return USAGE_ERROR
    command = argv[0]
    args = parsers()[command].parse_intermixed_args(argv[1:])  # key=value overrides may follow the options
    try:
        if command == "fit":
            if args.scale < 1 or args.chunks < 1:
                raise ConfigError("--scale and --chunks must be positive")
            if (args.max_frames is not None and args.max_frames < 1) or args.stride < 1:
                raise ConfigError("--max-frames and --stride must be at least 1")
            fit(args)
        else:
            upscale(args)
    except StreamlabError as err:
        print(f"stdo: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def fit_main(argv: list[str]) -> int:
    """``python -m experiments.stdo fit ...``"""
    return main(["fit", *argv])


def upscale_main(argv: list[str]) -> int:
    """``python -m experiments.stdo upscale ...``"""
    return main(["upscale", *argv])
