"""Presets carry their source; position helpers follow the models' rules."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.positions import mrope_position_ids, patch_grid_positions, vision_position_ids

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


def test_from_hf_config_reads_a_file(tmp_path):
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(rx.preset_info("llama-3.1-8b")["config"]))
    assert rx.RopeSpec.from_hf_config(path).inv_freq == rx.load_preset("llama-3.1-8b").inv_freq
    assert rx.RopeSpec.from_hf_config(str(tmp_path)).inv_freq == rx.load_preset("llama-3.1-8b").inv_freq
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        rx.RopeSpec.from_hf_config(path)


def test_patch_grid_llama4_cls_token_is_unrotated():
    spec = rx.load_preset("llama-4-scout")
    pos = patch_grid_positions(24, 24, offset=1, cls_token="last")
    assert pos.shape == (2, 1, 577) and pos[:, 0, -1].tolist() == [0, 0] and int(pos[:, 0, :-1].min()) == 1
    x = torch.randn(1, 2, 577, spec.head_dim)
    out, _ = rx.RotaryEmbedding(spec)(x, x, pos)
    assert torch.equal(out[:, :, -1], x[:, :, -1])
    assert not torch.equal(out[:, :, 0], x[:, :, 0])


def test_vision_position_ids_block_major_order():
    pos = vision_position_ids(torch.tensor([[1, 2, 4]]), spatial_merge_size=2)[:, 0]
    # 2x2 windows: (0,0) (0,1) (1,0) (1,1) then (0,2) (0,3) (1,2) (1,3)
    assert pos.tolist() == [[0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 0, 1, 2, 3, 2, 3]]
    with pytest.raises(ValueError, match="divisible"):
        vision_position_ids(torch.tensor([[1, 3, 4]]), spatial_merge_size=2)


def test_mrope_positions_video_interval_and_errors():
    types = torch.tensor([[0] + [2] * 8 + [0]])
    pos = mrope_position_ids(types, video_grid_thw=torch.tensor([[2, 4, 4]]), video_time_intervals=[3.0])
    # t runs 1, 4 (interval 3); the next text starts one past the block's largest position
    # (the trained rule; transformers 5.23 would start it at 1 + max(h, w) = 3).
    assert pos[0, 0].tolist() == [0, 1, 1, 1, 1, 4, 4, 4, 4, 5]
    with pytest.raises(ValueError, match="more video runs"):
        mrope_position_ids(types)
    with pytest.raises(ValueError, match="does not match its grid"):
        mrope_position_ids(types, video_grid_thw=torch.tensor([[1, 4, 4]]))


def test_plot_spec_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from rope_export.cli import main

    for preset in ("qwen3-vl-8b", "gpt-neox-20b"):
        out = tmp_path / f"{preset}.png"
        assert main(["plot", "--preset", preset, "--out", str(out)]) == 0
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


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
