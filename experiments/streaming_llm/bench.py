"""Per-token cost of sink + window attention over a long stream: it should not grow with length.

A benchmark, not a test (timings on shared CPUs are noisy; the claim is a ratio within one run):

    python -m experiments.streaming_llm.bench --tokens 16384 --cache 256 --out flat.npz

Streams the concatenated licence texts token by token through SinkWindowPolicy(sinks, cache) and
compares the mean time per token over the first ``--span`` tokens after the cache fills with the
last ``--span`` tokens of the stream. Writes per-token milliseconds and NLL to ``--out`` (an npz
with ``position``, ``ms``, ``nll``, like the other committed arrays), its summary and provenance
to ``--out``.json.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
from omegaconf import OmegaConf

from shared import provenance
from shared.io import atomic_path, atomic_write_json

from .data import LONG_ORDER, token_stream
from .evaluate import stream_nll
from .model import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.streaming_llm.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--cache", type=int, default=256)
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--span", type=int, default=1000, help="tokens averaged at the start and the end")
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--out", help="npz of per-token ms and NLL (a .npz name)")
    args = parser.parse_args(argv)
    if args.out and not args.out.endswith(".npz"):
        parser.error(f"--out {args.out}: give an .npz file name")
    if args.tokens < args.cache + 2 * args.span:
        parser.error(f"--tokens must be at least cache + 2 * span = {args.cache + 2 * args.span}")

    model, encode = load(OmegaConf.create({"kind": args.model, "seed": 0}))
    ids = token_stream(encode, LONG_ORDER, args.tokens)
    method = OmegaConf.create({"name": "sink", "sinks": args.sinks, "reposition": "cache"})
    result = stream_nll(model, ids, method, args.cache, desc=f"sink {args.sinks}+{args.cache - args.sinks}")
    ms = 1000 * result.seconds
    first = ms[args.cache : args.cache + args.span].mean().item()
    last = ms[-args.span :].mean().item()
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, position=np.arange(len(ms)), ms=ms.double().numpy(), nll=result.nll.double().numpy())
    summary = {"first_ms": first, "last_ms": last, "ratio": last / first, "ppl": math.exp(result.nll.mean().item()), "args": vars(args)}
    if args.out:
        record = provenance.collect()
        record.pop("git_diff")
        atomic_write_json(f"{args.out}.json", {**summary, "provenance": record})
    print(
        f"sink {args.sinks}+{args.cache - args.sinks}, {args.tokens} tokens on {torch.get_num_threads()} threads: "
        f"{first:.1f} ms/token over the first {args.span} after the cache fills, {last:.1f} over the last {args.span} "
        f"(ratio {last / first:.3f}); perplexity {math.exp(result.nll.mean().item()):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
