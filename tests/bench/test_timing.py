"""Tests of rope_export.bench.timing: contenders timed round by round, noisy rows flagged."""

from __future__ import annotations

import pytest

from rope_export.bench import format_table


def test_contenders_are_timed_round_by_round_in_rotating_order():
    from rope_export.bench.timing import time_interleaved

    calls = []
    contenders = {name: (lambda x, name=name: calls.append((name, x)), [(0,), (1,)]) for name in "abc"}
    timings = time_interleaved(contenders, "cpu", repeat=3, warmup=1)
    assert calls[:3] == [("a", 0), ("b", 0), ("c", 0)]  # warm-up, one call each
    rounds = [calls[3 + 3 * i: 6 + 3 * i] for i in range(3)]
    assert [[n for n, _ in r] for r in rounds] == [list("abc"), list("bca"), list("cab")]
    assert [{x for _, x in r} for r in rounds] == [{0}, {1}, {0}]  # every contender on the same input set
    assert all(len(t.times) == 3 for t in timings.values())


def test_noisy_rows_are_flagged_and_counted():
    from rope_export.bench import BenchRow
    from rope_export.bench.timing import NOISY_SPREAD, Timing

    assert Timing([1.0, 1.1, 5.0]).spread == pytest.approx(0.1) and not Timing([1.0, 1.1, 5.0]).noisy
    assert Timing([1.0, 2.0, 2.0]).noisy  # the typical call twice the best: the machine was busy
    quiet = BenchRow("p", "s", "a", 1.0, 1.0, 1.0, 1.0, "", 1, 8, 0.95, 0.05)
    busy = BenchRow("p", "s", "b", 3.0, 1.0, 3.0, 0.3, f"noisy: spread {2:.0%}", 1, 8, 1.0, 2.0)
    assert "rows are noisy" not in format_table([quiet])
    last = format_table([quiet, busy]).splitlines()[-1]
    assert last.startswith("1 of 2 rows are noisy") and f"{NOISY_SPREAD:.0%}" in last
