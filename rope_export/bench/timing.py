"""Timing: median of many calls after warm-up, rotating through input sets so caches do not
flatter small shapes; CUDA events on a GPU."""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["make_timer"]


def make_timer(device: str, repeat: int, warmup: int | None = None):
    """``timer(fn, sets) -> median ms``: warm-up, then ``repeat`` timed calls rotating through
    ``sets``; CUDA events on "cuda" (one synchronised call each), perf_counter on CPU (at most
    ~10 s a backend)."""
    if device == "cuda":
        warm = 5 if warmup is None else warmup

        def run(fn, sets):
            for i in range(warm):
                fn(*sets[i % len(sets)])
            torch.cuda.synchronize()
            times = []
            for i in range(repeat):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(*sets[i % len(sets)])
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            return statistics.median(times)
        return run

    warm = 3 if warmup is None else warmup

    def run(fn, sets):
        for i in range(warm):
            fn(*sets[i % len(sets)])
        times, budget = [], time.perf_counter() + 10.0
        for i in range(repeat):
            t = time.perf_counter()
            fn(*sets[i % len(sets)])
            times.append((time.perf_counter() - t) * 1e3)
            if time.perf_counter() > budget and len(times) >= 5:
                break
        return statistics.median(times)
    return run
