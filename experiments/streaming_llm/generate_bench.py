"""``model.generate`` through the sink cache against transformers' own DynamicCache, on SmolLM2.

    python -m experiments.streaming_llm generate-bench [--prompt 256] [--new 128] [--window 252] [--repeats 3] [--out FILE]

Greedy decoding from the first ``--prompt`` tokens of GPL-3, three ways in one process:
``SinkCache(model, 4, window)`` (cache 4 + window entries, evicting once the stream passes it),
``DynamicCache`` (dense: every token kept), and the project's own streaming loop
(``StreamingModel``) replaying the sink cache's tokens. Reported: whether the sink cache's tokens are
the project loop's (and the largest logit difference), and the decode time per token of each cache
(generate with ``--new`` tokens minus generate with 1, so prefill cancels; the median of
``--repeats``, interleaved), with their ratio, and the ratio paired per repeat with its s.e. The dense cache holds prompt..prompt+new keys, the
sink cache 4 + window: "the same number of cached tokens" when the window is about the prompt.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import DynamicCache

from shared import provenance
from shared.io import atomic_write_json
from shared.streaming import SinkWindowPolicy
from shared.streaming.hf import SinkCache, StreamingModel

from .data import token_stream
from .model import load


def timed_generate(model, ids, make_cache, new: int):
    start = time.perf_counter()
    out = model.generate(ids, past_key_values=make_cache(), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=model.config.eos_token_id)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.streaming_llm generate-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--window", type=int, default=252)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--out", help="write the summary and provenance as JSON here (refuses to overwrite)")
    args = parser.parse_args(argv)
    if args.prompt > args.sinks + args.window + 1:
        parser.error(f"--prompt {args.prompt} is longer than the cache ({args.sinks} + {args.window} + 1): the model's own attention "
                     "cannot hide part of a prompt (use attn_implementation='streamlab_streaming' for that)")
    if args.out:
        from pathlib import Path

        if Path(args.out).exists():
            parser.error(f"--out {args.out} exists; results are never overwritten")

    model, encode = load(OmegaConf.create({"kind": args.model, "seed": 0}))
    ids = token_stream(encode, ["GPL-3"], args.prompt)[None]
    caches = {"sink": lambda: SinkCache(model, sinks=args.sinks, window=args.window), "dynamic": lambda: DynamicCache(config=model.config)}
    seconds = {name: [] for name in caches}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, make in caches.items():  # interleaved, so drift on a shared machine hits both
                full, outputs[name] = timed_generate(model, ids, make, args.new)
                one, _ = timed_generate(model, ids, make, 1)
                seconds[name].append((full - one) / (args.new - 1))
        sink = outputs["sink"]
        sequence = sink.sequences[0]
        stream = StreamingModel(model, SinkWindowPolicy(args.sinks, args.sinks + args.window), max_chunk=args.prompt)
        ours = [stream.step(sequence[None, : args.prompt])[0, -1]]
        for t in range(args.prompt, len(sequence) - 1):
            ours.append(stream.step(sequence[None, t : t + 1])[0, -1])
        ours = torch.stack(ours)
    theirs = torch.stack(sink.logits, 1)[0]
    ms = {name: 1000 * float(np.median(s)) for name, s in seconds.items()}
    ratios = np.array(seconds["sink"]) / np.array(seconds["dynamic"])  # paired by repeat (interleaved)
    ratio_se = float(ratios.std(ddof=1) / np.sqrt(len(ratios))) if len(ratios) > 1 else float("nan")
    summary = {
        "tokens_identical_to_project_loop": bool(torch.equal(ours.argmax(-1), sequence[args.prompt:])),
        "max_logit_difference": float((ours - theirs).abs().max()),
        "tokens_identical_to_dense": bool(torch.equal(sequence, outputs["dynamic"].sequences[0])),
        "ms_per_token": ms, "ratio_sink_over_dynamic": ms["sink"] / ms["dynamic"],
        "ratio_per_repeat": ratios.tolist(), "ratio_mean": float(ratios.mean()), "ratio_se": ratio_se,
        "threads": torch.get_num_threads(), "args": vars(args),
    }
    if args.out:
        record = provenance.collect()
        record.pop("git_diff")
        atomic_write_json(args.out, {**summary, "provenance": record})
    print(f"generate, prompt {args.prompt} + {args.new} new tokens, {torch.get_num_threads()} threads: sink cache {args.sinks}+{args.window} "
          f"{ms['sink']:.1f} ms/token, DynamicCache {ms['dynamic']:.1f} ms/token (medians; ratio {summary['ratio_sink_over_dynamic']:.3f}, "
          f"paired per repeat {ratios.mean():.3f} ± {ratio_se:.3f}); "
          f"tokens identical to the project loop: {summary['tokens_identical_to_project_loop']} (max logit difference "
          f"{summary['max_logit_difference']:.2e}); identical to dense: {summary['tokens_identical_to_dense']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
