"""Prefill through FlexAttention against dense SDPA for the core's structured masks (a benchmark):

    python -m shared.streaming.bench [--tokens 4096 16384] [--heads 16:4] [--head-dim 64] [--repeats 20]

For each mask (StreamingLLM's sink + window, CarelessWhisper's block-causal chunks) and length T:
FlexAttention with its BlockMask built once (compiled on a GPU, eager on a CPU) against SDPA with the
dense [T, T] boolean mask, timed after warm-up (CUDA events on a GPU); the outputs' error against
float32 ``reference`` attention (at T <= 4096; above that, the two against each other); the BlockMask
build time and flex's first-call (compile) time separately. bf16 on a GPU, float32 on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from ..timing import median_seconds
from .attention import _compiled_flex, reference_attention
from .masks import BlockCausal, SinkWindow, block_mask, dense_mask

REFERENCE_MAX_TOKENS = 4096  # the float32 reference holds [H, T, T] scores


def prefill(tokens: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device, repeats: int, compile_flex: bool,
            window: int = 1024, block: int = 256) -> list[dict]:
    from torch.nn.attention.flex_attention import flex_attention

    cuda = torch.device(device).type == "cuda"
    g = torch.Generator(device=device).manual_seed(tokens)
    q = torch.randn(1, heads, tokens, head_dim, device=device, dtype=dtype, generator=g)
    k, v = (torch.randn(1, kv_heads, tokens, head_dim, device=device, dtype=dtype, generator=g) for _ in range(2))
    pos = torch.arange(tokens, device=device)
    gqa = heads != kv_heads
    rows = []
    for name, mask in (("sink_window", SinkWindow(4, min(window, tokens))), ("block_causal", BlockCausal(min(block, tokens)))):
        t0 = time.perf_counter()
        bm = block_mask(mask, pos, pos)
        build = time.perf_counter() - t0
        dense = dense_mask(mask, pos, pos)
        flex = _compiled_flex() if compile_flex else flex_attention
        t0 = time.perf_counter()
        out_flex = flex(q, k, v, block_mask=bm, enable_gqa=gqa)
        if cuda:
            torch.cuda.synchronize()
        first_call = time.perf_counter() - t0
        out_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=gqa)
        if tokens <= REFERENCE_MAX_TOKENS:
            want, _ = reference_attention(q.float(), k.float(), v.float(), dense, head_dim ** -0.5)
            against = "reference_float32"
        else:
            want, against = out_sdpa.float(), "sdpa_dense"

        def err(x):
            return float((x.float() - want).norm() / want.norm())

        flex_s = median_seconds(lambda: flex(q, k, v, block_mask=bm, enable_gqa=gqa), repeats, cuda)
        sdpa_s = median_seconds(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=gqa), repeats, cuda)
        visible = float(dense.float().mean())
        rows.append({"mask": name, "mask_spec": str(mask), "tokens": tokens, "heads": f"{heads}:{kv_heads}", "head_dim": head_dim,
                     "dtype": str(dtype).removeprefix("torch."), "visible_fraction": visible, "flex_ms": 1e3 * flex_s, "sdpa_dense_ms": 1e3 * sdpa_s,
                     "flex_speedup_vs_sdpa": sdpa_s / flex_s, "flex_rel_err": err(out_flex), "sdpa_rel_err": err(out_sdpa) if against != "sdpa_dense" else None,
                     "errors_against": against, "block_mask_build_s": build, "flex_first_call_s": first_call, "flex_compiled": compile_flex,
                     # 4 T^2 d H FLOPs of dense attention, times the visible fraction: the work a block-sparse kernel must do
                     "flex_tflops_on_visible": 4 * tokens**2 * head_dim * heads * visible / flex_s / 1e12})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.streaming.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help="prefill lengths (default 4096 16384 on GPU, 512 on CPU)")
    parser.add_argument("--heads", default="16:4", help="query:kv heads")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--eager", action="store_true", help="do not compile FlexAttention (the default on a CPU)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    h, hkv = map(int, args.heads.split(":"))
    rows = []
    for t in args.tokens or ([4096, 16384] if cuda else [512]):
        rows += prefill(t, h, hkv, args.head_dim, torch.bfloat16 if cuda else torch.float32, device, args.repeats if cuda else 3,
                        compile_flex=cuda and not args.eager)
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
