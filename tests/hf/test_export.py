"""Tests of rope_export.hf.export: export-hf on tiny random models (no weights), exported and checked on onnxruntime."""

# Tolerance against the unpatched model on onnxruntime: RTOL * max(1, max|reference|), float32.
# Measured at most 1.3e-6 relative; a rotary with swapped M-RoPE sections is off by more than 10x
# the tolerance (test_tolerance_catches_swapped_sections).

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.cli import main  # noqa: E402
from rope_export.hf.export import RTOL, example_inputs, export_bytes, export_hf  # noqa: E402
from tests.helpers import HF_CASES, HF_LAYERS, HF_LLAMA4_VISION, build_hf_case, run_onnx_bytes  # noqa: E402


@pytest.mark.parametrize("name", list(HF_CASES))
def test_dynamo_export_has_rotary_nodes_fewer_nodes_and_matches(name):
    model = build_hf_case(name)
    wrapper, args, names, axes = example_inputs(model)
    unpatched = onnx.load_from_string(export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23))
    with rx.hf.patch(model):
        data = export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23)
    patched = onnx.load_from_string(data)
    onnx.checker.check_model(patched)
    ops = [n.op_type for n in patched.graph.node]
    assert ops.count("RotaryEmbedding") == 2 * HF_LAYERS  # q and k of every layer
    assert len(ops) < len(unpatched.graph.node), (len(ops), len(unpatched.graph.node))
    cases = [args] + ([example_inputs(model, batch=3, seq=13, seed=1)[1]] if axes else [])  # unseen B and S
    for case in cases:
        with torch.no_grad():
            want = wrapper(*case).numpy()
        got = run_onnx_bytes(data, names, case)
        assert np.abs(got - want).max() <= RTOL * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("name", list(HF_CASES))
def test_legacy_exporter(name):
    model = build_hf_case(name)
    wrapper, args, names, axes = example_inputs(model)
    if name == "llama4-vision":  # Meta's complex rotary: the legacy exporter refuses it unpatched
        with pytest.raises(RuntimeError, match="ComplexFloat"):
            export_bytes(wrapper, args, names, axes, exporter="legacy", opset=23)
    with rx.hf.patch(model):
        data = export_bytes(wrapper, args, names, axes, exporter="legacy", opset=23)
    assert [n.op_type for n in onnx.load_from_string(data).graph.node].count("RotaryEmbedding") == 2 * HF_LAYERS
    with torch.no_grad():
        want = wrapper(*args).numpy()
    assert np.abs(run_onnx_bytes(data, names, args) - want).max() <= RTOL * max(1.0, np.abs(want).max())


def test_tolerance_catches_swapped_sections():
    """The tolerance is tight enough to see a rotary with its h and w streams swapped. (A
    uniform shift of positions would not do: RoPE is relative, attention would not change.)"""
    model = build_hf_case("qwen2-vl-text")
    wrapper, args, names, axes = example_inputs(model)
    with rx.hf.patch(model):
        data = export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23)
    ids, mask, pos = args
    with torch.no_grad():
        want = wrapper(ids, mask, pos[[0, 2, 1]]).numpy()
    err = np.abs(run_onnx_bytes(data, names, args) - want).max()
    assert err > 10 * RTOL * max(1.0, np.abs(want).max()), err


def test_export_hf_cli(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(HF_LLAMA4_VISION))
    out = tmp_path / "m.onnx"
    assert main(["export-hf", "--config", str(config), "--part", "vision", "--layers", "1", "--out", str(out),
                 "--exporter", "legacy"]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "ComplexFloat" in text and out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "nanochat", "num_attention_heads": 2, "hidden_size": 64}))
    assert main(["export-hf", "--config", str(bad), "--out", str(tmp_path / "no.onnx")]) == 2
    assert not (tmp_path / "no.onnx").exists()


def test_export_hf_narrows_a_real_config_and_keeps_its_rotary(tmp_path):
    """A published config (Phi-3 128k: LongRoPE, old "su" keys) at narrow width: the rotary
    spec of the small model equals the preset's."""
    report = export_hf(rx.preset_info("phi-3-mini-128k")["config"], tmp_path / "phi3.onnx", layers=1,
                       compare_unpatched=False)
    assert report.passed and report.rotary_nodes == 2
    ours = report.replaced[0][2]
    preset = rx.load_preset("phi-3-mini-128k")
    assert ours.inv_freq == preset.inv_freq and ours.length_rule == preset.length_rule
    assert ours.attention_scaling == preset.attention_scaling


def test_fused_needs_opset_23():
    model = build_hf_case("pixtral-vision")
    wrapper, args, names, axes = example_inputs(model)
    with rx.hf.patch(model):
        with pytest.raises(ValueError, match="opset 23"):
            export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=18, fused=True)
        with pytest.raises(Exception, match="needs opset 23"):  # the legacy symbolic refuses
            export_bytes(wrapper, args, names, axes, exporter="legacy", opset=18)


@pytest.mark.parametrize("model_type", ["qwen3", "gemma2", "cohere", "glm4", "phi"])
def test_export_hf_beyond_the_presets(tmp_path, model_type):
    """Any verified decoder: patched (no class list), exported with RotaryEmbedding nodes,
    matching transformers at seen and unseen shapes. Cohere: interleaved pairs with
    repeat_interleave'd cos/sin; GLM-4: interleaved, partial; Phi: the attention slices."""
    transformers.logging.set_verbosity_error()
    report = export_hf(transformers.CONFIG_MAPPING[model_type]().to_dict(), tmp_path / "m.onnx", layers=1,
                       compare_unpatched=False)
    assert report.passed and report.rotary_nodes == 2, report.summary()
    assert len(report.checked_shapes) == 2


# deepseek-ai/DeepSeek-V2-Lite config.json (its rope and MLA fields; one dense layer first).
DEEPSEEK_V2_LITE = {"model_type": "deepseek_v2", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
                    "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                    "v_head_dim": 128, "first_k_dense_replace": 1, "moe_intermediate_size": 1408, "n_routed_experts": 64,
                    "n_shared_experts": 2, "num_experts_per_tok": 6, "max_position_embeddings": 163840, "rope_theta": 10000,
                    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                                     "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
                    "vocab_size": 102400, "intermediate_size": 10944}


@pytest.mark.parametrize("name, config", [
    ("deepseek_v2", DEEPSEEK_V2_LITE),            # complex freqs_cis, q/k [B, H, S, D]
    ("llama4_text", None),                        # complex freqs_cis, q/k [B, S, H, D]; per-layer lists
    ("zamba2", {"use_mem_rope": True}),           # its attention twice as wide as its hidden size
    ("gemma3n_text", None),                       # kv-shared layers, activation sparsity (erfinv)
    ("qwen3_5_text", None),                       # linear-attention layers beside the rotary ones
    ("qwen3_moe", None),                          # an MoE router: dense MLPs in the narrowed model
])
def test_export_hf_for_the_decoder_families_that_failed(tmp_path, name, config):
    """Each exports with the patch (RotaryEmbedding nodes) and matches transformers at the
    traced and an unseen batch/sequence; the narrowing keeps every rope field."""
    from rope_export.hf.export import export_hf

    transformers.logging.set_verbosity_error()
    data = config if config and "model_type" in config else transformers.AutoConfig.for_model(name, **(config or {})).to_dict()
    report = export_hf(data, tmp_path / "m.onnx", layers=2 if name == "gemma3n_text" else 1, compare_unpatched=False)
    assert report.passed and report.rotary_nodes >= 2 and len(report.checked_shapes) == 2, report.summary()
    assert report.replaced[0][2] == rx.RopeSpec.from_hf_config(data, layer_type=(
        "sliding_attention" if name == "gemma3n_text" else None), name=report.replaced[0][2].name)


def test_moe_models_export_through_batched_experts(tmp_path):
    """Mixtral's MoE (no dense-layer switch in its config): transformers' default grouped_mm
    experts sort tokens with data-dependent shapes no exporter takes; export-hf exports them as
    batched_mm (the same maths) and matches the model run with its own implementation."""
    config = transformers.AutoConfig.for_model("mixtral").to_dict()
    report = export_hf(config, tmp_path / "m.onnx", layers=1, compare_unpatched=False)
    assert report.passed, report.summary()


def test_an_exporter_failure_is_one_line_naming_what_it_could_not_take(tmp_path, monkeypatch):
    """The exporter's own many-line, coloured failure becomes one line naming the op it could
    not convert, with what that usually means; nothing is written."""
    import contextlib
    import io

    import rope_export.hf.export as export_module
    from rope_export.cli import main

    def fail(*args, **kwargs):
        raise RuntimeError("Failed to convert the exported program to an ONNX model.\n\x1b[96mstep 3/3\x1b[0m\n"
                           "DispatchError: No ONNX function found for <OpOverload(op='aten.histc', overload='default')>"
                           "\nmore lines")

    monkeypatch.setattr(export_module, "_export_bytes", fail)
    config = tmp_path / "llama.json"
    config.write_text(json.dumps(HF_CASES["llama"][0]))
    out = tmp_path / "m.onnx"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export-hf", "--config", str(config), "--layers", "1", "--out", str(out), "--no-compare"]) == 2
    line = [x for x in err.getvalue().splitlines() if "error:" in x]
    assert len(line) == 1 and "No ONNX function found" in line[0] and "MoE router" in line[0], err.getvalue()
    assert "\x1b[" not in err.getvalue() and not out.exists()


def test_export_hf_patches_deepseek_v3_and_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    from rope_export.hf.export import export_hf

    config = transformers.AutoConfig.for_model("deepseek_v3").to_dict()  # rope_interleave: true
    report = export_hf(config, tmp_path / "ds.onnx", layers=1, compare_unpatched=False)
    assert report.passed, report.summary()
    assert report.rotary_nodes == 2
    assert report.replaced[0][2].layout == "interleaved_to_half"


def test_check_trt_builds_an_export_hf_decoder_graph(tmp_path):
    """Its inputs are input_ids, attention_mask, position_ids [B, S], not q/k: the optimization
    profile follows the graph's dimension names."""
    from rope_export.tensorrt import tensorrt_unavailable
    from rope_export.tensorrt.check import check_graphs

    reason = tensorrt_unavailable()
    if reason is not None:
        pytest.skip(f"no TensorRT builder here: {reason}")
    path = tmp_path / "llama.onnx"
    assert export_hf(HF_CASES["llama"][0], path, layers=1, compare_unpatched=False).passed
    (result,) = check_graphs([str(path)])
    assert result.build.parsed and result.build.built, result.problems
    assert result.build.rotary_layers == 2  # q and k of the one layer
