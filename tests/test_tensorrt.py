"""TensorRT: what can be checked without TensorRT is checked; the rest skips with the reason."""

from __future__ import annotations

import pathlib

import onnx
import pytest

import rope_export as rx
from rope_export.cli import main
from rope_export.export.plugin_form import node_attributes
from rope_export.tensorrt import PARSER_FIELDS, PLUGIN_FIELDS, PLUGIN_INPUTS, tensorrt_unavailable

REASON = tensorrt_unavailable()


def test_plugin_fields_match_the_onnx_node(tmp_path):
    """The plugin registers exactly the inputs and fields the plugin-form node carries (parser
    fields aside), in the order TensorRT passes them."""
    path = rx.export_onnx(rx.load_preset("qwen2-vl-7b"), tmp_path / "p.onnx", form="plugin")
    model = onnx.load(path)
    node = model.graph.node[0]
    names = [a.name for a in node.attribute]
    assert names == list(PLUGIN_FIELDS) + list(PARSER_FIELDS)
    assert list(node_attributes(rx.load_preset("qwen2-vl-7b"), 4)) == names
    assert list(model.functions[0].input) == list(PLUGIN_INPUTS)
    assert {i.name for i in model.graph.initializer} == {"inv_freq", "axis_of_pair"}
    source = (pathlib.Path(rx.__file__).parent / "tensorrt" / "plugin.py").read_text()
    for head in ("def _describe(", "def _compile(", "def _run("):
        signature = source[source.index(head):source.index(")", source.index("attention_scaling", source.index(head)))]
        order = [signature.index(f"{f}:") for f in PLUGIN_INPUTS + PLUGIN_FIELDS]
        assert order == sorted(order), head


def test_build_engine_without_tensorrt_says_what_is_missing(tmp_path, capsys):
    if REASON is None:
        pytest.skip("TensorRT is available here")
    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx")
    assert main(["build-engine", path, "--out", str(tmp_path / "m.plan")]) == 2
    err = capsys.readouterr().err
    assert "rope-export[gpu]" in err and not (tmp_path / "m.plan").exists()


@pytest.mark.skipif(REASON is not None, reason=f"TensorRT cannot build engines here: {REASON}")
@pytest.mark.parametrize("form", ["fused", "plugin"])
def test_engine_builds_and_matches_torch(tmp_path, form):
    import numpy as np
    import torch

    from rope_export.export import example_inputs
    from rope_export.tensorrt.engine import Profile, build_engine

    spec = rx.load_preset("qwen2-vl-7b")
    path = rx.export_onnx(spec, tmp_path / "m.onnx", form=form)
    plan = build_engine(path, str(tmp_path / "m.plan"), profile=Profile((1, 2, 4), (1, 64, 256)), plugin=form == "plugin")
    trt = pytest.importorskip("tensorrt")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(open(plan, "rb").read())
    context = engine.create_execution_context()
    q, k, pos = (t.cuda() for t in example_inputs(spec, batch=2, seq=33, high=100_000))
    outs = {"q_rot": torch.empty_like(q), "k_rot": torch.empty_like(k)}
    for name, t in {"q": q, "k": k, "position_ids": pos, **outs}.items():
        if name in ("q", "k", "position_ids"):
            context.set_input_shape(name, tuple(t.shape))
        context.set_tensor_address(name, t.data_ptr())
    assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    want = rx.RotaryEmbedding(spec).cuda()(q, k, pos)
    for got, w in zip(outs.values(), want):
        assert np.allclose(got.cpu().numpy(), w.cpu().numpy(), atol=1e-5, rtol=1e-5)


def test_validator_engine_runner_reports_unavailable_here(tmp_path):
    if REASON is None:
        pytest.skip("TensorRT is available here")
    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx", form="fused")
    fake_plan = tmp_path / "m.plan"
    fake_plan.write_bytes(b"not an engine")
    report = rx.validate(path, providers=("cpu",), engine=fake_plan, seed=1)
    engine_rows = [r for r in report.results if r.provider == "tensorrt-engine"]
    assert engine_rows and engine_rows[0].status == "unavailable" and not report.passed
    assert rx.validate(path, providers=("cpu",), engine=fake_plan, seed=1, allow_missing=True).passed
    assert main(["validate", path, "--engine", str(fake_plan), "--seed", "1"]) == 1
