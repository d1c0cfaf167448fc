"""Ahead-of-time compile of the decode kernel for a GPU that is not here, with ptxas's report.

    python -m kernels.ring_decode.aot            # every layout the tests check, for sm_90 (H100/H200)

Triton compiles a kernel for the arguments of its launch: integer arguments equal to 1 become
compile-time constants and others are tagged by divisibility by 16. The interpreter that runs the
CPU parity tests does none of this, so a kernel can pass every CPU test and still fail to compile on
the GPU at the second token of a stream. This module binds real launch arguments
(``triton_kernel.launch_arguments``) with Triton's own binder for a CUDA target, compiles exactly
those specialisations to PTX and cubin with Triton's bundled ptxas, and reads the registers, stack
frame and spills that ptxas reports. No GPU and no CUDA driver are needed.

It uses two of Triton's internals (``create_function_from_signature`` and ``JITFunction._pack_args``,
the path ``JITFunction.run`` takes); they are the pinned Triton's (env/requirements-cpu.txt).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .triton_kernel import _ring_decode_split, launch_arguments


def specialisation(args, kwargs, arch: int = 90):
    """(signature, constexprs, attrs, options, target, backend) Triton would compile for this launch on sm_<arch>."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(_ring_decode_split.signature, _ring_decode_split.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = _ring_decode_split._pack_args(backend, kwargs, bound, spec, options)
    return signature, constexprs, attrs, options, target


def compile_report(signature, constexprs, attrs, options, target) -> dict:
    """Compile one specialisation; ptxas's registers, stack frame and spill bytes for it."""
    import triton
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    kernel = triton.compile(ASTSource(_ring_decode_split, signature, constexprs, attrs), target=target, options=options.__dict__)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        arch = f"sm_{target.arch}a" if target.arch == 90 else f"sm_{target.arch}"
        done = subprocess.run([get_ptxas(target.arch).path, f"-arch={arch}", "-v", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ptxas failed: {done.stderr[-1000:]}")
    report = done.stderr

    def number(pattern):
        found = re.search(pattern, report)
        return int(found.group(1)) if found else 0

    return {"registers": number(r"Used (\d+) registers"), "stack_frame_bytes": number(r"(\d+) bytes stack frame"),
            "spill_store_bytes": number(r"(\d+) bytes spill stores"), "spill_load_bytes": number(r"(\d+) bytes spill loads"),
            "num_warps": options.num_warps, "constexprs": sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in constexprs)}


def decode_launch(head_dim: int, heads: int, kv_heads: int, dtype: torch.dtype, n_slots: int, q_pos: int, batch: int = 1):
    """The launch arguments of one decode step (CPU tensors: only their dtype, strides and alignment matter)."""
    q = torch.randn(batch, heads, head_dim).to(dtype)
    k = torch.randn(batch, kv_heads, n_slots, head_dim).to(dtype)
    v = torch.randn_like(k)
    slot_pos = torch.arange(n_slots) + max(0, q_pos + 1 - n_slots)
    _, args, kwargs, _ = launch_arguments(q, k, v, slot_pos, slot_pos.clone(), q_pos, q_pos, 4, max(1, n_slots - 4), head_dim ** -0.5, 1e4)
    return args, kwargs


# (head_dim, heads, kv_heads, dtype, n_slots, q_pos): the first tokens of a stream (one and two filled
# slots, positions 0 and 1), a steady state at a far position, every head dim x GQA group in bf16,
# and the other dtypes at the largest tiles.
LAYOUTS = (
    [(64, 32, 8, torch.bfloat16, 1, 0), (64, 32, 8, torch.bfloat16, 2, 1), (96, 9, 3, torch.float32, 2, 1)]
    + [(d, 8 * g, 8, torch.bfloat16, 4096, 70_000) for d in (64, 96, 128) for g in (1, 4, 8)]
    + [(d, 8 * g, 8, dt, 4096, 70_000) for d, g in ((64, 4), (128, 8)) for dt in (torch.float32, torch.float16)]
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.ring_decode.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    rows = []
    for d, h, hkv, dtype, n, q_pos in LAYOUTS:
        launch_args, kwargs = decode_launch(d, h, hkv, dtype, n, q_pos)
        report = compile_report(*specialisation(launch_args, kwargs, args.arch))
        rows.append({"head_dim": d, "heads": f"{h}:{hkv}", "dtype": str(dtype).removeprefix("torch."), "n_slots": n, "q_pos": q_pos,
                     "block_n": kwargs["BLOCK_N"], **report})
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
