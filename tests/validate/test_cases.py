"""Tests of rope_export.validate.cases: what every graph is run on, for every preset."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.validate.cases import make_cases


@pytest.mark.parametrize("preset", rx.list_presets())
def test_cases_fit_the_spec_and_reach_far_positions(preset):
    spec = rx.load_preset(preset)
    cases = make_cases(spec, "float32", 4, 2, seed=0)
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), names
    for c in cases:
        batch, seq = c.q.shape[0], c.q.shape[2]
        assert c.q.shape == (batch, 4, seq, spec.head_dim) and c.k.shape == (batch, 2, seq, spec.head_dim), c.name
        assert c.position_ids.dtype == torch.int64 and tuple(c.position_ids.shape) == spec.position_shape(batch, seq)
        # float32 holds every integer below 2^24: a position past it would be rounded by the graph itself
        assert 0 <= int(c.position_ids.min()) and int(c.position_ids.max()) < 2**24, c.name
        assert not c.expect_error
    assert max(int(c.position_ids.max()) for c in cases) > (spec.max_position_embeddings or 4096)
    if spec.num_axes > 1:  # a grid where the axes differ, not only equal-axis text positions
        assert any((c.position_ids[0] != c.position_ids[1]).any() for c in cases), names
    if spec.num_axes == 2:
        grid = next(c for c in cases if c.name.startswith("patch grid"))
        assert ("class token" in grid.name) == bool(spec.scaling_dict.get("column_first"))


def test_a_table_graph_is_run_to_its_last_row_and_past_it_must_be_refused():
    spec = rx.load_preset("mistral-7b")
    cases = make_cases(spec, "float32", 4, 2, seed=0, table_length=2048)
    end = next(c for c in cases if c.name == "table end 2048")
    assert int(end.position_ids.max()) == 2047 or int(end.position_ids.max()) >= 2048 - 64
    past = [c for c in cases if c.expect_error]
    assert len(past) == 1 and int(past[0].position_ids.min()) >= 2048
    assert all(int(c.position_ids.max()) < 2048 for c in cases if not c.expect_error)


def test_half_precision_cases_include_large_magnitudes_in_the_dtype():
    cases = make_cases(rx.load_preset("mistral-7b"), "float16", 2, 2, seed=0)
    assert all(c.q.dtype == torch.float16 for c in cases)
    big = next(c for c in cases if c.name.startswith("large magnitudes"))
    assert float(big.q.abs().max()) > 100


def test_same_seed_same_cases():
    spec = rx.load_preset("qwen2-vl-7b")
    a, b = (make_cases(spec, "float32", 2, 2, seed=5) for _ in range(2))
    assert all(x.position_ids.equal(y.position_ids) and x.q.equal(y.q) for x, y in zip(a, b))
