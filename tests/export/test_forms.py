"""Tests of rope_export.export.forms: which form each spec gets (auto), at which opsets, and which forms refuse it."""

from __future__ import annotations

import onnx
import pytest

import rope_export as rx
from rope_export.export import read_graph
from tests.helpers import deepseek_v3_spec

pytest.importorskip("onnxruntime")


def test_auto_form_picks_table_where_it_applies():
    from rope_export.export import resolve_form

    assert resolve_form("auto", 23, rx.load_preset("mistral-7b")) == "table"
    assert resolve_form("auto", 23, rx.load_preset("gpt-j-6b")) == "table"
    assert resolve_form("auto", 23, rx.load_preset("qwen2-vl-7b")) == "table"  # M-RoPE text: tools/ort_forms.py
    assert resolve_form("auto", 23, rx.load_preset("qwen3-vl-8b")) == "fused"  # 262144 rows: over the 64 MiB cap
    assert resolve_form("auto", 23, rx.load_preset("qwen3-vl-8b"), "float16") == "fused"  # interleaved sections: slower
    assert resolve_form("auto", 23, rx.load_preset("qwen2-vl-7b:vision")) == "fused"  # positions with no known bound
    assert resolve_form("auto", 23, rx.load_preset("phi-3-mini-128k")) == "fused"  # length rule
    assert resolve_form("auto", 23, rx.RopeSpec.standard(64)) == "fused"  # no known context length
    assert resolve_form("auto", 22, rx.load_preset("mistral-7b")) == "decomposed"


@pytest.mark.parametrize("opset", [24, 25])
def test_every_form_at_the_newest_tested_opsets_checks_and_validates(tmp_path, opset):
    from rope_export.export.forms import TESTED_OPSET

    assert opset <= TESTED_OPSET
    spec = rx.load_preset("qwen2-vl-7b")
    for form in rx.export.forms_for(spec, opset):
        path = rx.export_onnx(spec, tmp_path / f"{form}.onnx", opset=opset, form=form)
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == opset or any(o.domain == "" and o.version == opset for o in model.opset_import)
        if form == "plugin":  # a TensorRT plugin node: onnxruntime cannot run it
            continue
        report = rx.validate(path, seed=opset)
        assert report.structure["status"] == "pass", (form, report.structure)
        assert report.passed, (form, report.table())


def test_opsets_past_the_tested_one_are_refused(tmp_path):
    with pytest.raises(ValueError, match="opset must be an int from 17 to 25"):
        rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "x.onnx", opset=26)


def test_long_context_configs_validate_and_auto_caps_the_table(tmp_path):
    cfg = {"hidden_size": 5120, "num_attention_heads": 40, "max_position_embeddings": 10485760}  # Llama 4 text
    spec = rx.RopeSpec.from_hf_config(cfg)
    path = rx.export_onnx(spec, tmp_path / "long.onnx")
    assert read_graph(path).form == "fused"  # a 10M-row table would be 5 GB
    assert rx.validate(path, seed=3).passed
    assert read_graph(rx.export_onnx(rx.load_preset("llama-3.1-8b"), tmp_path / "l.onnx")).form == "table"


@pytest.mark.hf
def test_validator_passes_the_graph_and_plugin_form_refuses(tmp_path):
    spec = deepseek_v3_spec()
    path = str(tmp_path / "mla.onnx")
    rx.export_onnx(spec, path)
    assert rx.validate(path).passed
    with pytest.raises(ValueError, match="de-interleave"):
        rx.export_onnx(spec, str(tmp_path / "p.onnx"), form="plugin")
