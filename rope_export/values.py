"""Checked numbers shared by the spec and its rules: float32 tables and positive fields.

    >>> float32_tuple([0.1], "inv_freq")
    (0.10000000149011612,)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["float32_tuple", "positive_number", "positive_int", "freeze", "thaw", "FLOAT32_MAX"]


def float32_tuple(values: Sequence[float], name: str) -> tuple[float, ...]:
    """``values`` rounded to float32, held as Python floats (so JSON round-trips bit for bit).

    Raises ValueError naming ``name`` for a non-finite or negative entry.
    """
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        raise ValueError(f"{name}: every entry must be a number")
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except OverflowError:  # an int past float64's range
        raise ValueError(f"{name}: every entry must be finite in float32 (|v| < 3.4e38)") from None
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > FLOAT32_MAX):
        raise ValueError(f"{name}: every entry must be finite in float32 (|v| < 3.4e38), as the graphs hold it")
    if np.any(arr < 0):
        raise ValueError(f"{name}: frequencies must be >= 0")
    rounded = arr.astype(np.float32)
    if np.any((arr != 0) & (rounded == 0)):
        raise ValueError(f"{name}: an entry too small for float32 would become 0 (|v| >= 1.2e-38 or exactly 0)")
    return tuple(float(v) for v in rounded)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def positive_number(value, name: str) -> float:
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
            and math.isfinite(value) and value > 0
    except OverflowError:  # an int past float64's range (a JSON 10**400)
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number > 0, got {str(value)[:40]}")
    return float(value)


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def freeze(value: Any) -> Any:
    """Nested dicts and lists as sorted tuples (hashable, so a frozen spec can hold them)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of `freeze`."""
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value) and value:
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
