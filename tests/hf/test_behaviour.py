"""Tests of rope_export.hf.behaviour: an apply function edited to rotate otherwise is refused, nothing swapped."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402


def test_a_vision_apply_function_is_checked_too(monkeypatch):
    """Qwen2-VL's vision apply function edited to do nothing: the patch refuses it."""
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    cfg = transformers.Qwen2VLConfig(
        text_config=dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                 "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=64, num_heads=2, hidden_size=64, patch_size=14, spatial_merge_size=2))
    model = transformers.AutoModel.from_config(cfg).eval()
    monkeypatch.setattr(modeling_qwen2_vl, "apply_rotary_pos_emb_vision", lambda q, k, cos, sin: (q, k))
    with pytest.raises(ValueError, match="apply_rotary_pos_emb_vision rotates differently"):
        rx.hf.patch(model)


def test_patch_refuses_an_apply_function_that_rotates_differently(monkeypatch):
    """A modeling file whose apply function was edited: the probe of the function itself
    refuses the patch, and nothing is changed."""
    from transformers.models.qwen3 import modeling_qwen3

    cfg = transformers.Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    model = transformers.Qwen3Model(cfg)
    original = modeling_qwen3.apply_rotary_pos_emb
    monkeypatch.setattr(modeling_qwen3, "apply_rotary_pos_emb",
                        lambda q, k, cos, sin, unsqueeze_dim=1: original(q, k, cos, -sin, unsqueeze_dim))
    with pytest.raises(ValueError, match="rotates differently"):
        rx.hf.patch(model)
    assert type(model.rotary_emb).__name__ == "Qwen3RotaryEmbedding"


def test_patch_refuses_a_complex_apply_that_rotates_differently(monkeypatch):
    """A Meta-style apply_rotary_emb edited to rotate by minus the angle: the check against the
    original refuses the patch and nothing is swapped."""
    from transformers.models.deepseek_v2 import modeling_deepseek_v2 as M

    transformers.logging.set_verbosity_error()
    cfg = transformers.DeepseekV2Config(num_hidden_layers=1, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                                        num_key_value_heads=4, vocab_size=100, first_k_dense_replace=1, q_lora_rank=None,
                                        kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=32)
    model = transformers.AutoModel.from_config(cfg).eval()
    original = M.apply_rotary_emb
    monkeypatch.setattr(M, "apply_rotary_emb", lambda xq, xk, freqs_cis: original(xq, xk, freqs_cis.conj()))
    edited = M.apply_rotary_emb
    with pytest.raises(ValueError, match="rotates differently"):
        rx.hf.patch(model)
    assert M.apply_rotary_emb is edited and type(model.rotary_emb).__name__ == "DeepseekV2RotaryEmbedding"
