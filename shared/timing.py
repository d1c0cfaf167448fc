"""Timing for benchmarks (not tests): the median of several calls after warm-up, with CUDA events
on a GPU (the host clock would time the launch, not the kernels) and the host clock on a CPU."""

from __future__ import annotations

import statistics
import time

import torch


def samples_seconds(fn, repeats: int, cuda: bool, warmup: int = 2) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


def median_seconds(fn, repeats: int, cuda: bool, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    return statistics.median(samples_seconds(fn, repeats, cuda, warmup))
