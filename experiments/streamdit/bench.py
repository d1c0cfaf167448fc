"""Throughput of one streaming step (brief 3, 6, 11): ``python -m experiments.streamdit bench``.

    python -m experiments.streamdit bench --arch 4b --res 512               # the paper-size stand-in (GPU)
    python -m experiments.streamdit bench --arch small --res 16             # the cpu preset's model (any CPU)
    python -m experiments.streamdit bench --arch 4b --res 512 --window 16 32 32 --chunk 1 --json

The model has random weights: the time of a step depends on the architecture and the shapes, not on
the weights, so this measures the paper's speed claim (482 ms per step, 16 FPS at 512p on one H100)
for an architecture of the stated size, not the paper's model. One step = one forward over the whole
buffer plus the queue update (the distilled student, s = 1, emits c latent frames per step).

Reported: seconds per step (median of CUDA-event-timed steps on a GPU, wall-clock on a CPU), FPS
(video frames per step / step time; the 4b stand-in works on latents with the brief's 4x temporal
compression, the small model on pixels), analytic model FLOPs per step and per frame (brief 6), the
achieved FLOP/s and its share of a square matrix multiply measured in the same dtype on the same device.
On a GPU the step runs in bf16, optionally compiled (``--compile``) and captured in a CUDA graph
(``--cuda-graphs``, fixed shapes make it valid).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from shared.timing import samples_seconds

from .model import DiTConfig, StreamDiT, token_path_parameters
from .schedule import Partition, StreamQueue

ARCHS = {
    # brief 2.4: d 3072, 28 layers, 24 heads x 128, SwiGLU 8192, patch 2 on 8-channel latents (8x spatial, 4x temporal), adaLN-single
    "4b": dict(channels=8, frames=16, patch=2, dim=3072, depth=28, heads=24, ffn=8192, swiglu=True, window=(16, 16, 16), text_len=256,
               vocab=256, adaln_single=True, spatial=8, temporal=4),
    # the cpu preset's model (conf/config.yaml) on pixels; its FFN convolution (27 MACs per hidden unit) is left out of the FLOP count
    "small": dict(channels=3, frames=16, patch=4, dim=64, depth=4, heads=4, ffn=None, swiglu=False, window=(4, 4, 4), text_len=4, local_conv=3,
                  vocab=16, adaln_single=False, spatial=1, temporal=1),
}


def build_config(arch: str, res: int, window: tuple[int, int, int] | None = None) -> tuple[DiTConfig, dict]:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    spec = dict(ARCHS[arch])
    spatial, temporal = spec.pop("spatial"), spec.pop("temporal")
    if window is not None:
        spec["window"] = tuple(window)
    step = spatial * spec["patch"] * spec["window"][1]
    if res < 1 or res % spatial or (res // spatial) % spec["patch"] or (res // spatial // spec["patch"]) % spec["window"][1]:
        raise ValueError(f"resolution {res} must be divisible by {step} for --arch {arch} ({spatial}x latent compression x patch "
                         f"{spec['patch']} x window {spec['window'][1]} tokens); e.g. {step * max(1, round(res / step))}")
    cfg = DiTConfig(height=res // spatial, width=res // spatial, **spec)
    cfg.check()
    return cfg, {"spatial": spatial, "temporal": temporal}


def flops_per_step(cfg: DiTConfig) -> dict:
    """Brief 6: linear 2 T L (4 d^2 + 2 d^2 + FFN) + text K/V 2 Lt L 2 d^2; attention 4 T Wn d L (self) + 4 T Lt d L (cross)."""
    F_, H, W = cfg.grid
    tokens = F_ * H * W
    d, L, text = cfg.dim, cfg.depth, cfg.text_len
    hidden = cfg.ffn or 4 * d
    ffn = 3 * d * hidden if cfg.swiglu else 2 * d * hidden
    linear = 2 * tokens * L * (6 * d * d + ffn) + 2 * text * L * 2 * d * d
    window = cfg.window[0] * cfg.window[1] * cfg.window[2]
    attention = 4 * tokens * window * d * L + 4 * tokens * text * d * L
    return {"tokens": tokens, "linear": linear, "attention": attention, "total": linear + attention}


def matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix multiply in ``dtype`` on ``device`` (the ceiling we compare with)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = _timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / statistics.median(times)


def _timed(fn, device: str, repeats: int) -> list[float]:
    return samples_seconds(fn, repeats, device.startswith("cuda"), warmup=0)


def benchmark(arch: str, res: int, chunk: int, steps: int, warmup: int, device: str, compile_: bool, cuda_graphs: bool,
              window=None, dtype: torch.dtype | None = None, compile_mode: str = "max-autotune-no-cudagraphs") -> dict:
    cfg, comp = build_config(arch, res, window)
    part = Partition.for_buffer(cfg.frames, chunk, s=1)
    flops = flops_per_step(cfg)
    video_frames = chunk * comp["temporal"]
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    result = {"arch": arch, "res": res, "latent": [cfg.frames, cfg.channels, cfg.height, cfg.width], "grid": list(cfg.grid),
              "window": list(cfg.window), "chunk": chunk, "video_frames_per_step": video_frames,
              "token_path_parameters": token_path_parameters(cfg), "flops_per_step": flops["total"],
              "flops_per_frame": flops["total"] / video_frames, "attention_share": flops["attention"] / flops["total"],
              "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu", "dtype": str(dtype).removeprefix("torch."),
              "weights": "random (speed depends on the architecture, not the weights)"}
    torch.manual_seed(0)
    with torch.device(device):
        model = StreamDiT(cfg)
    model = model.to(dtype).eval()
    for p in model.parameters():  # zero-initialised gates would let kernels skip nothing, but keep values realistic
        if torch.count_nonzero(p) == 0:
            torch.nn.init.normal_(p, 0, 0.02)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    text = torch.randint(1, cfg.vocab, (1, cfg.text_len), device=device)
    forward = torch.compile(model, mode=compile_mode) if compile_ else model

    def velocity(x, tau):
        return forward(x, tau.to(x.dtype), text)

    g = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(1, cfg.frames, cfg.channels, cfg.height, cfg.width, device=device, dtype=dtype, generator=g)
    noise = lambda shape: torch.randn(shape, device=device, dtype=dtype, generator=g)
    levels = torch.tensor([(part.N - 1 - j) for j in range(part.N) for _ in range(part.c)], device=device)
    queue = StreamQueue(part, x0, levels.cpu(), noise)  # steady state: chunk j at level N - 1 - j

    with torch.inference_mode():
        step = lambda: queue.step(velocity)
        if cuda_graphs and device.startswith("cuda"):
            step = _graphed_forward(forward, x0, part, text)
        for _ in range(warmup):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times = _timed(step, device, steps)
    seconds = statistics.median(times)
    peak = matmul_peak(device, dtype, 8192 if device.startswith("cuda") else 1024)
    result |= {"seconds_per_step": seconds, "seconds_p90": sorted(times)[int(0.9 * (len(times) - 1))], "steps_timed": len(times),
               "fps": video_frames / seconds, "achieved_flops": flops["total"] / seconds, "matmul_peak_flops": peak,
               "share_of_matmul_peak": flops["total"] / seconds / peak, "compile": compile_mode if compile_ else False, "cuda_graphs": bool(cuda_graphs and device.startswith("cuda"))}
    return result


def _graphed_forward(forward, x0, part: Partition, text):
    """A CUDA graph of the buffer forward plus the in-place Euler update (the queue's shift is a
    copy outside the graph in a real stream; here the steady-state step is replayed)."""
    static_x = x0.clone()
    tau = torch.tensor([(part.N - 1 - j) / part.N for j in range(part.N) for _ in range(part.c)], device=x0.device, dtype=x0.dtype)[None]
    dtau = 1.0 / part.T
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            static_x.add_(forward(static_x, tau, text), alpha=dtau)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_x.add_(forward(static_x, tau, text), alpha=dtau)
    return graph.replay


def analytic(arch: str, res: int, chunk: int, window=None) -> dict:
    cfg, comp = build_config(arch, res, window)
    flops = flops_per_step(cfg)
    frames = chunk * comp["temporal"]
    return {"arch": arch, "res": res, "grid": list(cfg.grid), "window": list(cfg.window), "chunk": chunk, "token_path_parameters": token_path_parameters(cfg),
            "flops_per_step": flops["total"], "flops_per_frame": flops["total"] / frames, "attention_share": flops["attention"] / flops["total"],
            "weights": "random (speed depends on the architecture, not the weights)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.streamdit bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="small", help=f"one of {', '.join(ARCHS)}")
    parser.add_argument("--res", type=int, default=None, help="frame size in pixels (default: 512 for 4b, 16 for small)")
    parser.add_argument("--chunk", type=int, default=2, help="frames emitted per step (c; s = 1 as the distilled student)")
    parser.add_argument("--window", type=int, nargs=3, default=None, metavar=("F", "H", "W"), help="window in tokens (default: the arch's)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode (autotuning takes minutes; 'default' is quick)")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture the step in a CUDA graph (GPU only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    res = args.res or (512 if args.arch == "4b" else 16)
    try:
        if args.arch == "4b" and not device.startswith("cuda"):
            out = analytic(args.arch, res, args.chunk, args.window)
            out["note"] = "no GPU: analytic figures only (4.2B parameters in fp32 need 17 GB, and a step takes minutes on a CPU)"
        else:
            out = benchmark(args.arch, res, args.chunk, args.steps, args.warmup, device, args.compile, args.cuda_graphs, args.window,
                            compile_mode=args.compile_mode)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"StreamDiT bench: --arch {out['arch']} at {out['res']} px, grid {out['grid']} tokens, window {out['window']}, c = {out['chunk']}")
    print(f"  weights: {out['weights']}")
    size = out["token_path_parameters"]
    size = f"{size / 1e9:.3f} B" if size >= 1e9 else f"{size / 1e6:.3f} M"
    print(f"  token-path parameters {size}; model FLOPs {out['flops_per_step'] / 1e9:,.3f} G per step, "
          f"{out['flops_per_frame'] / 1e9:,.2f} G per video frame (attention {100 * out['attention_share']:.0f} %)")
    if "seconds_per_step" in out:
        print(f"  {out['device']}, {out['dtype']}{', compiled' if out['compile'] else ''}{', CUDA graph' if out['cuda_graphs'] else ''}: "
              f"{1e3 * out['seconds_per_step']:.1f} ms per step (median of {out['steps_timed']}), {out['fps']:.1f} FPS")
        print(f"  achieved {out['achieved_flops'] / 1e12:.3f} TFLOP/s = {100 * out['share_of_matmul_peak']:.1f} % of the measured matmul "
              f"peak ({out['matmul_peak_flops'] / 1e12:.3f} TFLOP/s); paper: 482 ms per step, 16 FPS on one H100")
    else:
        print(f"  {out['note']}")
    return 0
