"""Rotaries that live in a composite config's nested parts, or that follow an unusual axis or
key layout: each read exactly (checked against transformers' own rotary and apply function by
the coverage probe) or refused with its reason."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import rope_export as rx  # noqa: E402
from rope_export.hf.coverage import check_config, probe_model_type  # noqa: E402


def _rows(model_type):
    return {(r.part, r.layer_type): (r.status, r.detail) for r in probe_model_type(model_type)}


@pytest.mark.parametrize("model_type, parts", [
    # Built from a nested config although annotated with the root's: read at its key path.
    ("dia", {"encoder_config", "decoder_config"}),
    ("t5gemma", {"encoder", "decoder"}),
    ("qwen2_5_omni", {"thinker_config.text_config", "talker_config"}),
    ("qwen3_omni_moe", {"thinker_config.text_config", "talker_config.text_config", "talker_config.code_predictor_config",
                        "code2wav_config"}),
    ("nemotron3_diarization", {"audio_config"}),
])
def test_nested_parts_are_read_where_the_model_builds_its_rotary(model_type, parts):
    rows = _rows(model_type)
    for part in parts:
        assert rows[(part, None)][0] == "exact", (part, rows.get((part, None)))
    assert ("text", None) not in rows or rows[("text", None)][0] == "exact"


def test_nested_part_without_model_type_is_verified_by_its_key_path():
    # Qwen3-Omni's code2wav config has model_type "": verified as "qwen3_omni_moe.code2wav_config".
    data = transformers.AutoConfig.for_model("qwen3_omni_moe").to_dict()
    assert data["code2wav_config"].get("model_type") == ""
    spec = rx.RopeSpec.from_hf_config(data, part="code2wav_config")
    assert spec.num_axes == 1 and spec.layout == "half"
    with pytest.raises(ValueError, match="3D coordinates"):
        rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("esmfold2").to_dict(), part="atom_encoder")


def test_qwen2_5_omni_thinker_and_talker_are_mrope():
    data = transformers.AutoConfig.for_model("qwen2_5_omni").to_dict()
    for part in ("thinker_config.text_config", "talker_config"):
        spec = rx.RopeSpec.from_hf_config(data, part=part)
        assert spec.num_axes == 3 and dict(spec.scaling)["mrope_section"] in ([16, 24, 24], (16, 24, 24)), part


def test_dbrx_reads_its_own_key_names_and_its_trained_base():
    # databricks/dbrx-instruct config.json: d_model 6144, n_heads 48, max_seq_len 32768,
    # attn_config.rope_theta 500000 (transformers 5.23 ignores that one and rotates with 10000).
    cfg = {"model_type": "dbrx", "d_model": 6144, "n_heads": 48, "max_seq_len": 32768,
           "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "rope_theta": 500000}}
    spec = rx.RopeSpec.from_hf_config(cfg)
    assert spec.head_dim == 128 and spec.max_position_embeddings == 32768
    assert spec.inv_freq[1] == pytest.approx(500000 ** (-2 / 128), rel=1e-6)
    # A file re-saved by transformers 5 carries both bases: refused, naming both.
    with pytest.raises(ValueError, match="disagree"):
        rx.RopeSpec.from_hf_config({**cfg, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})
    assert _rows("dbrx")[("text", None)][0] == "exact"  # the default config, against transformers' code


def test_moonshine_shares_the_decoders_head_count_and_pairs_interleaved():
    spec = rx.RopeSpec.from_hf_config(transformers.MoonshineConfig().to_dict())
    assert (spec.head_dim, spec.rotary_dim, spec.layout) == (36, 32, "interleaved")
    assert _rows("moonshine")[("text", None)][0] == "exact"


def test_blt_pairs_interleaved():
    # Its cos/sin are repeat_interleave'd and its own rotate_half pairs (2i, 2i + 1).
    rows = _rows("blt")
    for part in ("encoder_config", "decoder_config", "global_config", "patcher_config"):
        assert rows[(part, None)][0] == "exact", rows[(part, None)]
    assert rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("blt").to_dict(),
                                      part="global_config").layout == "interleaved"


def test_ernie_vl_alternates_rows_and_columns_at_any_section():
    """ERNIE 4.5-VL: h and w alternate pair by pair (its frequencies pre-permuted to stay in order),
    t last; held against its own code at the default sections and at another split."""
    assert _rows("ernie4_5_vl_moe")[("text", None)][0] == "exact"
    data = transformers.AutoConfig.for_model("ernie4_5_vl_moe_text").to_dict()
    data["rope_parameters"] = {**data["rope_parameters"], "mrope_section": [16, 16, 32]}
    spec = check_config(data)
    assert spec.axis_of_pair == (1, 2) * 16 + (0,) * 32 and spec.layout == "interleaved"
    with pytest.raises(ValueError, match=r"\[n, n, m\]"):
        data["rope_parameters"]["mrope_section"] = [20, 12, 32]
        rx.RopeSpec.from_hf_config(data)


def test_neomme_is_a_two_axis_decoder_per_layer_type():
    data = transformers.AutoConfig.for_model("neomme").to_dict()
    full = rx.RopeSpec.from_hf_config(data, layer_type="full_attention")
    assert full.num_axes == 2 and full.rotary_dim == full.head_dim // 4 and full.axis_of_pair == (0, 1) * 4
    assert {s for s, _ in _rows("neomme").values()} == {"exact"}


def test_minimax_vision_is_three_axes_with_a_pass_through_tail():
    data = transformers.AutoConfig.for_model("minimax_m3_vl").to_dict()
    spec = rx.RopeSpec.from_hf_config(data, part="vision")
    assert (spec.head_dim, spec.rotary_dim, spec.num_axes) == (80, 78, 3)
    assert spec.axis_of_pair == (0,) * 13 + (1,) * 13 + (2,) * 13
    assert _rows("minimax_m3_vl")[("vision", None)][0] == "exact"


@pytest.mark.parametrize("model_type", ["sam2_video", "edgetam_video", "sam3_tracker_video"])
def test_sam_memory_attention(model_type):
    """SAM 2 video's memory attention: 2D over the memory's feature grid, consecutive dims paired,
    the x (column) angles first; its position_ids are (x, y), ours (row, column)."""
    data = transformers.AutoConfig.for_model(model_type).to_dict()
    spec = rx.RopeSpec.from_hf_config(data, part="memory_attention")
    assert spec.layout == "interleaved" and spec.num_axes == 2 and spec.axis_of_pair[0] == 1
    assert spec.max_position_embeddings == max(data["memory_attention_rope_feat_sizes"])
    assert _rows(model_type)[("memory_attention", None)][0] == "exact"
    with pytest.raises(ValueError, match="memory_attention_hidden_size"):
        rx.RopeSpec.from_hf_config(transformers.LlamaConfig().to_dict(), part="memory_attention")


def test_llama4_vision_is_probed_through_its_own_complex_code():
    assert _rows("llama4_vision_model")[("vision", None)][0] == "exact"


@pytest.mark.parametrize("model_type, part, reason", [
    ("hunyuan_vl", "text", "follow different position streams"),
    ("gemma4_vision", "vision", "inside that half"),
    ("eomt_dinov3", "vision", "patch-centre coordinates"),
    ("sam3_vit_model", "vision", "scaled by window_size"),
    ("efficientloftr", "text", "fixed 2D grid"),
])
def test_refusals_name_the_reason(model_type, part, reason):
    data = transformers.AutoConfig.for_model(model_type).to_dict()
    with pytest.raises(ValueError, match=reason):
        rx.RopeSpec.from_hf_config(data, part=part)


def test_hunyuan_vl_is_not_a_rotation():
    """The refusal's reason, measured: with different streams its M-RoPE changes the norm of
    (i, i + D/2) pairs, which its rotate_half pairs."""
    from transformers.models.hunyuan_vl import modeling_hunyuan_vl as M

    cfg = transformers.AutoConfig.for_model("hunyuan_vl").text_config
    cfg.rope_parameters = {**cfg.rope_parameters, "mrope_section": [16, 16, 16, 16]}
    cos, sin = M.HunYuanVLRotaryEmbedding(cfg)(torch.zeros(1), torch.stack([torch.arange(5) * k + 1 for k in (1, 3, 7, 11)])[:, None])
    q = torch.randn(1, 1, 5, cos.shape[-1], generator=torch.Generator().manual_seed(0))
    out, _ = M.apply_rotary_pos_emb(q, q, cos, sin)
    half = cos.shape[-1] // 2
    norms = [t[..., :half] ** 2 + t[..., half:] ** 2 for t in (q, out)]
    assert not torch.allclose(*norms, atol=1e-3)
