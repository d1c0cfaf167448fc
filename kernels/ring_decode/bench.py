"""Benchmark of ring-buffer decode attention (a benchmark, not a test):

    python -m kernels.ring_decode.bench --out ring_decode.csv [--sizes 1024 4096 16384 65536] [--head-dims 64 128]
        [--heads 8:8,32:8,64:8] [--dtypes bfloat16 float32] [--tiles 256 512 1024]

GPU: the Triton kernel (one row per register budget ``--tiles``, see triton_kernel.launch_config)
against the torch reference and against SDPA over pre-rotated keys, with CUDA events after warm-up
(median of --repeats), the achieved K/V read bandwidth as a fraction of a device-to-device copy
measured in the same run, and each output's error against the float64 reference. CPU: the
reference against SDPA only, as ratios in one run (Triton cannot run compiled on a CPU; under
``TRITON_INTERPRET=1`` the GPU pass's dry run times it too, meaninglessly, to exercise the code).
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch
import torch.nn.functional as F

from shared.io import atomic_path
from shared.provenance import device_name
from shared.streaming.rope import Rope
from shared.timing import median_seconds as timed

from . import ring_decode, triton_status


def copy_bandwidth(device, repeats: int, size: int = 1 << 30) -> float:
    """Bytes per second of a device-to-device copy of ``size`` bytes (read + write counted)."""
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / timed(lambda: dst.copy_(src), repeats, torch.device(device).type == "cuda")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


def measure(sizes, layouts, head_dims, dtypes, tiles, repeats: int, device, copy_bw: float, log=print) -> list[dict]:
    """One row per (head dim, layout, dtype, slots, implementation); see the module docstring."""
    from .reference import ring_decode_reference

    cuda = torch.device(device).type == "cuda"
    use_triton = triton_status()[0]
    rows = []
    for d in head_dims:
        for h, hkv in layouts:
            for dtype in dtypes:
                for n in sizes:
                    g = torch.Generator(device=device).manual_seed(n + d + h)
                    q = torch.randn(1, h, d, device=device, dtype=dtype, generator=g)
                    k, v = (torch.randn(1, hkv, n, d, device=device, dtype=dtype, generator=g) for _ in range(2))
                    q_pos = 2 * n
                    slot_pos = torch.cat([torch.arange(4), torch.arange(q_pos - n + 5, q_pos + 1)]).to(device)
                    kwargs = dict(q_pos=q_pos, sinks=4, window=n - 4, theta=1e5)
                    want = ring_decode_reference(q.double(), k.double(), v.double(), slot_pos, slot_pos, q_pos=q_pos, q_rope_pos=q_pos,
                                                 sinks=4, window=n - 4, theta=1e5)
                    rope = Rope(d, theta=1e5)
                    k_rot = rope.apply(k, slot_pos)  # SDPA needs rotated keys: a real decode step would rotate them too
                    q_rot = rope.apply(q[:, :, None], torch.tensor([q_pos], device=device))
                    impls = {
                        "reference": lambda: ring_decode(q, k, v, slot_pos, impl="reference", **kwargs),
                        "sdpa_prerotated": lambda: F.scaled_dot_product_attention(q_rot, k_rot, v, enable_gqa=h != hkv)[:, :, 0],
                    }
                    if use_triton:
                        from .triton_kernel import ring_decode_triton

                        for tile in tiles:
                            impls[f"triton_tile{tile}"] = lambda t=tile: ring_decode_triton(
                                q, k, v, slot_pos, slot_pos, 1e5, q_pos, q_pos, 4, n - 4, d ** -0.5, tile_per_warp=t)
                    kv_bytes = 2 * k.numel() * k.element_size()
                    times = {name: timed(fn, repeats, cuda) for name, fn in impls.items()}
                    for name, seconds in times.items():
                        bandwidth = kv_bytes / seconds
                        rows.append({
                            "impl": name, "head_dim": d, "heads": f"{h}:{hkv}", "group": h // hkv, "slots": n,
                            "dtype": str(dtype).replace("torch.", ""), "ms": 1000 * seconds, "kv_GBps": bandwidth / 1e9,
                            "fraction_of_copy": bandwidth / copy_bw, "vs_reference": times["reference"] / seconds,
                            "rel_err_vs_float64": relative_error(impls[name](), want), "device": device_name(str(device)),
                        })
                        log(f"{name:>16} d {d:>3} heads {h:>2}:{hkv:<2} {rows[-1]['dtype']:>8} slots {n:>6}: {1000 * seconds:8.3f} ms, "
                            f"{bandwidth / 1e9:7.1f} GB/s ({bandwidth / copy_bw:.0%} of copy), err {rows[-1]['rel_err_vs_float64']:.1e}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.ring_decode.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="cache slots (default: 1k..64k on GPU, 256..4k on CPU)")
    parser.add_argument("--heads", default="8:8,32:8,64:8", help="query:kv head layouts, comma-separated (GQA 1, 4, 8)")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--tiles", type=int, nargs="+", default=[512], help="register budgets (tile elements per warp) to try")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtypes = [getattr(torch, name) for name in args.dtypes] if cuda else [torch.float32]
    sizes = args.sizes or ([1024, 4096, 16384, 65536] if cuda else [256, 1024, 4096])
    copy_bw = copy_bandwidth(device, 10) if cuda else copy_bandwidth(device, 3, 1 << 26)
    layouts = [tuple(map(int, layout.split(":"))) for layout in args.heads.split(",")]
    rows = measure(sizes, layouts, args.head_dims, dtypes, args.tiles, args.repeats if cuda else 5, device, copy_bw)
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"device-to-device copy: {copy_bw / 1e9:.0f} GB/s; wrote {args.out}")
    if not cuda:
        print("CPU: Triton not timed (it runs here only under the interpreter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
