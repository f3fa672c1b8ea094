"""Whole transformers models: rope_export.hf.patch and export-hf, end to end, on tiny random
models built from config dicts (no weights, no downloads).

Tolerance against the unpatched model on onnxruntime: RTOL * max(1, max|reference|), float32.
Measured at most 1.3e-6 relative; a rotary with swapped M-RoPE sections is off by more than 10x
the tolerance (test_tolerance_catches_swapped_sections).
"""

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
from rope_export.hf.export import RTOL, example_inputs, export_bytes, export_hf, tiny_model  # noqa: E402

LLAMA = {"model_type": "llama", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64}, "rope_theta": 500000.0}
QWEN2VL = {"model_type": "qwen2_vl", "text_config": {
    "model_type": "qwen2_vl_text", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
    "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}}}
PIXTRAL = {"model_type": "pixtral", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 2,
           "image_size": 112, "patch_size": 14, "rope_theta": 10000.0}
LLAMA4_VISION = {"model_type": "llama4", "vision_config": {
    "model_type": "llama4_vision_model", "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2,
    "image_size": 56, "patch_size": 14, "vision_output_dim": 64, "projector_input_dim": 64, "projector_output_dim": 64,
    "rope_theta": 10000.0}}
CASES = {"llama": (LLAMA, "text"), "qwen2-vl-text": (QWEN2VL, "text"), "pixtral-vision": (PIXTRAL, "vision"),
         "llama4-vision": (LLAMA4_VISION, "vision")}
LAYERS = 2


def _build(name):
    config, part = CASES[name]
    return tiny_model(config, part, LAYERS, full_width=True)


def _run_onnx(data, names, args):
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    fed = {i.name for i in session.get_inputs()}
    return session.run(None, {n: a.numpy() for n, a in zip(names, args) if n in fed})[0]


@pytest.mark.parametrize("name", list(CASES))
def test_patched_eager_equals_unpatched_and_unpatch_restores(name):
    model = _build(name)
    wrapper, args, _, _ = example_inputs(model)
    modules_before = dict(model.named_modules())
    with torch.no_grad():
        want = wrapper(*args)
    with rx.hf.patch(model) as patched:
        assert patched.replaced and all(isinstance(model.get_submodule(n), rx.hf.HFRotary) for n, _, _ in patched.replaced)
        with torch.no_grad():
            got = wrapper(*args)
    # float32 angles and rotation on both sides, the same operations: equal to a few ulps.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert dict(model.named_modules()).keys() == modules_before.keys()
    assert all(model.get_submodule(k) is v for k, v in modules_before.items() if k)
    with torch.no_grad():
        assert torch.equal(wrapper(*args), want)


@pytest.mark.parametrize("name", list(CASES))
def test_dynamo_export_has_rotary_nodes_fewer_nodes_and_matches(name):
    model = _build(name)
    wrapper, args, names, axes = example_inputs(model)
    unpatched = onnx.load_from_string(export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23))
    with rx.hf.patch(model):
        data = export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23)
    patched = onnx.load_from_string(data)
    onnx.checker.check_model(patched)
    ops = [n.op_type for n in patched.graph.node]
    assert ops.count("RotaryEmbedding") == 2 * LAYERS  # q and k of every layer
    assert len(ops) < len(unpatched.graph.node), (len(ops), len(unpatched.graph.node))
    cases = [args] + ([example_inputs(model, batch=3, seq=13, seed=1)[1]] if axes else [])  # unseen B and S
    for case in cases:
        with torch.no_grad():
            want = wrapper(*case).numpy()
        got = _run_onnx(data, names, case)
        assert np.abs(got - want).max() <= RTOL * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("name", list(CASES))
def test_legacy_exporter(name):
    model = _build(name)
    wrapper, args, names, axes = example_inputs(model)
    if name == "llama4-vision":  # Meta's complex rotary: the legacy exporter refuses it unpatched
        with pytest.raises(RuntimeError, match="ComplexFloat"):
            export_bytes(wrapper, args, names, axes, exporter="legacy", opset=23)
    with rx.hf.patch(model):
        data = export_bytes(wrapper, args, names, axes, exporter="legacy", opset=23)
    assert [n.op_type for n in onnx.load_from_string(data).graph.node].count("RotaryEmbedding") == 2 * LAYERS
    with torch.no_grad():
        want = wrapper(*args).numpy()
    assert np.abs(_run_onnx(data, names, args) - want).max() <= RTOL * max(1.0, np.abs(want).max())


def test_tolerance_catches_swapped_sections():
    """The tolerance is tight enough to see a rotary with its h and w streams swapped. (A
    uniform shift of positions would not do: RoPE is relative, attention would not change.)"""
    model = _build("qwen2-vl-text")
    wrapper, args, names, axes = example_inputs(model)
    with rx.hf.patch(model):
        data = export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23)
    ids, mask, pos = args
    with torch.no_grad():
        want = wrapper(ids, mask, pos[[0, 2, 1]]).numpy()
    err = np.abs(_run_onnx(data, names, args) - want).max()
    assert err > 10 * RTOL * max(1.0, np.abs(want).max()), err


def test_unfused_patch_writes_no_rotary_op():
    model = _build("llama4-vision")
    wrapper, args, names, axes = example_inputs(model)
    with rx.hf.patch(model, fused=False):
        data = export_bytes(wrapper, args, names, axes, exporter="legacy", opset=17)
    assert "RotaryEmbedding" not in {n.op_type for n in onnx.load_from_string(data).graph.node}
    with torch.no_grad():
        want = wrapper(*args).numpy()
    assert np.abs(_run_onnx(data, names, args) - want).max() <= RTOL * max(1.0, np.abs(want).max())


def test_bad_input_gives_clear_errors():
    model = _build("llama")
    with rx.hf.patch(model):
        with pytest.raises(ValueError, match="already patched"):
            rx.hf.patch(model)
    with pytest.raises(ValueError, match="not patched"):
        rx.hf.unpatch(model)
    # A rotary module edited by hand: its cos/sin no longer follow its config.
    model.rotary_emb.inv_freq.mul_(1.01)
    with pytest.raises(ValueError, match="customised"):
        rx.hf.patch(model)
    assert type(model.rotary_emb).__name__ == "LlamaRotaryEmbedding"  # nothing half-done
    # A rotary no spec describes (NanoChat rotates by minus the angle): refused with the module named.
    cfg = transformers.NanoChatConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(ValueError, match="NanoChatRotaryEmbedding.*minus the angle"):
        rx.hf.patch(transformers.AutoModel.from_config(cfg))
    with pytest.raises(ValueError, match="no rotary module"):
        rx.hf.patch(torch.nn.Linear(2, 2))
    # An architecture whose rotary no spec describes (NanoChat rotates by minus the angle).
    with pytest.raises(ValueError, match="not supported by export-hf"):
        tiny_model({"model_type": "nanochat", "num_attention_heads": 2, "hidden_size": 64}, "text", 1)


def test_export_hf_cli(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(LLAMA4_VISION))
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


def test_whole_vlm_patches_both_parts_and_unpatched_twins_keep_their_results():
    """A whole Qwen2-VL model has two rotaries (decoder M-RoPE, vision 2D); while it is patched,
    an unpatched model of the same architecture goes through the swapped apply functions and
    must still give its own results."""
    cfg = transformers.Qwen2VLConfig(
        text_config=dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                 "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=64, num_heads=2, hidden_size=64, patch_size=14, spatial_merge_size=2))
    torch.manual_seed(0)
    model, twin = (transformers.AutoModel.from_config(cfg, attn_implementation="eager").eval() for _ in range(2))
    grid = torch.tensor([[1, 4, 6]])
    pixels = torch.randn(24, 3 * 2 * 14 * 14)
    ids = torch.randint(0, 96, (2, 7))
    pos = torch.stack([torch.arange(7), torch.arange(7) // 2, torch.arange(7) % 3])[:, None].expand(3, 2, 7)

    def run(m):
        with torch.no_grad():
            return (m.visual(pixels, grid_thw=grid).last_hidden_state,
                    m.language_model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state)

    want, twin_want = run(model), run(twin)
    with rx.hf.patch(model) as patched:
        assert [cls for _, cls, _ in patched.replaced] == ["Qwen2VLVisionRotaryEmbedding", "Qwen2VLRotaryEmbedding"]
        for got, w in zip(run(model), want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)
        for got, w in zip(run(twin), twin_want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)


def test_half_precision_model_warns_and_differs_by_rounding_only():
    """model.to(bfloat16) rounds the inv_freq buffer; transformers then computes angles from
    rounded frequencies. patch() accepts it, says so, and uses the config's float32 values."""
    model = _build("llama").to(torch.bfloat16)
    wrapper, args, _, _ = example_inputs(model)
    with torch.no_grad():
        want = wrapper(*args).float()
    with pytest.warns(UserWarning, match="bfloat16"):
        patched = rx.hf.patch(model)
    with torch.no_grad():
        got = wrapper(*args).float()
    patched.unpatch()
    # Measured 1 bf16 ulp (0.0156 at magnitude ~3): rotation in float32 rounded once vs
    # transformers rounding cos/sin and each product to bfloat16.
    assert float((got - want).abs().max()) <= 4 * 2**-8 * float(want.abs().max())


def test_fused_needs_opset_23():
    model = _build("pixtral-vision")
    wrapper, args, names, axes = example_inputs(model)
    with rx.hf.patch(model):
        with pytest.raises(ValueError, match="opset 23"):
            export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=18, fused=True)
        with pytest.raises(Exception, match="needs opset 23"):  # the legacy symbolic refuses
            export_bytes(wrapper, args, names, axes, exporter="legacy", opset=18)


def test_per_layer_type_rotary_is_patched_per_type_and_exports():
    """Gemma 3: forward(x, position_ids, layer_type), local layers at theta 10k, global at 1M.
    One adapter per layer type; eager equals the unpatched model; the export matches it."""
    config = transformers.Gemma3TextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, layer_types=["sliding_attention", "full_attention"], sliding_window=4,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}})
    config._attn_implementation = "eager"
    model = transformers.Gemma3TextModel(config).eval()
    wrapper, args, names, axes = example_inputs(model)
    with torch.no_grad():
        want = wrapper(*args)
    with rx.hf.patch(model) as patched:
        specs = {name: spec for name, _, spec in patched.replaced}
        assert set(specs) == {"rotary_emb[sliding_attention]", "rotary_emb[full_attention]"}
        assert specs["rotary_emb[full_attention]"].inv_freq != specs["rotary_emb[sliding_attention]"].inv_freq
        with torch.no_grad():
            torch.testing.assert_close(wrapper(*args), want, rtol=1e-5, atol=1e-5)
        data = export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23)
    assert [n.op_type for n in onnx.load_from_string(data).graph.node].count("RotaryEmbedding") == 4
    for case in (args, example_inputs(model, batch=3, seq=13, seed=1)[1]):
        with torch.no_grad():
            ref = wrapper(*case).numpy()
        assert np.abs(_run_onnx(data, names, case) - ref).max() <= RTOL * max(1.0, np.abs(ref).max())
    # A rotary whose layer types disagree with the spec it reads is refused, naming the type.
    model.rotary_emb.full_attention_inv_freq *= 1.01
    with pytest.raises(ValueError, match="full_attention.*differs"):
        rx.hf.patch(model)


def test_one_tensor_apply_function_and_per_layer_head_dims_gemma4(tmp_path):
    """Gemma 4 applies its rotary one tensor at a time, apply_rotary_pos_emb(x, cos, sin), per
    layer type: patched (checked against that function) and exported, PASS against the model.
    Its float32 export differs from torch by ~2e-5 unpatched too (measured), inside RTOL."""
    config = transformers.AutoConfig.for_model("gemma4_text").to_dict()
    report = export_hf(config, tmp_path / "g4.onnx", layers=2, compare_unpatched=False)
    assert report.passed, report.summary()
    assert {n for n, _, _ in report.replaced} == {"rotary_emb[full_attention]", "rotary_emb[sliding_attention]"}
    assert report.rotary_nodes == 4
