"""Tests of rope_export.presets: presets carry their source and equal the models' own code."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.positions import patch_grid_positions
from tests.helpers import COS_ATOL, arange_positions, random_mrope_positions


REQUIRED = {"llama-3.1-8b", "mistral-7b", "qwen2-vl-7b", "qwen2-vl-7b:vision", "qwen2.5-vl-7b", "qwen3-vl-8b",
            "qwen3-vl-8b:vision", "pixtral-12b", "llama-4-scout", "gpt-neox-20b", "gpt-j-6b", "phi-3-mini-128k"}


def test_required_presets_exist_and_have_sources():
    names = set(rx.list_presets())
    assert REQUIRED <= names
    assert any(rx.load_preset(n).scaling_dict.get("rope_type") == "yarn" for n in names)
    for name in names:
        info = rx.preset_info(name)
        assert info["source"].startswith("https://huggingface.co/") and info["config"], name
        assert rx.load_preset(name).name == name


def test_preset_variants_are_what_the_models_use():
    assert rx.load_preset("gpt-j-6b").layout == "interleaved"
    assert rx.load_preset("gpt-neox-20b").rotary_dim == 24
    assert rx.load_preset("phi-3-mini-128k").length_rule.kind == "longrope"
    assert rx.load_preset("qwen2-vl-7b").axis_of_pair[15:17] == (0, 1)
    assert rx.load_preset("qwen3-vl-8b").axis_of_pair[:3] == (0, 1, 2)
    assert rx.load_preset("qwen2-vl-7b:vision").head_dim == 80  # embed_dim / heads, not hidden_size / heads
    assert rx.load_preset("llama-4-scout").axis_of_pair[0] == 1  # columns first
    assert rx.load_preset("qwen3-vl-8b", part="vision") == rx.load_preset("qwen3-vl-8b:vision")
    with pytest.raises(ValueError, match="names part"):
        rx.load_preset("qwen3-vl-8b:vision", part="text")


def test_fixed_size_vision_encoders_bound_their_positions():
    """Pixtral and Llama 4 vision see at most image_size / patch_size patches a side (Llama 4
    counts from 1, its class token at 0): that bound lets `auto` pick the table form, whose
    graph refuses positions past it. Qwen-VL encoders take any image size: no bound, fused."""
    from rope_export.export.forms import resolve_form

    assert rx.load_preset("pixtral-12b").max_position_embeddings == 1024 // 16
    assert rx.load_preset("llama-4-scout").max_position_embeddings == 336 // 14 + 1
    assert int(patch_grid_positions(24, 24, offset=1, cls_token="last").max()) == 24  # the table's last row
    for preset, form in (("pixtral-12b", "table"), ("llama-4-scout", "table"), ("qwen2-vl-7b:vision", "fused")):
        assert resolve_form("auto", 23, rx.load_preset(preset)) == form, preset


PRESET_CLASSES = {
    "llama-3.1-8b": ("LlamaConfig", "transformers.models.llama.modeling_llama", "LlamaRotaryEmbedding"),
    "mistral-7b": ("MistralConfig", "transformers.models.mistral.modeling_mistral", "MistralRotaryEmbedding"),
    "gpt-neox-20b": ("GPTNeoXConfig", "transformers.models.gpt_neox.modeling_gpt_neox", "GPTNeoXRotaryEmbedding"),
    "phi-3-mini-128k": ("Phi3Config", "transformers.models.phi3.modeling_phi3", "Phi3RotaryEmbedding"),
    "gpt-oss-20b": ("GptOssConfig", "transformers.models.gpt_oss.modeling_gpt_oss", "GptOssRotaryEmbedding"),
    "qwen2-vl-7b": ("Qwen2VLTextConfig", "transformers.models.qwen2_vl.modeling_qwen2_vl", "Qwen2VLRotaryEmbedding"),
    "qwen2.5-vl-7b": ("Qwen2_5_VLTextConfig", "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "Qwen2_5_VLRotaryEmbedding"),
}


@pytest.mark.hf
@pytest.mark.parametrize("preset", sorted(PRESET_CLASSES))
def test_text_presets_inv_freq_equal_model_code(preset):
    transformers = pytest.importorskip("transformers")
    import importlib

    config_name, module_name, rotary_name = PRESET_CLASSES[preset]
    cfg = {k: v for k, v in rx.preset_info(preset)["config"].items() if k not in ("vision_config", "model_type")}
    if cfg.get("rope_scaling", {}).get("type") == "su":
        # transformers 5.23 renames "su" only after validating, then rejects the file; same rule as "longrope".
        cfg["rope_scaling"] = {**cfg["rope_scaling"], "type": "longrope"}
    config = getattr(transformers, config_name)(**cfg)
    hf = getattr(importlib.import_module(module_name), rotary_name)(config)
    spec = rx.load_preset(preset)
    assert torch.equal(torch.tensor(spec.inv_freq), hf.inv_freq), preset
    assert spec.attention_scaling == hf.attention_scaling
    if spec.length_rule is not None and spec.length_rule.kind == "longrope":
        n = spec.length_rule.original_max_position_embeddings + 1
        hf(torch.zeros(1, 1, 1, spec.head_dim), arange_positions(n))
        assert torch.equal(torch.tensor(spec.length_rule.long_inv_freq), hf.inv_freq)


@pytest.mark.hf
def test_qwen3_vl_preset_text_and_vision_equal_model_code():
    pytest.importorskip("transformers")
    from transformers import Qwen3VLTextConfig, Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding, Qwen3VLVisionRotaryEmbedding

    cfg = rx.preset_info("qwen3-vl-8b")["config"]
    text = Qwen3VLTextRotaryEmbedding(Qwen3VLTextConfig(**{k: v for k, v in cfg["text_config"].items() if k != "model_type"}))
    vision = Qwen3VLVisionRotaryEmbedding(Qwen3VLVisionConfig(**{k: v for k, v in cfg["vision_config"].items() if k != "model_type"}))
    t, v = rx.load_preset("qwen3-vl-8b"), rx.load_preset("qwen3-vl-8b:vision")
    assert torch.equal(torch.tensor(t.inv_freq), text.inv_freq)
    assert torch.equal(torch.tensor(v.inv_freq[: v.num_pairs // 2]), vision.inv_freq)
    pos = random_mrope_positions(1, 50, seed=3)
    cos_hf, _ = text(torch.zeros(1), pos)
    torch.testing.assert_close(rx.RotaryEmbedding(t).cos_sin(pos)[0], cos_hf[..., :64], atol=COS_ATOL, rtol=0)


@pytest.mark.hf
@pytest.mark.parametrize("preset,config_name,rotary", [
    ("pixtral-12b", "PixtralVisionConfig", "transformers.models.pixtral.modeling_pixtral.PixtralVisionRotaryEmbedding"),
    ("qwen2-vl-7b:vision", "Qwen2VLVisionConfig", "transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VLVisionRotaryEmbedding"),
    ("qwen2.5-vl-7b:vision", "Qwen2_5_VLVisionConfig", "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLVisionRotaryEmbedding"),
])
def test_vision_presets_inv_freq_equal_model_code(preset, config_name, rotary):
    transformers = pytest.importorskip("transformers")
    import importlib

    module_name, cls_name = rotary.rsplit(".", 1)
    vcfg = {k: v for k, v in rx.preset_info(preset)["config"]["vision_config"].items() if k != "model_type"}
    hf = getattr(importlib.import_module(module_name), cls_name)(getattr(transformers, config_name)(**vcfg))
    spec = rx.load_preset(preset)
    half = spec.num_pairs // 2
    expected = hf.inv_freq if preset.startswith("pixtral") else torch.cat([hf.inv_freq, hf.inv_freq])
    assert torch.equal(torch.tensor(spec.inv_freq), expected), preset
    assert len(spec.inv_freq) == 2 * half


@pytest.mark.hf
def test_llama4_scout_preset_matches_model_code():
    pytest.importorskip("transformers")
    from transformers import Llama4VisionConfig
    from transformers.models.llama4.modeling_llama4 import Llama4VisionRotaryEmbedding

    vcfg = {k: v for k, v in rx.preset_info("llama-4-scout")["config"]["vision_config"].items() if k != "model_type"}
    hf = Llama4VisionRotaryEmbedding(Llama4VisionConfig(**vcfg))
    spec = rx.load_preset("llama-4-scout")
    side = vcfg["image_size"] // vcfg["patch_size"]
    cos, sin = rx.RotaryEmbedding(spec).cos_sin(patch_grid_positions(side, side, offset=1, cls_token="last"))
    torch.testing.assert_close(cos[0], hf.freqs_ci[:, 0].real, atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin[0], hf.freqs_ci[:, 0].imag, atol=COS_ATOL, rtol=0)
