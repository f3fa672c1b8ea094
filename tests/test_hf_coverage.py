"""Every rotary architecture of the installed transformers: `from_hf_config` is exact or
refuses, never silently wrong; the verified table is what the probe proves; patch and export-hf
work for decoder families beyond the presets."""

from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.architectures import VERIFIED_TEXT, VERIFIED_VISION, release_key, superseded  # noqa: E402
from rope_export.hf.coverage import coverage, probe_model_type, probed_types, rule_exact_types, summary  # noqa: E402
from rope_export.hf.export import export_hf  # noqa: E402

# Accepted rows this generic probe cannot run, each checked by a test of its own (none today).
CHECKED_ELSEWHERE: dict = {}


@pytest.fixture(scope="module")
def rows():
    transformers.logging.set_verbosity_error()
    return coverage()


def test_no_row_is_silently_wrong(rows):
    """0 wrong, every unprobed row stated, >= 95% exact on the installed release (5.23: 356 of
    372 rows; 5.25: 363 of 389); a row whose release predates the rule rope_export follows
    (`Family.since`) is "superseded" only where the family says so."""
    counts = summary(rows)
    wrong = [(r.model_type, r.part, r.layer_type, r.detail) for r in rows if r.status == "wrong"]
    assert not wrong, wrong
    assert counts["exact"] >= 0.95 * len(rows), counts
    for r in rows:
        if r.status == "unprobed":
            assert (r.model_type, r.part) in CHECKED_ELSEWHERE, (r.model_type, r.part, r.detail)
        if r.status == "superseded":
            assert superseded(r.config_type.partition(":")[2], transformers.__version__), r


def test_verified_table_is_what_the_probe_proves(rows):
    """On the installed release, every verified type it has is proven exact (superseded ones
    aside), every type proven exact is verified, and a release recorded for a type is one the
    probe proves it on."""
    release = transformers.__version__
    for kind, table in (("text", VERIFIED_TEXT), ("vision", VERIFIED_VISION)):
        proved, probed = set(rule_exact_types(rows, kind)), probed_types(rows, kind)
        unproved = {t for t in set(table) & probed - proved if not superseded(t, release)}
        assert not unproved, f"{kind}: verified yet not exact on transformers {release}: {sorted(unproved)}"
        assert proved - set(table) == set(), f"{kind}: newly exact, run tools/hf_coverage.py --write-verified: {sorted(proved - set(table))}"
        recorded = {t for t, releases in table.items() if release in releases}
        assert recorded & probed <= proved, sorted(recorded & probed - proved)
    for name, releases in VERIFIED_TEXT.items():
        assert releases and all(release_key(r) for r in releases), (name, releases)


@pytest.mark.parametrize("model_type", ["glm4", "cohere", "deepseek_v2", "deepseek_v3", "glm4_moe_lite", "longcat_flash",
                                        "gemma3", "jetmoe", "qwen3_5", "nanochat", "deepseek_v32"])
def test_families_the_issue_named(model_type):
    """GPT-J-style pairing (GLM, Cohere), MLA (DeepSeek V2's complex pairs, V3's and
    LongCat's de-interleaving), per-layer types (Gemma 3), kv_channels (JetMoE), M-RoPE with
    partial rotary (Qwen3.5): exact; NanoChat's negative rotation: refused with the reason;
    DeepSeek V3.2's two pairings from one rotary: one spec per use (attention, indexer)."""
    got = {(r.layer_type, r.status) for r in probe_model_type(model_type) if r.part == "text"}
    if model_type == "nanochat":
        assert {s for _, s in got} == {"refused"}, got
    else:
        assert {s for _, s in got} == {"exact"}, got
    if model_type == "gemma3":
        assert {lt for lt, _ in got} == {"full_attention", "sliding_attention"}
    if model_type == "deepseek_v32":  # one spec per use of its one rotary
        assert {lt for lt, _ in got} == {"attention", "indexer"}


@pytest.mark.parametrize("model_type", ["kimi_k25_vision", "step3p5_vision", "mlcd_vision_model", "paddleocr_vl", "qwen3_omni_moe_text",
                                        "glm4v_moe_text", "mellum", "beam", "step3p7", "qwen4_exp_text"])
def test_families_added_with_the_vision_grid_work(model_type):
    """Kimi-K2.5 vision (column and row pairs zipped), Step3 vision (columns first),
    PaddleOCR-VL's default sections, Qwen3-Omni and GLM-4.5V (published head_dim), layer types
    the default config leaves unused (Mellum) or without a rotary (Beam), a composite config's
    layer types (Step3p7), interleaved sections not summing to the pairs (Qwen4-Exp): every row
    exact against transformers' own code."""
    rows = probe_model_type(model_type)
    assert rows and {r.status for r in rows} == {"exact"}, [(r.part, r.layer_type, r.status, r.detail) for r in rows]


def test_unverified_and_refused_types_name_the_reason():
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


def test_layer_types_gemma3_new_and_old_config_files():
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


def test_ntk_alpha_and_longrope_default_match_transformers():
    from transformers.models.hunyuan_v1_dense.modeling_hunyuan_v1_dense import HunYuanDenseV1RotaryEmbedding

    cfg = transformers.HunYuanDenseV1Config(head_dim=128, rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                                                             "rope_theta": 10000.0})
    spec = rx.RopeSpec.from_hf_config(cfg.to_dict())
    assert spec.length_rule is None  # a fixed alpha is a static table
    assert torch.equal(torch.tensor(spec.inv_freq), HunYuanDenseV1RotaryEmbedding(cfg).inv_freq)
    # LongRoPE without original_max_position_embeddings: transformers falls back to max_position_embeddings.
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    factors = [1.0 + i / 100 for i in range(32)]
    data = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 8192,
            "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": factors,
                                "long_factor": [2 * f for f in factors]}}
    spec = rx.RopeSpec.from_hf_config(data)
    module = LlamaRotaryEmbedding(transformers.LlamaConfig(**{k: v for k, v in data.items() if k != "model_type"}))
    assert spec.length_rule.original_max_position_embeddings == 8192
    assert torch.equal(torch.tensor(spec.inv_freq), module.inv_freq)
    assert spec.attention_scaling == pytest.approx(module.attention_scaling)


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


def test_patch_gpt_oss_cos_once_format():
    """gpt-oss keeps each angle once in cos/sin: the patched model equals the unpatched one."""
    from rope_export.hf.export import example_inputs, tiny_model

    transformers.logging.set_verbosity_error()

    model = tiny_model(transformers.GptOssConfig().to_dict(), "text", 1)
    wrapper, args, _, _ = example_inputs(model)
    with torch.no_grad():
        want = wrapper(*args)
    with rx.hf.patch(model) as patched:
        assert patched.replaced and patched.model.rotary_emb.fmt == "once"
        with torch.no_grad():
            got = wrapper(*args)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_coverage_tool_writes_a_table(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "tools", "hf_coverage.py"),
                          "llama", "glm4", "nanochat"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| llama | text |" in out.stdout and "0 wrong" in out.stdout


def test_a_release_that_predates_the_rule_is_superseded_and_refused_by_the_patch():
    """HY-V4: transformers 5.25 rotates DeepSeek's interleaved pairs written de-interleaved,
    5.23 and 5.24 rotate half pairs. rope_export follows 5.25 (Family.since): on it the probe is
    exact and the patch holds; on an older release the probe says "superseded" and the patch
    refuses, as its check against that release's code must."""
    from rope_export.architectures import family_of

    assert family_of("hy_v4").since == "5.25.0" and rx.RopeSpec.from_hf_config(
        transformers.AutoConfig.for_model("hy_v4").to_dict()).layout == "interleaved_to_half"
    (row,) = [r for r in probe_model_type("hy_v4") if r.part == "text"]
    cfg = transformers.AutoConfig.for_model("hy_v4", num_hidden_layers=1, vocab_size=64, first_k_dense_replace=1,
                                            pad_token_id=None, bos_token_id=None, eos_token_id=None)
    model = transformers.AutoModel.from_config(cfg).eval()
    if superseded("hy_v4", transformers.__version__):
        assert row.status == "superseded", row
        with pytest.raises(ValueError, match="rotates differently"):
            rx.hf.patch(model)
    else:
        assert row.status == "exact", row
        ids = torch.randint(0, 64, (1, 6))
        with torch.no_grad():
            want = model(ids).last_hidden_state
            with rx.hf.patch(model):
                got = model(ids).last_hidden_state
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
