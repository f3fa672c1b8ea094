"""Tests of rope_export.hf_config: the rotary of the config.json files models publish, read or refused with its reason."""

# Parts nested in composite configs and unusual key layouts are held against transformers' own
# rotary and apply function by the coverage probe (tests marked hf).

from __future__ import annotations

import dataclasses

import pytest
import torch

import rope_export as rx
from rope_export.architectures import DEFAULT_THETA, VERIFIED_TEXT
from tests.helpers import COS_ATOL, DEEPSEEK_V3, arange_positions, deepseek_v3_spec, probe_rows


QWEN25_VL_TEXT = {"model_type": "qwen2_5_vl_text", "hidden_size": 1024, "num_attention_heads": 16,
                  "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]}, "rope_theta": 5000.0}


def test_text_and_text_config_name_the_same_part():
    cfg = {"model_type": "qwen2_5_vl", "text_config": QWEN25_VL_TEXT, "vision_config": {"model_type": "qwen2_5_vl_vision"}}
    assert rx.RopeSpec.from_hf_config(cfg, part="text") == rx.RopeSpec.from_hf_config(cfg, part="text_config")
    assert rx.RopeSpec.from_hf_config(cfg, part="text").scaling_dict["rope_theta"] == 5000.0


def test_class_default_theta_fills_a_config_that_names_none():
    cfg = {"model_type": "mixtral", "hidden_size": 4096, "num_attention_heads": 32}
    assert rx.RopeSpec.from_hf_config(cfg).scaling_dict["rope_theta"] == DEFAULT_THETA["mixtral"] == 1e6
    assert rx.RopeSpec.from_hf_config({**cfg, "model_type": "llama"}).scaling_dict["rope_theta"] == 10000.0
    flat_vlm = {"model_type": "qwen2_vl", "hidden_size": 1536, "num_attention_heads": 12}
    assert rx.RopeSpec.from_hf_config(flat_vlm).scaling_dict["rope_theta"] == 1e6
    # A vision part takes its encoder's default, never its decoder's (Qwen3-VL checkpoints name
    # their vision_config "qwen3_vl": the decoder's default 5e5 must not leak into it).
    vision = {"hidden_size": 1152, "num_heads": 16, "patch_size": 16}
    qwen3 = {"model_type": "qwen3_vl", "vision_config": {**vision, "model_type": "qwen3_vl"}}
    assert rx.RopeSpec.from_hf_config(qwen3, part="vision").scaling_dict["rope_theta"] == 10000.0
    lfm3 = {"model_type": "lfm3_vl", "vision_config": {**vision, "model_type": "lfm3_vl_vision"}}
    assert rx.RopeSpec.from_hf_config(lfm3, part="vision").scaling_dict["rope_theta"] == DEFAULT_THETA["lfm3_vl_vision"]


@pytest.mark.hf
def test_default_thetas_are_the_installed_config_classes():
    transformers = pytest.importorskip("transformers")
    from rope_export.hf.sources import modeling_module, sub_configs

    seen = {}
    for model_type in transformers.CONFIG_MAPPING.keys():
        try:
            root = modeling_module(model_type)[0]()
        except Exception:  # noqa: BLE001 - a config class that does not build here
            continue
        for _, cfg in sub_configs(root):
            theta = getattr(type(cfg), "default_theta", None)
            if isinstance(theta, (int, float)):
                seen[cfg.model_type] = float(theta)
    for name, theta in DEFAULT_THETA.items():
        if name in seen:
            assert seen[name] == theta, (name, seen[name], theta)
    missing = {n for n, t in seen.items() if t != 10000.0 and n in VERIFIED_TEXT and n not in DEFAULT_THETA}
    assert not missing, f"run tools/hf_coverage.py --write-verified: {sorted(missing)}"


def _composites():
    transformers = pytest.importorskip("transformers")
    from rope_export.hf.sources import modeling_module

    out = []
    for model_type in sorted(transformers.CONFIG_MAPPING.keys()):
        try:
            root = modeling_module(model_type)[0]()
        except Exception:  # noqa: BLE001
            continue
        if isinstance(getattr(root, "text_config", None), transformers.PretrainedConfig):
            out.append((model_type, root))
    return out


@pytest.mark.hf
def test_every_composite_config_reads_its_decoder_from_its_text_config():
    """Every composite config of the installed transformers that nests a text_config:
    ``from_hf_config(whole, part="text")`` is the spec of the decoder's own text_config (the
    config the text decoder is built from, whose reading tests/hf/test_coverage.py holds to its
    code), or both are refused. MusicFlamingo's top-level head_dim and rope_parameters belong to
    its audio clock: its text part is its Qwen2 decoder."""
    composites = _composites()
    assert len(composites) >= 80, len(composites)  # 84 in transformers 5.25
    from rope_export.hf_config import layer_types_of, rotary_uses

    def read(cfg, layer_type):
        try:
            return rx.RopeSpec.from_hf_config(cfg, part="text", layer_type=layer_type)
        except ValueError as exc:
            return f"refused: {exc}"

    checked = refused = 0
    for model_type, root in composites:
        whole, text = root.to_dict(), root.text_config.to_dict()
        try:
            kinds = layer_types_of(text) or list(rotary_uses(text)) or [None]
        except ValueError:
            kinds = [None]
        for layer_type in kinds:
            got, want = read(whole, layer_type), read(text, layer_type)
            if isinstance(got, str) or isinstance(want, str):
                assert isinstance(got, str) and isinstance(want, str), (model_type, layer_type, got, want)
                refused += 1
            else:
                # names differ by design (the whole config is named by its model_type,
                # the nested one by its own): only the rotary must agree
                assert dataclasses.replace(got, name="") == dataclasses.replace(want, name=""), \
                    (model_type, layer_type, got.describe(), want.describe())
                checked += 1
    assert checked >= 60, (checked, refused)  # transformers 5.25: 110 readings compared, 47 refused by both
    if "musicflamingo" in dict(composites):
        spec = rx.RopeSpec.from_hf_config(dict(composites)["musicflamingo"].to_dict(), part="text")
        assert (spec.head_dim, spec.rotary_dim) == (128, 128)
        with pytest.raises(ValueError, match="absolute timestamp"):
            rx.RopeSpec.from_hf_config(dict(composites)["musicflamingo"].to_dict(), part="root")


def test_odd_values_are_clear_errors():
    base = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4}
    with pytest.raises(ValueError, match="layer_type must be a string"):
        rx.RopeSpec.from_hf_config(base, layer_type=["full_attention"])
    with pytest.raises(ValueError, match="rope_type must be a string"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"rope_type": ["linear"], "factor": 2.0}})
    with pytest.raises(ValueError, match="rope_theta must be a finite number"):
        rx.RopeSpec.from_hf_config({**base, "rope_theta": 10**400})
    # A nested config without a model_type key is known by its place, and so refused where that place is.
    nested = {"model_type": "esmfold2", "atom_encoder": {"hidden_size": 256, "num_attention_heads": 2}}
    with pytest.raises(ValueError, match="esmfold2.atom_encoder"):
        rx.RopeSpec.from_hf_config(nested, part="atom_encoder")


def test_fields_a_family_ignores_or_fills_in_itself_are_refused():
    """Llama's rotary ignores partial_rotary_factor; Gemma's config class fills in head_dim 256
    (not hidden_size / heads), GPT-NeoX's a partial rotary of 0.25, Higgs Audio v2's a Llama 3
    rope block: a file that sets the first or leaves out the others is refused, naming the field
    (`architectures.FIELD_FACTS`, proven by `rope_export.hf.fields`)."""
    llama = {"model_type": "llama", "hidden_size": 512, "num_attention_heads": 4}
    with pytest.raises(ValueError, match="ignores partial_rotary_factor"):
        rx.RopeSpec.from_hf_config({**llama, "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}})
    assert rx.RopeSpec.from_hf_config({**llama, "partial_rotary_factor": 1.0}).rotary_dim == 128
    gemma = {"model_type": "gemma", "hidden_size": 3072, "num_attention_heads": 16}
    with pytest.raises(ValueError, match="names no head_dim"):
        rx.RopeSpec.from_hf_config(gemma)
    assert rx.RopeSpec.from_hf_config({**gemma, "head_dim": 256}).head_dim == 256
    neox = {"model_type": "gpt_neox", "hidden_size": 6144, "num_attention_heads": 64}
    with pytest.raises(ValueError, match="names no partial_rotary_factor"):
        rx.RopeSpec.from_hf_config(neox)
    assert rx.RopeSpec.from_hf_config({**neox, "rotary_pct": 0.25}).rotary_dim == 24
    with pytest.raises(ValueError, match="names no rope_parameters block"):
        rx.RopeSpec.from_hf_config({"model_type": "higgs_audio_v2", "hidden_size": 512, "num_attention_heads": 4,
                                    "head_dim": 128, "rope_theta": 500000.0})


def test_bad_hf_configs_name_the_field():
    base = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}
    with pytest.raises(ValueError, match="rope_type"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"type": "ntk-by-parts-v9"}})
    with pytest.raises(ValueError, match="rope_scaling.factor"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"type": "linear"}})
    with pytest.raises(ValueError, match="low_freq_factor"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0,
                                                           "original_max_position_embeddings": 64}})
    with pytest.raises(ValueError, match="short_factor"):
        rx.RopeSpec.from_hf_config({**base, "original_max_position_embeddings": 64, "rope_scaling": {"type": "longrope", "long_factor": [1.0] * 32}})
    with pytest.raises(ValueError, match="head_dim"):
        rx.RopeSpec.from_hf_config({"num_attention_heads": 4})
    with pytest.raises(ValueError, match="vision_config"):
        rx.RopeSpec.from_hf_config(base, part="vision")
    with pytest.raises(ValueError, match="not a vision encoder rope_export knows"):
        rx.RopeSpec.from_hf_config({"vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64}}, part="vision")
    with pytest.raises(ValueError, match="no such file"):
        rx.RopeSpec.from_hf_config("/nonexistent/config.json")
    with pytest.raises(ValueError, match="unknown preset"):
        rx.load_preset("llama-99")


@pytest.mark.hf
def test_gpt_neox_partial_rotary():
    pytest.importorskip("transformers")
    from transformers import GPTNeoXConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

    cfg = dict(hidden_size=256, num_attention_heads=4, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=128)
    hf = GPTNeoXRotaryEmbedding(GPTNeoXConfig(**cfg, num_hidden_layers=1))
    spec = rx.RopeSpec.from_hf_config({**cfg, "model_type": "gpt_neox"})
    assert spec.rotary_dim == 16 and torch.equal(torch.tensor(spec.inv_freq), hf.inv_freq)


@pytest.mark.hf
def test_gptj_interleaved_sin_cos_table():
    pytest.importorskip("transformers")
    from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions

    spec = rx.RopeSpec.from_hf_config({"model_type": "gptj", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_positions": 64})
    assert spec.layout == "interleaved" and spec.rotary_dim == 16
    table = create_sinusoidal_positions(64, 16)  # [pos, sin(8) | cos(8)]
    cos, sin = rx.RotaryEmbedding(spec).cos_sin(arange_positions(64))
    torch.testing.assert_close(sin[0], table[:, :8], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(cos[0], table[:, 8:], atol=COS_ATOL, rtol=0)


@pytest.mark.hf
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
    pytest.importorskip("transformers")
    rows = probe_rows(model_type)
    for part in parts:
        assert rows[(part, None)][0] == "exact", (part, rows.get((part, None)))
    assert ("text", None) not in rows or rows[("text", None)][0] == "exact"


@pytest.mark.hf
def test_nested_part_without_model_type_is_verified_by_its_key_path():
    # Qwen3-Omni's code2wav config has model_type "": verified as "qwen3_omni_moe.code2wav_config".
    transformers = pytest.importorskip("transformers")
    data = transformers.AutoConfig.for_model("qwen3_omni_moe").to_dict()
    assert data["code2wav_config"].get("model_type") == ""
    spec = rx.RopeSpec.from_hf_config(data, part="code2wav_config")
    assert spec.num_axes == 1 and spec.layout == "half"
    with pytest.raises(ValueError, match="3D coordinates"):
        rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("esmfold2").to_dict(), part="atom_encoder")


@pytest.mark.hf
def test_qwen2_5_omni_thinker_and_talker_are_mrope():
    transformers = pytest.importorskip("transformers")
    data = transformers.AutoConfig.for_model("qwen2_5_omni").to_dict()
    for part in ("thinker_config.text_config", "talker_config"):
        spec = rx.RopeSpec.from_hf_config(data, part=part)
        assert spec.num_axes == 3 and dict(spec.scaling)["mrope_section"] in ([16, 24, 24], (16, 24, 24)), part


@pytest.mark.hf
def test_dbrx_reads_its_own_key_names_and_its_trained_base():
    # databricks/dbrx-instruct config.json: d_model 6144, n_heads 48, max_seq_len 32768,
    # attn_config.rope_theta 500000 (transformers 5.23 ignores that one and rotates with 10000).
    pytest.importorskip("transformers")
    cfg = {"model_type": "dbrx", "d_model": 6144, "n_heads": 48, "max_seq_len": 32768,
           "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "rope_theta": 500000}}
    spec = rx.RopeSpec.from_hf_config(cfg)
    assert spec.head_dim == 128 and spec.max_position_embeddings == 32768
    assert spec.inv_freq[1] == pytest.approx(500000 ** (-2 / 128), rel=1e-6)
    # A file re-saved by transformers 5 carries both bases: refused, naming both.
    with pytest.raises(ValueError, match="disagree"):
        rx.RopeSpec.from_hf_config({**cfg, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})
    assert probe_rows("dbrx")[("text", None)][0] == "exact"  # the default config, against transformers' code


@pytest.mark.hf
def test_moonshine_shares_the_decoders_head_count_and_pairs_interleaved():
    transformers = pytest.importorskip("transformers")
    spec = rx.RopeSpec.from_hf_config(transformers.MoonshineConfig().to_dict())
    assert (spec.head_dim, spec.rotary_dim, spec.layout) == (36, 32, "interleaved")
    assert probe_rows("moonshine")[("text", None)][0] == "exact"


@pytest.mark.hf
def test_blt_pairs_interleaved():
    # Its cos/sin are repeat_interleave'd and its own rotate_half pairs (2i, 2i + 1).
    transformers = pytest.importorskip("transformers")
    rows = probe_rows("blt")
    for part in ("encoder_config", "decoder_config", "global_config", "patcher_config"):
        assert rows[(part, None)][0] == "exact", rows[(part, None)]
    assert rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("blt").to_dict(),
                                      part="global_config").layout == "interleaved"


@pytest.mark.hf
def test_neomme_is_a_two_axis_decoder_per_layer_type():
    transformers = pytest.importorskip("transformers")
    data = transformers.AutoConfig.for_model("neomme").to_dict()
    full = rx.RopeSpec.from_hf_config(data, layer_type="full_attention")
    assert full.num_axes == 2 and full.rotary_dim == full.head_dim // 4 and full.axis_of_pair == (0, 1) * 4
    assert {s for s, _ in probe_rows("neomme").values()} == {"exact"}


@pytest.mark.hf
def test_minimax_vision_is_three_axes_with_a_pass_through_tail():
    transformers = pytest.importorskip("transformers")
    data = transformers.AutoConfig.for_model("minimax_m3_vl").to_dict()
    spec = rx.RopeSpec.from_hf_config(data, part="vision")
    assert (spec.head_dim, spec.rotary_dim, spec.num_axes) == (80, 78, 3)
    assert spec.axis_of_pair == (0,) * 13 + (1,) * 13 + (2,) * 13
    assert probe_rows("minimax_m3_vl")[("vision", None)][0] == "exact"


@pytest.mark.hf
@pytest.mark.parametrize("model_type", ["sam2_video", "edgetam_video", "sam3_tracker_video"])
def test_sam_memory_attention(model_type):
    """SAM 2 video's memory attention: 2D over the memory's feature grid, consecutive dims paired,
    the x (column) angles first; its position_ids are (x, y), ours (row, column)."""
    transformers = pytest.importorskip("transformers")
    data = transformers.AutoConfig.for_model(model_type).to_dict()
    spec = rx.RopeSpec.from_hf_config(data, part="memory_attention")
    assert spec.layout == "interleaved" and spec.num_axes == 2 and spec.axis_of_pair[0] == 1
    assert spec.max_position_embeddings == max(data["memory_attention_rope_feat_sizes"])
    assert probe_rows(model_type)[("memory_attention", None)][0] == "exact"
    with pytest.raises(ValueError, match="memory_attention_hidden_size"):
        rx.RopeSpec.from_hf_config(transformers.LlamaConfig().to_dict(), part="memory_attention")


@pytest.mark.hf
@pytest.mark.parametrize("model_type, part, reason", [
    ("hunyuan_vl", "text", "follow different position streams"),
    ("gemma4_vision", "vision", "inside that half"),
    ("eomt_dinov3", "vision", "patch-centre coordinates"),
    ("sam3_vit_model", "vision", "scaled by window_size"),
    ("efficientloftr", "text", "fixed 2D grid"),
])
def test_refusals_name_the_reason(model_type, part, reason):
    transformers = pytest.importorskip("transformers")
    data = transformers.AutoConfig.for_model(model_type).to_dict()
    with pytest.raises(ValueError, match=reason):
        rx.RopeSpec.from_hf_config(data, part=part)


@pytest.mark.hf
def test_hunyuan_vl_is_not_a_rotation():
    """The refusal's reason, measured: with different streams its M-RoPE changes the norm of
    (i, i + D/2) pairs, which its rotate_half pairs."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.hunyuan_vl import modeling_hunyuan_vl as M

    cfg = transformers.AutoConfig.for_model("hunyuan_vl").text_config
    cfg.rope_parameters = {**cfg.rope_parameters, "mrope_section": [16, 16, 16, 16]}
    cos, sin = M.HunYuanVLRotaryEmbedding(cfg)(torch.zeros(1), torch.stack([torch.arange(5) * k + 1 for k in (1, 3, 7, 11)])[:, None])
    q = torch.randn(1, 1, 5, cos.shape[-1], generator=torch.Generator().manual_seed(0))
    out, _ = M.apply_rotary_pos_emb(q, q, cos, sin)
    half = cos.shape[-1] // 2
    norms = [t[..., :half] ** 2 + t[..., half:] ** 2 for t in (q, out)]
    changed = ((norms[1] - norms[0]).abs() / norms[0].clamp_min(1e-6)).max().item()
    assert changed > 0.05, changed  # a rotation keeps every pair's norm to float32 rounding
    # With four equal streams the same code is a rotation: the refusal is about the sections.
    same = torch.stack([torch.arange(5) + 1] * 4)[:, None]
    cos, sin = M.HunYuanVLRotaryEmbedding(cfg)(torch.zeros(1), same)
    out, _ = M.apply_rotary_pos_emb(q, q, cos, sin)
    kept = out[..., :half] ** 2 + out[..., half:] ** 2
    torch.testing.assert_close(kept, norms[0], rtol=1e-5, atol=1e-5)


@pytest.mark.hf
def test_zamba2_without_mem_rope_has_no_rotary():
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="use_mem_rope"):
        rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("zamba2").to_dict())


@pytest.mark.hf
def test_deepseek_v32_one_spec_per_use(tmp_path, monkeypatch):
    """DeepSeek V3.2 applies one rotary two ways: its MLA attention de-interleaves q_pe / k_pe, its
    sparse-attention indexer rotates the first qk_rope_head_dim dims of its index heads in half
    pairs. layer_type= picks the use; the probe holds each against its own apply function and
    would call a swapped pairing wrong; patch swaps both functions, each with its pairing."""
    transformers = pytest.importorskip("transformers")
    data = transformers.DeepseekV32Config().to_dict()
    attention = rx.RopeSpec.from_hf_config(data, layer_type="attention")
    indexer = rx.RopeSpec.from_hf_config(data, layer_type="indexer")
    assert (attention.layout, attention.head_dim, attention.rotary_dim) == ("interleaved_to_half", 64, 64)
    assert (indexer.layout, indexer.head_dim, indexer.rotary_dim) == ("half", 128, 64)
    assert attention.inv_freq == indexer.inv_freq
    assert {s for s, _ in probe_rows("deepseek_v32").values()} == {"exact"}
    from rope_export import architectures

    swapped = {"attention": ("apply_rotary_pos_emb_interleave", "half", "qk_rope_head_dim"),
               "indexer": ("apply_rotary_pos_emb", "interleaved_to_half", "index_head_dim")}
    monkeypatch.setitem(architectures.ROTARY_USES, "deepseek_v32", swapped)
    assert {s for s, _ in probe_rows("deepseek_v32").values()} == {"wrong"}
    monkeypatch.undo()

    from rope_export.hf.export import export_hf

    transformers.logging.set_verbosity_error()
    report = export_hf(data, tmp_path / "m.onnx", layers=1, compare_unpatched=False)
    assert report.passed and report.rotary_nodes == 4, report.summary()  # 2 in the attention, 2 in the indexer


@pytest.mark.hf
def test_unverified_and_refused_types_name_the_reason():
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="not one rope_export has verified"):
        rx.RopeSpec.from_hf_config({"model_type": "made_up_llm", "hidden_size": 64, "num_attention_heads": 2})
    with pytest.raises(ValueError, match="minus the angle"):
        rx.RopeSpec.from_hf_config({"model_type": "nanochat", "hidden_size": 64, "num_attention_heads": 2})
    with pytest.raises(ValueError, match="two ways.*layer_type"):
        rx.RopeSpec.from_hf_config(transformers.DeepseekV32Config().to_dict())
    assert rx.RopeSpec.from_hf_config(transformers.DeepseekV3Config().to_dict()).layout == "interleaved_to_half"
    with pytest.raises(ValueError, match="trailing rope dims"):
        rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("deepseek_v4").to_dict())
    # ESMFold2's atom encoder rotates by xyz coordinates and a space id; its nested config's
    # model_type is "": not read by the generic text rule.
    atom = transformers.AutoConfig.for_model("esmfold2").to_dict()["atom_encoder"]
    assert atom.get("model_type") == ""
    with pytest.raises(ValueError, match="not one rope_export has verified"):
        rx.RopeSpec.from_hf_config(atom)
    # An unverified type checked against transformers' code for this very config.
    from rope_export.hf.coverage import check_config

    assert check_config(transformers.Qwen3Config().to_dict()).head_dim == 128
    with pytest.raises(ValueError, match="not one transformers"):
        check_config({"model_type": "made_up_llm", "hidden_size": 64, "num_attention_heads": 2})
    with pytest.raises(ValueError, match="minus the angle"):
        check_config(transformers.NanoChatConfig().to_dict())
    # No model_type: no architecture to check against, the generic rule applies.
    assert rx.RopeSpec.from_hf_config({"hidden_size": 64, "num_attention_heads": 2}).layout == "half"


@pytest.mark.hf
def test_layer_types_gemma3_new_and_old_config_files():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Gemma3TextConfig()
    with pytest.raises(ValueError, match="layer_type"):
        rx.RopeSpec.from_hf_config(cfg.to_dict())
    with pytest.raises(ValueError, match="not one of"):
        rx.RopeSpec.from_hf_config(cfg.to_dict(), layer_type="cross_attention")
    new = {lt: rx.RopeSpec.from_hf_config(cfg.to_dict(), layer_type=lt) for lt in ("full_attention", "sliding_attention")}
    assert new["full_attention"].inv_freq != new["sliding_attention"].inv_freq
    # A config.json as Gemma 3 checkpoints publish it (rope_local_base_freq, linear scaling).
    old = {"model_type": "gemma3_text", "hidden_size": 2560, "num_attention_heads": 8, "head_dim": 256,
           "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
           "max_position_embeddings": 131072}
    ours = {lt: rx.RopeSpec.from_hf_config(old, layer_type=lt) for lt in ("full_attention", "sliding_attention")}
    module = transformers.models.gemma3.modeling_gemma3.Gemma3RotaryEmbedding(transformers.Gemma3TextConfig(**old))
    for lt, spec in ours.items():
        assert torch.equal(torch.tensor(spec.inv_freq), getattr(module, f"{lt}_inv_freq")), lt


@pytest.mark.hf
def test_config_reads_the_de_interleaving_layout_on_q_pe():
    spec = deepseek_v3_spec()
    assert (spec.layout, spec.head_dim, spec.rotary_dim) == ("interleaved_to_half", 64, 64)
    assert deepseek_v3_spec({**DEEPSEEK_V3, "rope_interleave": False}).layout == "half"
    # DeepSeek V2: complex multiplication over adjacent pairs, written in place.
    v2 = {k: v for k, v in DEEPSEEK_V3.items() if k != "rope_interleave"}
    assert deepseek_v3_spec({**v2, "model_type": "deepseek_v2"}).layout == "interleaved"
    # Mistral 4: frequencies over head_dim * partial_rotary_factor, which is all of q_pe.
    m4 = {"model_type": "mistral4", "hidden_size": 4096, "num_attention_heads": 32, "head_dim": 128,
          "qk_rope_head_dim": 64, "rope_interleave": True,
          "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}
    assert (deepseek_v3_spec(m4).rotary_dim, deepseek_v3_spec(m4).layout) == (64, "interleaved_to_half")
    with pytest.raises(ValueError, match="would not cover q_pe"):
        deepseek_v3_spec({**m4, "head_dim": 96})
    # DeepSeek V3.2: its indexer rotates half pairs, its attention de-interleaves: one spec per use.
    v32 = {**DEEPSEEK_V3, "model_type": "deepseek_v32", "index_head_dim": 128}
    with pytest.raises(ValueError, match="two ways"):
        deepseek_v3_spec(v32)
    assert rx.RopeSpec.from_hf_config(v32, layer_type="attention").layout == "interleaved_to_half"
    assert rx.RopeSpec.from_hf_config(v32, layer_type="indexer").layout == "half"
