"""Tests of rope_export.axes: which position stream each pair follows (M-RoPE, 2D vision), against transformers."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.hf.coverage import check_config
from rope_export.positions import patch_grid_positions, vision_position_ids
from tests.helpers import COS_ATOL, probe_rows, random_mrope_positions

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_mrope_text_cos_sin_match(family):
    if family == "qwen2_vl":
        from transformers import Qwen2VLTextConfig as C
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding as R
        rope = {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e6}
    elif family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLTextConfig as C
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding as R
        rope = {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e6}
    else:
        from transformers import Qwen3VLTextConfig as C
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding as R
        rope = {"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True, "rope_theta": 5e6}
    cfg = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096)
    hf = R(C(rope_parameters=dict(rope), num_hidden_layers=1, **cfg))
    spec = rx.RopeSpec.from_hf_config({**cfg, "model_type": family, "rope_parameters": rope})
    assert spec.num_axes == 3
    assert torch.equal(torch.tensor(spec.inv_freq), hf.inv_freq)
    pos = random_mrope_positions()
    cos_hf, sin_hf = hf(torch.zeros(1, 1, 1, 32), pos)
    cos, sin = rx.RotaryEmbedding(spec).cos_sin(pos)
    torch.testing.assert_close(cos, cos_hf[..., :16], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin, sin_hf[..., :16], atol=COS_ATOL, rtol=0)
    # The second half of HF's table repeats the first (rotate_half layout).
    assert torch.equal(cos_hf[..., :16], cos_hf[..., 16:])


def _vision_case(family):
    T = transformers
    if family == "pixtral":
        from transformers.models.pixtral.modeling_pixtral import PixtralVisionRotaryEmbedding as R
        cfg = dict(hidden_size=256, num_attention_heads=4, head_dim=64, image_size=128, patch_size=16, rope_theta=10000.0)
        return T.PixtralVisionConfig(**cfg), R, {**cfg, "model_type": "pixtral"}
    if family == "qwen2_vl":
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding as R
        cfg = dict(embed_dim=320, hidden_size=512, num_heads=4, patch_size=14, spatial_merge_size=2)
        return T.Qwen2VLVisionConfig(**cfg), R, {"model_type": "qwen2_vl", "vision_config": cfg}
    if family == "qwen2_5_vl":
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionRotaryEmbedding as R
        cfg = dict(hidden_size=320, out_hidden_size=512, num_heads=4, patch_size=14, spatial_merge_size=2)
        return T.Qwen2_5_VLVisionConfig(**cfg), R, {"model_type": "qwen2_5_vl", "vision_config": cfg}
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionRotaryEmbedding as R
    cfg = dict(hidden_size=288, out_hidden_size=512, num_heads=4, patch_size=16, spatial_merge_size=2)
    return T.Qwen3VLVisionConfig(**cfg), R, {"model_type": "qwen3_vl", "vision_config": {**cfg, "model_type": "qwen3_vl"}}


@pytest.mark.parametrize("family", ["pixtral", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_vision_axial_rope_matches(family):
    config, R, ours = _vision_case(family)
    hf = R(config)
    spec = rx.RopeSpec.from_hf_config(ours, part="vision")
    P = spec.num_pairs
    inv = torch.tensor(spec.inv_freq)
    if family == "pixtral":
        assert torch.equal(inv, hf.inv_freq)
    else:  # one shared table for rows (first half) and columns (second half)
        assert torch.equal(inv[: P // 2], hf.inv_freq) and torch.equal(inv[P // 2 :], hf.inv_freq)
    grid = torch.tensor([[1, 6, 8], [2, 4, 4]])
    pos = vision_position_ids(grid, spatial_merge_size=2)  # [2, 1, N]
    hf_cos, hf_sin = hf(torch.zeros(1), pos[:, 0].T.contiguous())  # HF takes [N, 2]
    cos, sin = rx.RotaryEmbedding(spec).cos_sin(pos)
    torch.testing.assert_close(cos[0], hf_cos[:, :P], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin[0], hf_sin[:, :P], atol=COS_ATOL, rtol=0)


def test_llama4_vision_complex_rotary_matches():
    from transformers import Llama4VisionConfig
    from transformers.models.llama4.modeling_llama4 import Llama4VisionRotaryEmbedding, vision_apply_rotary_emb

    cfg = dict(hidden_size=352, num_attention_heads=4, image_size=84, patch_size=14, rope_theta=10000.0)
    hf = Llama4VisionRotaryEmbedding(Llama4VisionConfig(**cfg))
    spec = rx.RopeSpec.from_hf_config({"model_type": "llama4", "vision_config": {**cfg, "model_type": "llama4_vision_model"}}, part="vision")
    assert spec.layout == "interleaved" and spec.head_dim == 88
    side = cfg["image_size"] // cfg["patch_size"]
    pos = patch_grid_positions(side, side, offset=1, cls_token="last")
    freqs = hf.freqs_ci[:, 0]  # [N, P] complex
    cos, sin = rx.RotaryEmbedding(spec).cos_sin(pos)
    torch.testing.assert_close(cos[0], freqs.real, atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin[0], freqs.imag, atol=COS_ATOL, rtol=0)
    # And the rotation itself against Meta's complex-number application.
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, side * side + 1, 4, 88, generator=g)  # Llama 4 vision: [B, S, H, D]
    k = torch.randn(1, side * side + 1, 4, 88, generator=g)
    q_hf, k_hf = vision_apply_rotary_emb(q, k, hf.freqs_ci)
    q_ours, k_ours = rx.RotaryEmbedding(spec)(q.transpose(1, 2), k.transpose(1, 2), pos)
    torch.testing.assert_close(q_ours.transpose(1, 2), q_hf, atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(k_ours.transpose(1, 2), k_hf, atol=2e-6, rtol=1e-6)


def test_ernie_vl_alternates_rows_and_columns_at_any_section():
    """ERNIE 4.5-VL: h and w alternate pair by pair (its frequencies pre-permuted to stay in order),
    t last; held against its own code at the default sections and at another split."""
    assert probe_rows("ernie4_5_vl_moe")[("text", None)][0] == "exact"
    data = transformers.AutoConfig.for_model("ernie4_5_vl_moe_text").to_dict()
    data["rope_parameters"] = {**data["rope_parameters"], "mrope_section": [16, 16, 32]}
    spec = check_config(data)
    assert spec.axis_of_pair == (1, 2) * 16 + (0,) * 32 and spec.layout == "interleaved"
    with pytest.raises(ValueError, match=r"\[n, n, m\]"):
        data["rope_parameters"]["mrope_section"] = [20, 12, 32]
        rx.RopeSpec.from_hf_config(data)
