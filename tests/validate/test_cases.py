"""Tests of rope_export.validate.cases: what every graph is run on, for every preset."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.validate.cases import fit_cases, make_cases


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
        assert not c.past_table
    assert max(int(c.position_ids.max()) for c in cases) > (spec.max_position_embeddings or 4096)
    if spec.num_axes > 1:  # a grid where the axes differ, not only equal-axis text positions
        assert any((c.position_ids[0] != c.position_ids[1]).any() for c in cases), names
    if spec.num_axes == 2:
        grid = next(c for c in cases if c.name.startswith("patch grid"))
        assert ("class token" in grid.name) == bool(spec.scaling_dict.get("column_first"))


@pytest.mark.parametrize("preset", ["mistral-7b", "qwen2-vl-7b"])
def test_a_table_graph_is_run_to_its_last_row_and_outside_it_must_give_nan(preset):
    spec = rx.load_preset(preset)
    cases = make_cases(spec, "float32", 4, 2, seed=0, table_length=2048)
    end = next(c for c in cases if c.name == "table end 2048")
    assert int(end.position_ids.max()) == 2047 or int(end.position_ids.max()) >= 2048 - 64
    outside = {c.name.removesuffix(" (NaN or refused)"): c.position_ids for c in cases if c.past_table}
    assert all(c.expect_error == c.past_table for c in cases)  # the former name still reads
    assert all(int(c.position_ids.max()) < 2048 and int(c.position_ids.min()) >= 0 for c in cases if not c.past_table)
    past, near, far = outside.pop("past the table"), outside.pop("negative positions"), outside.pop("far negative positions")
    # OpenVINO computes int64 as int32: values whose low 32 bits are a row must be there
    assert int(past.min()) == 2048 and {2**32 + 1, 2**63 - 1} <= set(past.flatten().tolist())
    assert sorted(set(near.flatten().tolist())) == [-2048, -2, -1]  # what Gather wraps onto real rows
    assert int(far.max()) == -2049 and {-2**32 + 1, -2**63} <= set(far.flatten().tolist())
    if spec.num_axes > 1:
        one = outside.pop("past the table on one axis")  # [axis, 1, token]: token a leaves on axis a only
        out = one[:, 0] >= 2048
        assert out.tolist() == torch.eye(spec.num_axes, dtype=torch.bool).tolist()
    assert not outside


def test_cases_outside_a_table_are_split_not_cut_to_a_fixed_shape():
    cases = make_cases(rx.load_preset("qwen2-vl-7b"), "float32", 4, 2, seed=0, table_length=512)
    past = next(c for c in cases if c.name.startswith("past the table ("))
    assert fit_cases(next(c for c in cases if not c.past_table), 1, 1)[0].q.shape[2] == 1  # others are cut
    for batch, seq in ((1, 1), (2, 3), (None, 2), (4, None)):
        pieces = fit_cases(past, batch, seq)
        kept = torch.cat([p.position_ids.reshape(3, -1) for p in pieces], -1)
        assert set(map(tuple, kept.T.tolist())) == set(map(tuple, past.position_ids.reshape(3, -1).T.tolist()))
        assert all(p.past_table and p.q.shape[2] == (seq or past.q.shape[2]) and p.q.shape[0] == (batch or 1) for p in pieces)
        assert all(tuple(p.position_ids.shape) == (3, p.q.shape[0], p.q.shape[2]) for p in pieces)


def test_half_precision_cases_include_large_magnitudes_in_the_dtype():
    cases = make_cases(rx.load_preset("mistral-7b"), "float16", 2, 2, seed=0)
    assert all(c.q.dtype == torch.float16 for c in cases)
    big = next(c for c in cases if c.name.startswith("large magnitudes"))
    assert float(big.q.abs().max()) > 100


def test_same_seed_same_cases():
    spec = rx.load_preset("qwen2-vl-7b")
    a, b = (make_cases(spec, "float32", 2, 2, seed=5) for _ in range(2))
    assert all(x.position_ids.equal(y.position_ids) and x.q.equal(y.q) for x, y in zip(a, b))
