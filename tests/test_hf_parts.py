"""Rotaries that live in a composite config's nested parts, or that follow an unusual axis or
key layout: each read exactly (checked against transformers' own rotary and apply function by
the coverage probe) or refused with its reason."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

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


def test_patch_takes_meta_style_complex_rotaries():
    """Llama 4 text and DeepSeek V2 apply complex freqs_cis: the patched module returns float32
    (cos, sin) pairs and the swapped apply_rotary_emb rotates as the original, eager."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 7))
    for cfg in (transformers.Llama4TextConfig(num_hidden_layers=1, hidden_size=128, intermediate_size=256,
                                              intermediate_size_mlp=256, num_attention_heads=4, num_key_value_heads=2,
                                              head_dim=32, vocab_size=100, num_local_experts=1),
                transformers.DeepseekV2Config(num_hidden_layers=1, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                                              num_key_value_heads=4, vocab_size=100, first_k_dense_replace=1, q_lora_rank=None,
                                              kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=32)):
        model = transformers.AutoModel.from_config(cfg).eval()
        with torch.no_grad():
            want = model(ids).last_hidden_state
            with rx.hf.patch(model) as p:
                got = model(ids).last_hidden_state
                assert p.replaced[0][2].layout == "interleaved"
        assert (want - got).abs().max() < 1e-5
        assert type(model.rotary_emb).__name__.endswith("RotaryEmbedding")  # restored


def test_zamba2_without_mem_rope_has_no_rotary():
    with pytest.raises(ValueError, match="use_mem_rope"):
        rx.RopeSpec.from_hf_config(transformers.AutoConfig.for_model("zamba2").to_dict())


def test_deepseek_v32_one_spec_per_use(tmp_path, monkeypatch):
    """DeepSeek V3.2 applies one rotary two ways: its MLA attention de-interleaves q_pe / k_pe, its
    sparse-attention indexer rotates the first qk_rope_head_dim dims of its index heads in half
    pairs. layer_type= picks the use; the probe holds each against its own apply function and
    would call a swapped pairing wrong; patch swaps both functions, each with its pairing."""
    data = transformers.DeepseekV32Config().to_dict()
    attention = rx.RopeSpec.from_hf_config(data, layer_type="attention")
    indexer = rx.RopeSpec.from_hf_config(data, layer_type="indexer")
    assert (attention.layout, attention.head_dim, attention.rotary_dim) == ("interleaved_to_half", 64, 64)
    assert (indexer.layout, indexer.head_dim, indexer.rotary_dim) == ("half", 128, 64)
    assert attention.inv_freq == indexer.inv_freq
    assert {s for s, _ in _rows("deepseek_v32").values()} == {"exact"}
    from rope_export import architectures

    swapped = {"attention": ("apply_rotary_pos_emb_interleave", "half", "qk_rope_head_dim"),
               "indexer": ("apply_rotary_pos_emb", "interleaved_to_half", "index_head_dim")}
    monkeypatch.setitem(architectures.ROTARY_USES, "deepseek_v32", swapped)
    assert {s for s, _ in _rows("deepseek_v32").values()} == {"wrong"}
    monkeypatch.undo()

    from rope_export.hf.export import export_hf

    transformers.logging.set_verbosity_error()
    report = export_hf(data, tmp_path / "m.onnx", layers=1, compare_unpatched=False)
    assert report.passed and report.rotary_nodes == 4, report.summary()  # 2 in the attention, 2 in the indexer


@pytest.mark.parametrize("model_type", ["gptj", "codegen"])
def test_gptj_sinusoid_tables_are_patched_and_exported(tmp_path, model_type):
    """GPT-J and CodeGen keep (sin, cos) in a sinusoid table: before transformers 5.25 one per
    attention, with no rotary module; from 5.25 in a rotary module returning (sin, cos). The
    patch checks the table against the config's spec either way, keeps the table, swaps
    apply_rotary_pos_emb(tensor, sin, cos); the export has RotaryEmbedding nodes (both
    exporters) and matches transformers."""
    import importlib

    from rope_export.hf.export import export_hf

    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, n_layer=1, n_embd=128, n_head=4, rotary_dim=16,
                                               vocab_size=100, n_positions=256)
    model = transformers.AutoModel.from_config(config).eval()
    ids = torch.randint(0, 100, (2, 9))
    original = modeling.apply_rotary_pos_emb
    table_module = next(m for _, m in model.named_modules() if isinstance(getattr(m, "embed_positions", None), torch.Tensor))
    rotary_module = "Rotary" in type(table_module).__name__  # transformers 5.25 and later
    with torch.no_grad():
        want = model(ids).last_hidden_state
        with rx.hf.patch(model) as p:
            assert modeling.apply_rotary_pos_emb is not original
            expected = "RotaryEmbedding" if rotary_module else "Attention"
            assert len(p.replaced) == 1 and p.replaced[0][1].endswith(expected), p.replaced
            assert p.replaced[0][2].layout == "interleaved" and p.replaced[0][2].rotary_dim == 16
            got = model(ids).last_hidden_state
    assert modeling.apply_rotary_pos_emb is original
    assert (want - got).abs().max() < 1e-5
    # A table edited by hand no longer follows the config: refused, nothing swapped.
    table_module.embed_positions.mul_(1.01)
    with pytest.raises(ValueError, match="differs from its config's rotary|sinusoid table differs"):
        rx.hf.patch(model)
    assert modeling.apply_rotary_pos_emb is original
    if model_type == "gptj":
        config = rx.preset_info("gpt-j-6b")["config"]
        for exporter in ("dynamo", "legacy"):
            report = export_hf(config, tmp_path / f"{exporter}.onnx", layers=1, exporter=exporter, compare_unpatched=False)
            assert report.passed and report.rotary_nodes == 2, report.summary()


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


def test_an_exporter_failure_is_one_line_naming_what_it_could_not_take(tmp_path):
    """Mixtral's MoE router (no dense-layer switch in its config): export-hf exits 2 with one
    line naming the op the exporter could not convert, and writes nothing."""
    from rope_export.cli import main

    config = tmp_path / "mixtral.json"
    config.write_text(transformers.AutoConfig.for_model("mixtral").to_json_string())
    out = tmp_path / "m.onnx"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export-hf", "--config", str(config), "--layers", "1", "--out", str(out), "--no-compare"]) == 2
    line = [x for x in err.getvalue().splitlines() if "error:" in x]
    assert len(line) == 1 and "No ONNX function found" in line[0] and "MoE router" in line[0], err.getvalue()
    assert "\x1b[" not in err.getvalue() and not out.exists()
