"""Which position stream each rotation pair follows (a spec's ``axis_of_pair``).

Example:
    >>> mrope_axes([1, 1, 2], interleaved=False)
    (0, 1, 2, 2)
    >>> axial_axes(4, column_first=True)
    (1, 1, 0, 0)
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["mrope_axes", "alternating_axes", "axial_axes", "stream_order"]


def mrope_axes(sections: Sequence[int], *, interleaved: bool, pairs: int | None = None) -> tuple[int, ...]:
    """Multi-axis RoPE: ``sections`` counts pairs per axis (``mrope_section``).

    Contiguous (Qwen2-VL, Qwen2.5-VL): pairs ``[0, s0)`` follow axis 0, the next ``s1`` axis 1, ...
    Interleaved (Qwen3-VL): pair j follows axis ``a = j % A`` when ``a > 0`` and
    ``j < A * sections[a]``, else axis 0. That rule (transformers' and vLLM's strided
    overwrite of the axis-0 angles) holds for any number of pairs, so interleaved sections need
    not sum to ``pairs``: the pairs past them follow axis 0 (Qwen4-Exp's default config).

    Raises:
        ValueError: fewer than 2 sections, a negative one, or (contiguous, with ``pairs``) a
            sum other than ``pairs``.
    """
    sections = [int(s) for s in sections]
    if len(sections) < 2 or any(s < 0 for s in sections):
        raise ValueError(f"sections (mrope_section) must list >= 2 non-negative pair counts, got {sections}")
    total = sum(sections)
    num_axes = len(sections)
    if interleaved:
        return tuple((j % num_axes) if j % num_axes > 0 and j < num_axes * sections[j % num_axes] else 0
                     for j in range(total if pairs is None else pairs))
    if pairs is not None and total != pairs:
        raise ValueError(f"sections (mrope_section) {sections} sum to {total}, expected rotary_dim / 2 = {pairs}")
    return tuple(a for a, s in enumerate(sections) for _ in range(s))


def alternating_axes(sections: Sequence[int]) -> tuple[int, ...]:
    """ERNIE 4.5-VL's M-RoPE: the first ``s1 + s2`` pairs alternate axis 1 and axis 2 (its h and
    w streams, frequencies in order), the last ``s3`` pairs follow axis 0 (t).

    >>> alternating_axes([2, 2, 1])
    (1, 2, 1, 2, 0)

    Raises:
        ValueError: not 3 sections, or its first two differ (its code stacks them pair by pair).
    """
    sections = [int(s) for s in sections]
    if len(sections) != 3 or sections[0] != sections[1] or min(sections) < 0:
        raise ValueError(f"mrope_section must be [n, n, m] (h and w alternate pair by pair), got {sections}")
    return tuple(1 + j % 2 for j in range(2 * sections[0])) + (0,) * sections[2]


def axial_axes(pairs: int, *, column_first: bool = False) -> tuple[int, ...]:
    """2D RoPE: the first half of the pairs follows rows (axis 0), the second half columns
    (axis 1); ``column_first`` swaps them (Llama 4 vision)."""
    first, second = (1, 0) if column_first else (0, 1)
    return (first,) * (pairs // 2) + (second,) * (pairs // 2)


def stream_order(axis_of_pair: Sequence[int]) -> tuple[list[int], list[int]]:
    """(streams in the order they first appear, pair indices grouped by stream in that order).
    The pairs are already grouped (contiguous sections, 2D halves) when the second is
    ``range(P)``; Qwen3-VL's interleaved sections are not.

    >>> stream_order((1, 1, 0, 0))
    ([1, 0], [0, 1, 2, 3])
    """
    streams = list(dict.fromkeys(axis_of_pair))
    return streams, [i for a in streams for i, b in enumerate(axis_of_pair) if b == a]
