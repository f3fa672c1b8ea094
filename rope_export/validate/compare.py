"""The comparator and its tolerances: how close an exported graph must come to the torch
module (parity), and to exact float64 maths (the reference bound).

    >>> import numpy as np
    >>> compare(np.ones((1, 1, 1, 4)), np.ones((1, 1, 1, 4)), TOLERANCES["float32"])["ok"]
    True
"""

from __future__ import annotations

import math

import numpy as np

from .._util import torch_dtype
from ..reference import inv_freq_for
from ..spec import RopeSpec

__all__ = ["TOLERANCES", "compare", "case_tolerance", "unit_roundoff", "reference_error_bound", "max_pair_norm_bound"]

# Parity with the torch module, per element: |got - want| <= atol + rtol * scale, where
# scale is the largest |value| of that token's head vector (a rotation keeps pair norms, so
# this is the size the rounding acts on). float32: both sides compute the same float32
# angle; sin/cos implementations differ by a few ulps -> 1e-5 (~80 ulps) leaves room for
# that. A wrong frequency moves outputs ~1e-4 at position 100k per ulp, but only at the
# positions a case samples: the structural check (`structure`) is what proves every constant.
# float16 / bfloat16: the standard op rotates with cos/sin rounded to the activation dtype
# and rounds the result once: 4 units of the dtype's epsilon.
TOLERANCES = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float16": {"rtol": 4 * 2.0**-10, "atol": 2.0**-14},
    "bfloat16": {"rtol": 4 * 2.0**-7, "atol": 2.0**-14},
}


def compare(got: np.ndarray, want: np.ndarray, tol: dict, *, scale: str = "vector") -> dict:
    """Errors of ``got`` against ``want`` (float arrays of one shape).

    Args:
        tol: ``{"rtol": .., "atol": ..}``: each element must satisfy
            ``|got - want| <= atol + rtol * scale``.
        scale: "vector": the largest ``|want|`` along the last axis (a head vector
            ``[B, H, S, D]``: a rotation keeps its norm); "tensor": ``max(1, max |want|)``
            (whole-model outputs).
    Returns:
        ``{"max_abs_err", "max_rel_err", "cosine", "ok"}``; ``ok`` is False when any element is
        outside the tolerance or ``got`` holds a NaN or an infinity.
    """
    with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf: a NaN that "ok" refuses below
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if scale == "vector":
            ref = np.abs(want).max(axis=-1, keepdims=True).astype(np.float64)
        elif scale == "tensor":
            ref = np.float64(max(1.0, float(np.abs(want).max()) if want.size else 1.0))
        else:
            raise ValueError(f"scale must be 'vector' or 'tensor', got {scale!r}")
        within = err <= tol["atol"] + tol["rtol"] * ref
        a, b = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        return {
            "max_abs_err": float(err.max()) if err.size else 0.0,
            "max_rel_err": float((err / np.maximum(ref, tol["atol"] or np.finfo(np.float64).tiny)).max()) if err.size else 0.0,
            "cosine": float(a @ b / denom) if denom > 0 else 1.0,
            "ok": bool(within.all()) and bool(np.isfinite(got).all()),
        }


def case_tolerance(spec: RopeSpec, position_ids, tol: dict) -> dict:
    """The parity tolerance for one set of positions. Dynamic NTK builds its table in the
    graph with float32 Pow, which runtimes do not round identically (a few ulps), so the
    angle may move by |angle| * 4 * 2^-24 on top of the dtype's tolerance."""
    rule = spec.length_rule
    if rule is None or rule.kind != "dynamic" or int(position_ids.max()) < rule.max_position_embeddings:
        return dict(tol)  # the static table applies: no Pow in play
    max_angle = float(position_ids.abs().max()) * max(inv_freq_for(spec, int(position_ids.max())), default=0.0)
    return {**tol, "rtol": tol["rtol"] + 4 * 2.0**-24 * max_angle}


def unit_roundoff(dtype: str) -> float:
    """Half the machine epsilon of an activation dtype: 2^-24, 2^-11, 2^-8."""
    import torch

    return torch.finfo(torch_dtype(dtype)).eps / 2


def reference_error_bound(spec: RopeSpec, position_ids, pair_norm: float, *, angle_ulps: float = 4.0,
                          rounding: float = 0.0) -> float:
    """Allowed distance from exact (float64) maths for a rotation computed with float32 angles.

    The float32 angle fl(pos * inv_freq) is off by up to |angle| * 2^-24 (``angle_ulps`` of
    those: more where a runtime's Pow builds the table); sin/cos of it and the four products
    of the rotation add a few ulps of the pair norm (8 * 2^-24); ``rounding`` adds the
    activation dtype's rounding of the result. Factor 2 of margin.
    """
    freqs = inv_freq_for(spec, int(position_ids.max()))
    max_angle = float(position_ids.abs().max()) * max(freqs, default=0.0)
    return 2 * spec.attention_scaling * pair_norm * (angle_ulps * max_angle * 2.0**-24 + 8 * 2.0**-24 + rounding)


def max_pair_norm_bound(*tensors) -> float:
    """An upper bound of every rotation pair's 2D norm: sqrt(2) times the largest |value|."""
    return float(max(t.float().abs().max() for t in tensors)) * math.sqrt(2)
