"""Tests of rope_export.export.plugin_form: one MultiAxisRotary node per tensor, its attributes, function and parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import rope_export as rx

pytest.importorskip("onnxruntime")


def test_plugin_form_nodes_attributes_function_and_parity(tmp_path):
    from rope_export.export.plugin_form import DOMAIN, OP_TYPE, node_attributes

    for preset in ("qwen3-vl-8b", "gpt-j-6b", "gpt-oss-20b", "llama-4-scout"):
        spec = rx.load_preset(preset)
        path = rx.export_onnx(spec, tmp_path / f"{preset}.onnx", form="plugin", num_q_heads=4, num_kv_heads=2)
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert [(n.op_type, n.domain) for n in model.graph.node] == [(OP_TYPE, DOMAIN)] * 2
        assert [(f.name, f.domain) for f in model.functions] == [(OP_TYPE, DOMAIN)]
        assert "RotaryEmbedding" in {n.op_type for n in model.functions[0].node}
        for node, heads in zip(model.graph.node, (4, 2)):
            read = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            read = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in read.items()}
            want = node_attributes(spec, heads)
            assert set(read) == set(want)
            # attention_scaling is an ONNX float (float32), rounded as torch rounds it when it
            # scales a float32 cos.
            assert read.pop("attention_scaling") == float(np.float32(want.pop("attention_scaling")))
            assert read == want
            assert list(node.input[2:]) == ["inv_freq", "axis_of_pair"]
        tables = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        assert tables["inv_freq"].dtype == np.float32 and tables["axis_of_pair"].dtype == np.int32
        assert tables["inv_freq"].tolist() == list(spec.inv_freq)  # float32 values, exactly
        assert tables["axis_of_pair"].tolist() == list(spec.axis_of_pair)
        assert rx.validate(path, providers=("cpu",), seed=3).passed, preset
        again = rx.export_onnx(spec, tmp_path / "again.onnx", form="plugin", num_q_heads=4, num_kv_heads=2)
        assert open(path, "rb").read() == open(again, "rb").read()
    with pytest.raises(ValueError, match="length rule"):
        rx.export_onnx(rx.load_preset("phi-3-mini-128k"), tmp_path / "x.onnx", form="plugin")
