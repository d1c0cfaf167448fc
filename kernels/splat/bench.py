"""Forward+backward time of one render against Gaussian count and image size.

    python -m kernels.splat.bench [--backend reference,sparse|gsplat] [--repeats 5] [--out bench.csv]

On a CPU the reference and the sparse path run in the same process, one size after the other, and
the speed-up is their ratio (these machines are noisy: compare only times of one run); on CUDA
gsplat's times are absolute (after warm-up, with synchronisation).
"""

from __future__ import annotations

import argparse
import csv

import torch

from shared.timing import median_seconds

from . import render


def scene(n: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.6, 0.45, 0.3]) + torch.tensor([0, 0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = 0.02 + 0.05 * torch.rand(n, 3, generator=g)
    opac = 0.2 + 0.7 * torch.rand(n, generator=g)
    sh = 0.3 * torch.randn(n, 9, 3, generator=g)
    return [t.to(device).requires_grad_(True) for t in (means, quats, scales, opac, sh)]


def time_render(n: int, width: int, height: int, backend: str, device: str, repeats: int) -> float:
    params = scene(n, device)
    viewmat = torch.eye(4, device=device)
    K = torch.tensor([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1.0]], device=device)

    def forward_backward():
        image, alpha, _ = render(*params, viewmat, K, width, height, impl=backend)
        (image.sum() + alpha.sum()).backward()

    return median_seconds(forward_backward, repeats, device == "cuda", warmup=1)  # the first call JIT-compiles gsplat


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="reference,sparse", help="comma-separated: reference, sparse, gsplat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    backends = args.backend.split(",")
    if unknown := set(backends) - {"reference", "sparse", "gsplat"}:
        parser.error(f"unknown backend(s) {sorted(unknown)}")
    device = "cuda" if "gsplat" in backends or torch.cuda.is_available() else "cpu"
    sizes = [(32, 24), (64, 48)] if device == "cpu" else [(32, 24), (338, 254), (1352, 1014)]
    counts = [100, 300, 1000, 4000] if device == "cpu" else [1_000, 100_000, 500_000]
    rows = []
    for width, height in sizes:
        for n in counts:
            times = {}
            for backend in backends:
                times[backend] = seconds = time_render(n, width, height, backend, device, args.repeats)
                rows.append({"backend": backend, "device": device, "n": n, "width": width, "height": height, "ms_fwd_bwd": 1e3 * seconds})
            ratio = f"  reference / sparse: {times['reference'] / times['sparse']:5.1f}x" if {"reference", "sparse"} <= set(times) else ""
            print(f"{device:4s} N={n:>7d} {width}x{height}: " + ", ".join(f"{b} {1e3 * t:8.1f} ms" for b, t in times.items())
                  + f" forward+backward{ratio}", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
