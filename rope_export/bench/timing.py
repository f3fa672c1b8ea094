"""Timing: many calls after warm-up, rotating through input sets so caches do not flatter small
shapes; CUDA events on a GPU. `time_interleaved` times contenders round by round (what `bench`
reports: median, min and spread); `make_timer` times one function alone (the tools' scripts)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

__all__ = ["make_timer", "time_interleaved", "Timing", "NOISY_SPREAD"]


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


# The median call this much slower than the fastest: the machine was busy, the row's ratios are not to be trusted.
NOISY_SPREAD = 0.25


@dataclass
class Timing:
    """One contender's calls (ms): ``median``, ``min`` and ``spread`` = median / min - 1 (how
    much slower the typical call was than the best one; defined from two calls on)."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def spread(self) -> float:
        return self.median / self.min - 1.0 if self.min > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD


def time_interleaved(contenders: dict, device: str, repeat: int, warmup: int = 3, progress=None) -> dict[str, Timing]:
    """Time ``{name: (fn, sets)}`` in rounds: each round calls every contender once (in an order
    that rotates round by round) on the next input set, so a machine that slows down or speeds
    up mid-run moves every contender alike and their ratios hold. CUDA events on "cuda"; on CPU
    at most ~10 s a contender."""
    names = list(contenders)
    for name in names:
        if progress:
            progress(f"warming up {name}")
        fn, sets = contenders[name]
        for i in range(warmup):
            fn(*sets[i % len(sets)])
    if device == "cuda":
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {n: [] for n in names}
    budget = time.perf_counter() + 10.0 * max(1, len(names))
    for i in range(repeat):
        if progress:
            progress(f"round {i + 1}/{repeat}")
        for name in names[i % len(names):] + names[:i % len(names)]:
            fn, sets = contenders[name]
            times[name].append(_one_call(fn, sets[i % len(sets)], device))
        if time.perf_counter() > budget and i >= 4:
            break
    return {n: Timing(t) for n, t in times.items()}


def _one_call(fn, args, device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1e3
