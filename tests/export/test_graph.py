"""Tests of rope_export.export.graph: every preset x form x dtype loads, checks, and runs on onnxruntime CPU like torch."""

from __future__ import annotations

import collections
import os

import numpy as np
import onnx
from onnx import numpy_helper
import pytest
import torch

import rope_export as rx
from rope_export.export import build_onnx, example_inputs
from rope_export.reference import rotate
from rope_export.validate import TOLERANCES, case_tolerance, compare
from tests.helpers import deepseek_v3_spec, float32_tolerance

ort = pytest.importorskip("onnxruntime")


PRESETS = rx.list_presets()


FORMS = [("fused", 23), ("decomposed", 17)]


DTYPES = ["float32", "float16"]


def _run(path, q, k, pos):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {"q": q.numpy(), "k": k.numpy(), "position_ids": pos.numpy()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form,opset", FORMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_exports_checks_and_matches_torch(exported, preset, form, opset, dtype):
    path = exported(preset, form, opset, dtype)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert not {"Loop", "If", "Scan"} & set(ops), ops
    all_types = [v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)]
    assert not {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128} & set(all_types)
    assert ("RotaryEmbedding" in ops) == (form == "fused")
    spec = rx.load_preset(preset)
    rope = rx.RotaryEmbedding(spec)
    torch_dtype = getattr(torch, dtype)
    for seed, (batch, seq) in enumerate([(1, 5), (2, 37)]):  # export traced batch 3, seq 11
        q, k, pos = example_inputs(spec, batch=batch, seq=seq, dtype=torch_dtype, high=100_000, seed=seed + 7)
        if spec.num_axes > 1:
            assert not torch.equal(pos[0], pos[1])  # unequal axes
        got = _run(path, q, k, pos)
        want = rope(q, k, pos)
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape) and g.dtype == np.dtype(dtype)
            stats = compare(g.astype(np.float32), w.float().numpy(), TOLERANCES[dtype])
            assert stats["ok"], (preset, form, dtype, batch, seq, stats)


def test_fused_node_budget(exported):
    """At most 10 nodes for q and k together, RotaryEmbedding present, no Slice/Concat.
    Two documented additions: attention_scaling != 1 costs one Mul on cos and one on sin;
    a length rule (LongRoPE) costs ReduceMax + GreaterOrEqual + Where."""
    for preset in PRESETS:
        spec = rx.load_preset(preset)
        extra = (2 if spec.attention_scaling != 1.0 else 0) + (3 if spec.length_rule is not None else 0)
        for dtype in DTYPES:
            model = onnx.load(exported(preset, "fused", 23, dtype))
            ops = collections.Counter(n.op_type for n in model.graph.node)
            assert ops["RotaryEmbedding"] == 2 and not {"Slice", "Concat", "Split"} & set(ops), (preset, ops)
            assert len(model.graph.node) <= 10 + extra, (preset, dtype, len(model.graph.node), ops)
            if extra == 0:
                assert len(model.graph.node) <= 10


def test_partial_rotary_uses_rotary_embedding_dim(exported):
    model = onnx.load(exported("gpt-neox-20b"))
    nodes = [n for n in model.graph.node if n.op_type == "RotaryEmbedding"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["rotary_embedding_dim"] == 24 and attrs["num_heads"] == 4
    attrs_gptj = {a.name: onnx.helper.get_attribute_value(a) for n in onnx.load(exported("gpt-j-6b")).graph.node
                  if n.op_type == "RotaryEmbedding" for a in n.attribute}
    assert attrs_gptj["interleaved"] == 1


def test_no_table_folded_at_export_length(exported):
    """cos/sin are computed from position_ids in the graph: no initializer depends on the
    traced sequence length, and lengths far past it run correctly."""
    for preset in ("llama-3.1-8b", "qwen3-vl-8b", "phi-3-mini-128k"):
        path = exported(preset)
        model = onnx.load(path)
        for init in model.graph.initializer:
            assert 11 not in init.dims, (preset, init.name, init.dims)
        spec = rx.load_preset(preset)
        q, k, pos = example_inputs(spec, batch=1, seq=300, high=200_000, seed=3)
        got = _run(path, q, k, pos)
        want = rx.RotaryEmbedding(spec)(q, k, pos)
        assert compare(got[0], want[0].numpy(), TOLERANCES["float32"])["ok"]


def test_mrope_graph_does_not_collapse_to_1d(exported):
    from rope_export.positions import mrope_position_ids

    spec = rx.load_preset("qwen2-vl-7b")
    path = exported("qwen2-vl-7b")
    types = torch.tensor([[0] * 4 + [1] * 24 + [0] * 3])
    pos = mrope_position_ids(types, torch.tensor([[1, 8, 12]]), spatial_merge_size=2)
    assert not torch.equal(pos[1], pos[2]) and not torch.equal(pos[0], pos[1])
    q = torch.randn(1, 4, pos.shape[-1], 128)
    k = torch.randn(1, 2, pos.shape[-1], 128)
    got = _run(path, q, k, pos)[0]
    want = rx.RotaryEmbedding(spec)(q, k, pos)[0].numpy()
    text_only = rx.RotaryEmbedding(spec)(q, k, pos[0:1].expand(3, -1, -1))[0].numpy()
    assert compare(got, want, TOLERANCES["float32"])["ok"]
    assert np.abs(got - text_only).max() > 0.1  # the image tokens really use h and w


def test_pixtral_2d_halves_differ_and_match(exported):
    """A fused op fed cos/sin whose two halves differ (rows vs columns) must still match:
    the trap where an exporter assumed rotate_half's duplicated table (cosine 0.014)."""
    from rope_export.positions import patch_grid_positions

    spec = rx.load_preset("pixtral-12b")
    pos = patch_grid_positions(16, 24)
    cos, _ = rx.RotaryEmbedding(spec).cos_sin(pos)
    assert not torch.equal(cos[..., :16], cos[..., 16:])
    q, k = torch.randn(1, 4, pos.shape[-1], 64), torch.randn(1, 2, pos.shape[-1], 64)
    got = _run(exported("pixtral-12b"), q, k, pos)[0]
    stats = compare(got, rx.RotaryEmbedding(spec)(q, k, pos)[0].numpy(), TOLERANCES["float32"])
    assert stats["ok"] and stats["cosine"] > 0.9999999


def test_dynamic_ntk_is_computed_in_graph(exported):
    spec = rx.RopeSpec.from_hf_config({"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512,
                                       "rope_scaling": {"type": "dynamic", "factor": 4.0}}, name="dyn")
    path = exported("dyn", spec=spec)
    rope = rx.RotaryEmbedding(spec)
    for high in (400, 5000):  # below and past max_position_embeddings: different tables
        q, k, pos = example_inputs(spec, batch=2, seq=9, high=high, seed=high)
        tol = case_tolerance(spec, pos, TOLERANCES["float32"])
        assert compare(_run(path, q, k, pos)[0], rope(q, k, pos)[0].numpy(), tol)["ok"]
        if high < 512:  # static regime: no Pow involved, the plain tolerance holds
            assert tol == TOLERANCES["float32"]


def test_bad_export_arguments_write_nothing(tmp_path):
    spec = rx.load_preset("mistral-7b")
    out = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match="opset"):
        rx.export_onnx(spec, out, opset=16)
    with pytest.raises(ValueError, match="needs opset >= 23"):
        rx.export_onnx(spec, out, opset=22, form="fused")
    with pytest.raises(ValueError, match="dtype"):
        rx.export_onnx(spec, out, dtype="int8")
    with pytest.raises(OSError, match="does not exist"):
        rx.export_onnx(spec, tmp_path / "missing" / "x.onnx")
    assert not out.exists() and os.listdir(tmp_path) == []
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if not os.access(readonly, os.W_OK):  # root may write anywhere
            with pytest.raises(OSError, match="not writable"):
                rx.export_onnx(spec, readonly / "x.onnx")
    finally:
        readonly.chmod(0o700)
    assert os.listdir(readonly) == []


def test_build_onnx_decomposed_opset17_has_no_opset18_attributes():
    model = build_onnx(rx.load_preset("phi-3-mini-128k"), opset=17, form="decomposed")
    assert model.opset_import[0].version == 17
    for node in model.graph.node:
        assert all(a.name != "noop_with_empty_axes" for a in node.attribute)


@pytest.mark.parametrize("preset", ["qwen3-vl-8b", "gpt-neox-20b", "gpt-j-6b", "phi-3-mini-128k", "pixtral-12b"])
def test_contrib_form_runs_on_onnxruntime(exported, preset):
    path = exported(preset, "contrib", 23, "float32")
    model = onnx.load(path)
    domains = {n.domain for n in model.graph.node if n.op_type == "RotaryEmbedding"}
    assert domains == {"com.microsoft"}
    spec = rx.load_preset(preset)
    q, k, pos = example_inputs(spec, batch=2, seq=21, high=100_000, seed=9)
    for got, want in zip(_run(path, q, k, pos), rx.RotaryEmbedding(spec)(q, k, pos)):
        assert compare(got, want.numpy(), TOLERANCES["float32"])["ok"], preset


def _assert_nan_outside_the_table(path, spec, q, k, pos, length):
    """Tokens at -1, length, length + 1 and far past: NaN in every head; the rest: the module's."""
    pos = pos.clone()
    outside = torch.zeros(pos.shape[-2:], dtype=torch.bool)
    for j, p in zip(range(0, pos.shape[-1], 2), (-1, length, length + 1, 2**32 + 1, -2**63)):
        pos[..., j], outside[:, j] = p, True
    got = _run(path, q, k, pos)
    want = rx.RotaryEmbedding(spec)(q, k, pos.clamp(0, length - 1))
    for g, w in zip(got, want):
        nan = np.isnan(g).any(-1)  # [B, H, S]
        assert nan.all(1).tolist() == outside.tolist() and (nan.any(1) == nan.all(1)).all()
        assert compare(g[:, :, ~outside[0]], w.numpy()[:, :, ~outside[0]], TOLERANCES["float32"])["ok"]


def test_table_form_gives_nan_outside_the_table_on_every_runtime(tmp_path):
    spec = rx.load_preset("mistral-7b")
    path = rx.export_onnx(spec, tmp_path / "t.onnx", form="table", table_length=1000)
    model = onnx.load(path)
    # The guard: five ops on the positions, then the op looks rows up by them.
    assert [n.op_type for n in model.graph.node] == ["Cast", "GreaterOrEqual", "Less", "And", "Where",
                                                     "RotaryEmbedding", "RotaryEmbedding"]
    assert {p.key: p.value for p in model.metadata_props}["rope_export.table_length"] == "1000"
    tables = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_table")]
    assert [t.shape for t in tables] == [(1001, 64)] * 2 and all(np.isnan(t[-1]).all() for t in tables)
    assert all(np.isfinite(t[:-1]).all() for t in tables)
    q, k, pos = example_inputs(spec, batch=2, seq=9, high=1000, seed=2)
    for got, want in zip(_run(path, q, k, pos), rx.RotaryEmbedding(spec)(q, k, pos)):
        assert compare(got, want.numpy(), TOLERANCES["float32"])["ok"]
    _assert_nan_outside_the_table(path, spec, q, k, pos, 1000)
    with pytest.raises(ValueError, match="without a length rule"):
        rx.export_onnx(rx.load_preset("phi-3-mini-128k"), tmp_path / "x.onnx", form="table")


@pytest.mark.parametrize("preset", ["qwen2-vl-7b", "qwen3-vl-8b", "pixtral-12b", "llama-4-scout"])
def test_multi_axis_table_form_gathers_each_stream_without_sin_cos(tmp_path, preset):
    """M-RoPE and 2D: one table per position stream, a Gather per stream, the pairs put back in
    order (Qwen3-VL's interleaved sections, Llama 4's column-first halves), no Sin/Cos at run
    time; equal to the module at unequal axes, and NaN for tokens whose positions leave the table."""
    spec = rx.load_preset(preset)
    path = rx.export_onnx(spec, tmp_path / "t.onnx", form="table", table_length=3000)
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    assert ops["RotaryEmbedding"] == 2 and not {"Sin", "Cos"} & set(ops), ops
    assert ops["Gather"] >= 2 * spec.num_axes, ops
    for seed, (batch, seq) in enumerate([(1, 5), (2, 37)]):
        q, k, pos = example_inputs(spec, batch=batch, seq=seq, high=3000, seed=seed)
        assert not torch.equal(pos[0], pos[1])
        for got, want in zip(_run(path, q, k, pos), rx.RotaryEmbedding(spec)(q, k, pos)):
            assert compare(got, want.numpy(), TOLERANCES["float32"])["ok"], (preset, seed)
    _assert_nan_outside_the_table(path, spec, q, k, pos, 3000)
    assert rx.validate(path, seed=4).passed


@pytest.mark.hf
@pytest.mark.parametrize("form,opset", [("fused", 23), ("table", 23), ("decomposed", 17), ("contrib", 23)])
def test_exported_forms_match_the_reference(tmp_path, form, opset):
    spec = deepseek_v3_spec()
    path = str(tmp_path / "mla.onnx")
    rx.export_onnx(spec, path, form=form, opset=opset)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    q, k, pos = example_inputs(spec, batch=2, seq=19, high=4000, seed=3)
    got = session.run(None, {"q": q.numpy(), "k": k.numpy(), "position_ids": pos.numpy()})
    for g_, x in zip(got, (q, k)):
        want = rotate(x, pos, spec)
        assert np.abs(g_ - want.numpy()).max() <= float32_tolerance(spec, pos, x)
