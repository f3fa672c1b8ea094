"""Tests of rope_export.validate.compare: per-vector tolerances, NaNs never pass, bounds that grow with position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rope_export as rx
from rope_export.validate.compare import TOLERANCES, case_tolerance, compare, reference_error_bound, unit_roundoff


def test_the_tolerance_is_per_head_vector():
    want = np.array([[1000.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    # 5e-3 off on a small element of a vector whose largest value is 1000: within 1e-5 * 1000
    got = want + np.array([[0.0, 5e-3], [0.0, 0.0]], dtype=np.float32)
    assert compare(got, want, TOLERANCES["float32"])["ok"]
    # the same error in a vector of size 1 is 500x the tolerance
    got = want + np.array([[0.0, 0.0], [0.0, 5e-3]], dtype=np.float32)
    result = compare(got, want, TOLERANCES["float32"])
    assert not result["ok"] and result["max_abs_err"] == pytest.approx(5e-3, rel=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinity_never_passes_even_where_the_reference_has_one(bad):
    want = np.array([[1.0, bad]], dtype=np.float32)
    assert not compare(want.copy(), want, {"rtol": 1.0, "atol": 1.0})["ok"]


def test_tensor_scale_and_bad_scale():
    want = np.full((2, 3), 0.01)
    assert compare(want + 5e-6, want, {"rtol": 1e-5, "atol": 0.0}, scale="tensor")["ok"]  # scale max(1, |want|)
    assert not compare(want + 5e-6, want, {"rtol": 1e-5, "atol": 0.0}, scale="vector")["ok"]
    with pytest.raises(ValueError, match="scale must be"):
        compare(want, want, TOLERANCES["float32"], scale="row")


def test_unit_roundoff_per_dtype():
    assert [unit_roundoff(d) for d in ("float32", "float16", "bfloat16")] == [2.0**-24, 2.0**-11, 2.0**-8]


def test_reference_bound_grows_with_position_and_dynamic_tolerance_only_past_the_switch():
    spec = rx.RopeSpec.standard(64, 10000.0)
    near, far = (reference_error_bound(spec, torch.tensor([[p]]), 1.0) for p in (10, 1_000_000))
    assert far > 1000 * near > 0
    dynamic = rx.RopeSpec.from_hf_config({"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4,
                                          "max_position_embeddings": 1024,
                                          "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
    tol = TOLERANCES["float32"]
    assert case_tolerance(dynamic, torch.tensor([[1023]]), tol) == tol
    assert case_tolerance(dynamic, torch.tensor([[5000]]), tol)["rtol"] > tol["rtol"]
    assert case_tolerance(spec, torch.tensor([[10**6]]), tol) == tol  # no length rule: nothing added
