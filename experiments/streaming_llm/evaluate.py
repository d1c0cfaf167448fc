"""Token-by-token perplexity, faithful to the paper's eval_long_ppl.py.

Each step feeds token t with the cache and scores the prediction of token t+1; the policy evicts
before the next token arrives, so with cache size S the current token sees S cached entries plus
itself. The recomputation baseline re-runs the model from scratch on the last S + 1 tokens
(the same number of keys) for every prediction.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shared.progress import progress
from shared.streaming import DeepSink, Full, HeavyHitters, ParticipativeCompression, Ring, SinkWindowPolicy
from shared.streaming.hf import StreamingModel, attn_implementation


@dataclass
class StreamResult:
    nll: torch.Tensor  # [N-1]: negative log-likelihood of token t+1 given the stream up to t
    seconds: torch.Tensor  # [N-1]: wall time of each step
    cache: int  # the cache size S (entries kept before a token arrives)

    def ppl(self, start: int = 0) -> float:
        return math.exp(self.nll[start:].mean().item())

    def summary(self) -> dict[str, float]:
        """Perplexity over all predictions and over those made once the cache is full, cost per token."""
        filled = min(self.cache, len(self.nll) - 1)
        return {
            "ppl": self.ppl(),
            "ppl_after_fill": self.ppl(filled),
            "ms_per_token": 1000 * self.seconds[filled:].mean().item(),
            "cache": float(self.cache),
        }


def policy_for(method, cache: int, n_tokens: int):
    """The cache policy of a row, ``cache`` entries kept before each token (frames are tokens here)."""
    if method.name == "dense":
        return Full(max_tokens=n_tokens)
    if method.name in ("window", "sink", "sink_absolute"):
        return SinkWindowPolicy(method.sinks, cache, reposition=method.reposition)
    if method.name == "ring":  # Self-Forcing / StreamDiffusionV2's rolling ring: sinks in place, stream positions
        return Ring(method.sinks, cache)
    if method.name == "deep_sink":  # Deep Forcing's deep sink: about half the cache pinned, re-aligned before the window
        sinks = round(method.sink_fraction * cache)
        return DeepSink(tokens_per_frame=1, sink_frames=sinks, window_frames=cache - sinks + 1)
    if method.name == "participative":  # Deep Forcing's compression: sinks + recent + most-attended, contiguous positions
        return ParticipativeCompression(tokens_per_frame=1, budget_frames=cache, recent_frames=round(method.recent_fraction * cache), sink_frames=method.sinks)
    if method.name == "h2o":  # heavy hitters + recent, positions inside the cache
        return HeavyHitters(budget=cache, recent=round(method.recent_fraction * cache), sinks=method.sinks)
    raise ValueError(f"no cache policy for method {method.name!r}")


@torch.no_grad()
def stream_nll(model, ids: torch.Tensor, method, cache: int, backend: str = "auto", desc: str = "", dense_one_pass: bool = False) -> StreamResult:
    """Stream ``ids`` ``[N]`` through the model one token at a time under the method's cache policy."""
    if method.name == "recompute":
        return recompute_nll(model, ids, cache, desc=desc)
    if method.name == "dense" and dense_one_pass:
        return dense_one_pass_nll(model, ids, cache)
    stream = StreamingModel(model, policy_for(method, cache, len(ids)), backend=backend)
    nll, seconds = torch.empty(len(ids) - 1), torch.empty(len(ids) - 1)
    for t in progress(range(len(ids) - 1), desc=desc):
        start = time.perf_counter()
        logits = stream.step(ids[t : t + 1][None])
        seconds[t] = time.perf_counter() - start
        nll[t] = F.cross_entropy(logits[0, -1].float(), ids[t + 1])
    return StreamResult(nll, seconds, cache)


@torch.no_grad()
def recompute_nll(model, ids: torch.Tensor, cache: int, desc: str = "") -> StreamResult:
    """Sliding window with recomputation: every prediction re-encodes the last cache + 1 tokens."""
    nll, seconds = torch.empty(len(ids) - 1), torch.empty(len(ids) - 1)
    with attn_implementation(model, "sdpa"):
        for t in progress(range(len(ids) - 1), desc=desc):
            start = time.perf_counter()
            window = ids[max(0, t - cache) : t + 1][None]
            logits = model(input_ids=window, use_cache=False).logits
            seconds[t] = time.perf_counter() - start
            nll[t] = F.cross_entropy(logits[0, -1].float(), ids[t + 1])
    return StreamResult(nll, seconds, cache)


@torch.no_grad()
def dense_one_pass_nll(model, ids: torch.Tensor, cache: int) -> StreamResult:
    """Dense attention scored in one causal forward pass (teacher forcing).

    Token-by-token dense attention with stream positions is exactly this computation, reordered;
    tests check the two agree. It makes dense affordable on streams longer than the training
    window. No per-token timing exists here: ``seconds`` holds the pass time spread evenly.
    """
    start = time.perf_counter()
    with attn_implementation(model, "sdpa"):
        hidden = model.model(input_ids=ids[None], use_cache=False).last_hidden_state[0, :-1]
    # The vocabulary projection in slices: full logits for a 32k-token stream would be 6 GB.
    nll = torch.cat([
        F.cross_entropy(model.lm_head(h).float(), t, reduction="none")
        for h, t in zip(hidden.split(2048), ids[1:].split(2048))
    ])
    elapsed = time.perf_counter() - start
    return StreamResult(nll, torch.full((len(ids) - 1,), elapsed / (len(ids) - 1)), cache)
