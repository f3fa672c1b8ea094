"""Tests of rope_export.values: float32 tables and positive fields, checked where they enter a spec."""

from __future__ import annotations

import numpy as np
import pytest

from rope_export.values import float32_tuple, freeze, positive_int, positive_number, thaw


def test_float32_tuple_rounds_once_and_round_trips():
    got = float32_tuple([0.1, 1, np.float32(0.5)], "inv_freq")
    assert got == (float(np.float32(0.1)), 1.0, 0.5)
    assert float32_tuple(got, "inv_freq") == got  # already float32: unchanged, bit for bit


@pytest.mark.parametrize("values,message", [
    ([float("nan")], "finite"), ([float("inf")], "finite"), ([1e39], "finite"), ([10**400], "finite"),
    ([-1.0], ">= 0"), ([1e-46], "become 0"), (["1"], "number"), ([True], "number"),
])
def test_float32_tuple_refuses_what_a_graph_cannot_hold(values, message):
    with pytest.raises(ValueError, match=message):
        float32_tuple(values, "inv_freq")


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "2", None, 10**400])
def test_positive_number_refuses(value):
    with pytest.raises(ValueError, match="theta must be a finite number > 0"):
        positive_number(value, "theta")


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match="table_length must be a positive int"):
        positive_int(value, "table_length")
    assert positive_int(np.int64(4), "n") == 4 and positive_number(np.float32(2.5), "x") == 2.5


def test_freeze_and_thaw_are_inverse_and_hashable():
    data = {"rope_type": "yarn", "factor": 4.0, "mrope_section": [16, 24, 24], "nested": {"b": 1, "a": [1, 2]}}
    frozen = freeze(data)
    hash(frozen)
    assert thaw(frozen) == data
    assert freeze({"b": 1, "a": 2}) == freeze({"a": 2, "b": 1})  # key order does not matter
