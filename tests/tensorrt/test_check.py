"""Tests of rope_export.tensorrt.check: every graph parsed and built by a real TensorRT-family builder (else skipped)."""

# TensorRT-RTX builds ahead of time without a GPU; where no builder is installed these skip with why.

from __future__ import annotations

import json

import onnx
import pytest

import rope_export as rx
from rope_export.cli import main
from rope_export.tensorrt import tensorrt_unavailable


REASON = tensorrt_unavailable()


needs_builder = pytest.mark.skipif(REASON is not None, reason=f"no TensorRT builder here: {REASON}")


# Every preset x {auto, fused fp32/fp16/bf16, decomposed opset 17, contrib, plugin, table}.
FORMS = [("auto", 23, "float32"), ("fused", 23, "float32"), ("fused", 23, "float16"), ("fused", 23, "bfloat16"),
         ("decomposed", 17, "float32"), ("contrib", 23, "float32"), ("plugin", 23, "float32"), ("table", 23, "float32")]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    cache = {}

    def get(preset, form, opset, dtype):
        key = (preset, form, opset, dtype)
        if key not in cache:
            cache[key] = rx.export_onnx(rx.load_preset(preset), root / f"{preset.replace(':', '_')}-{form}-{dtype}.onnx",
                                        form=form, opset=opset, dtype=dtype)
        return cache[key]

    return get


@needs_builder
@pytest.mark.parametrize("preset", rx.list_presets())
def test_every_preset_form_and_dtype_parses_and_builds(graphs, preset):
    from rope_export.tensorrt.check import check_graphs

    spec = rx.load_preset(preset)
    paths = []
    for form, opset, dtype in FORMS:
        if form == "table" and (spec.num_axes != 1 or spec.length_rule is not None):
            continue
        if form == "plugin" and spec.length_rule is not None:
            continue
        paths.append(graphs(preset, form, opset, dtype))
    for result in check_graphs(paths, compute_capability="SM89"):
        assert result.passed, result.to_dict()
        assert result.build.parsed and result.build.built and result.build.engine
        assert result.plugin_layers == 0
        assert result.build.rotary_layers == (0 if result.form == "decomposed" else 2), result.to_dict()


@needs_builder
def test_bad_graphs_fail_with_the_parsers_message(tmp_path, capsys):
    from rope_export.tensorrt.check import check_graphs

    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx", form="fused")
    model = onnx.load(path)
    for node in model.graph.node:
        if node.op_type == "RotaryEmbedding":
            for attr in node.attribute:
                if attr.name == "rotary_embedding_dim":
                    attr.i = 7  # odd and not a head_dim divisor
    onnx.save(model, tmp_path / "bad_dim.onnx")
    model = onnx.load(path)
    model.graph.node[-1].op_type = "NoSuchRotary"
    model.graph.node[-1].domain = "made.up"
    model.opset_import.append(onnx.helper.make_opsetid("made.up", 1))
    onnx.save(model, tmp_path / "unknown_op.onnx")
    results = check_graphs([str(tmp_path / "bad_dim.onnx"), str(tmp_path / "unknown_op.onnx")])
    assert not results[0].passed and results[0].build.errors, results[0].to_dict()
    assert not results[1].passed and not results[1].build.parsed
    assert any("NoSuchRotary" in e for e in results[1].build.errors), results[1].build.errors
    assert main(["check-trt", str(tmp_path / "unknown_op.onnx")]) == 1
    assert "NoSuchRotary" in capsys.readouterr().out
    assert main(["check-trt", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["rotary_layers"] == 2 and report[0]["tensorrt"].startswith("TensorRT")
