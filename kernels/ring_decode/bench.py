"""Benchmark of ring-buffer decode attention (a benchmark, not a test):

    python -m kernels.ring_decode.bench --out ring_decode.csv [--sizes 1024 4096 16384 65536]

GPU: the Triton kernel against the torch reference and against SDPA over pre-rotated keys, with
CUDA events after warm-up (median of --repeats), and the achieved K/V read bandwidth as a fraction
of a device-to-device copy measured in the same run. CPU: the reference against SDPA only, as
ratios in one run (Triton cannot run compiled on a CPU).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from shared.io import atomic_path
from shared.provenance import device_name
from shared.streaming.rope import Rope

from . import ring_decode, triton_status


def timed(fn, repeats: int, cuda: bool) -> float:
    """Median seconds of ``fn()`` after two warm-up calls."""
    for _ in range(2):
        fn()
    samples = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def copy_bandwidth(device, repeats: int) -> float:
    """Bytes per second of a device-to-device copy of 1 GiB (read + write counted)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / timed(lambda: dst.copy_(src), repeats, device.type == "cuda")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.ring_decode.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="cache slots (default: 1k..64k on GPU, 256..4k on CPU)")
    parser.add_argument("--heads", default="32:8,9:3", help="query:kv head layouts, comma-separated")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    sizes = args.sizes or ([1024, 4096, 16384, 65536] if cuda else [256, 1024, 4096])
    copy_bw = copy_bandwidth(device, 10) if cuda else float("nan")
    use_triton = triton_status()[0] and cuda
    rows = []
    for layout in args.heads.split(","):
        h, hkv = map(int, layout.split(":"))
        for n in sizes:
            d = args.head_dim
            q = torch.randn(args.batch, h, d, device=device, dtype=dtype)
            k, v = (torch.randn(args.batch, hkv, n, d, device=device, dtype=dtype) for _ in range(2))
            q_pos = 2 * n
            slot_pos = torch.cat([torch.arange(4), torch.arange(q_pos - n + 5, q_pos + 1)]).to(device)
            kwargs = dict(q_pos=q_pos, sinks=4, window=n - 4, theta=1e5)
            rope = Rope(d, theta=1e5)
            k_rot = rope.apply(k, slot_pos)  # SDPA needs rotated keys: a real decode step would rotate them too
            q_rot = rope.apply(q[:, :, None], torch.tensor([q_pos], device=device))
            impls = {
                "reference": lambda: ring_decode(q, k, v, slot_pos, impl="reference", **kwargs),
                "sdpa_prerotated": lambda: F.scaled_dot_product_attention(q_rot, k_rot, v, enable_gqa=h != hkv),
            }
            if use_triton:
                impls["triton"] = lambda: ring_decode(q, k, v, slot_pos, impl="triton", **kwargs)
            kv_bytes = 2 * k.numel() * k.element_size()
            times = {name: timed(fn, args.repeats if cuda else 5, cuda) for name, fn in impls.items()}
            for name, seconds in times.items():
                bandwidth = kv_bytes / seconds
                rows.append({
                    "impl": name, "heads": layout, "slots": n, "dtype": str(dtype).replace("torch.", ""), "batch": args.batch,
                    "ms": 1000 * seconds, "kv_GBps": bandwidth / 1e9, "fraction_of_copy": bandwidth / copy_bw,
                    "vs_reference": times["reference"] / seconds, "device": device_name(str(device)),
                })
                print(f"{name:>16} heads {layout:>5} slots {n:>6}: {1000 * seconds:8.3f} ms, {bandwidth / 1e9:7.1f} GB/s"
                      + (f" ({bandwidth / copy_bw:.0%} of copy)" if cuda else "") + f", {times['reference'] / seconds:.2f}x reference")
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if cuda:
        print(f"device-to-device copy: {copy_bw / 1e9:.0f} GB/s; wrote {args.out}")
    else:
        print(f"CPU: Triton not timed (it runs here only under the interpreter); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
