"""rope_export.config_file, rope_export.rope_fields and rope_export.hf_config on the config.json files models publish:
nested parts read alone, two rope blocks read as transformers reads them, malformed per-layer
blocks refused naming the layer type, class defaults filled in as transformers fills them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import rope_export as rx
from rope_export.architectures import DEFAULT_THETA, VERIFIED_TEXT
from rope_export.rope_fields import TWO_BLOCKS_RULE_PROVEN_ON

QWEN25_VL_TEXT = {"model_type": "qwen2_5_vl_text", "hidden_size": 1024, "num_attention_heads": 16,
                  "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]}, "rope_theta": 5000.0}


def test_text_and_text_config_name_the_same_part():
    cfg = {"model_type": "qwen2_5_vl", "text_config": QWEN25_VL_TEXT, "vision_config": {"model_type": "qwen2_5_vl_vision"}}
    assert rx.RopeSpec.from_hf_config(cfg, part="text") == rx.RopeSpec.from_hf_config(cfg, part="text_config")
    assert rx.RopeSpec.from_hf_config(cfg, part="text").scaling_dict["rope_theta"] == 5000.0


def test_top_level_rope_fields_beside_a_text_config_must_agree():
    """Qwen2.5-VL's older files keep the decoder's rope fields at the top level; transformers 5
    reads a text_config alone. A top-level value the text_config does not repeat is two readings."""
    text = {k: v for k, v in QWEN25_VL_TEXT.items() if k != "rope_theta"}
    cfg = {"model_type": "qwen2_5_vl", "rope_theta": 5000.0, "text_config": text}
    for part in ("text", "text_config", None):
        with pytest.raises(ValueError, match=r"rope_theta.*5000.*text_config"):
            rx.RopeSpec.from_hf_config(cfg, part=part)
    # A top level that repeats part of the text_config's fields, with the same values: one reading.
    partial = {**cfg, "rope_theta": 5000.0, "text_config": QWEN25_VL_TEXT}
    assert rx.RopeSpec.from_hf_config(partial).scaling_dict["rope_theta"] == 5000.0
    # The same values written both ways (transformers 4 files say "type": "mrope"): one reading.
    same = {**cfg, "rope_scaling": {"rope_type": "default", "mrope_section": [8, 12, 12]}, "text_config": QWEN25_VL_TEXT}
    assert rx.RopeSpec.from_hf_config(same).scaling_dict["mrope_section"] == [8, 12, 12]
    # A family that keeps nothing of its decoder at the top level: the top level is ignored.
    other = {"model_type": "llava", "head_dim": 1280, "rope_theta": 5.0,
             "text_config": {"model_type": "llama", "hidden_size": 1024, "num_attention_heads": 8}}
    spec = rx.RopeSpec.from_hf_config(other, part="text")
    assert (spec.head_dim, spec.scaling_dict["rope_theta"]) == (128, 10000.0)


def test_malformed_per_layer_rope_parameters_name_the_layer_type():
    base = {"model_type": "gemma3_text", "hidden_size": 256, "num_attention_heads": 4, "head_dim": 64,
            "layer_types": ["sliding_attention", "full_attention"]}
    full = {"rope_type": "default", "rope_theta": 1e6}
    cases = {
        r"rope_parameters\['sliding_attention'\].*int 5": {"full_attention": full, "sliding_attention": 5},
        r"every layer type's entry is null.*full_attention": {"full_attention": None, "sliding_attention": None},
        r"mixes layer-type entries \(full_attention\) with flat fields \(rope_theta=": {"rope_theta": 1e4, "full_attention": full},
    }
    for message, params in cases.items():
        with pytest.raises(ValueError, match=message):
            rx.RopeSpec.from_hf_config({**base, "rope_parameters": params}, layer_type="full_attention")
    with pytest.raises(ValueError, match=r"none of which the config's layer_types \(full_attention, sliding_attention\)"):
        rx.RopeSpec.from_hf_config({**base, "rope_parameters": {"global": full, "local": full}}, layer_type="global")
    undeclared = {k: v for k, v in base.items() if k != "layer_types"}
    with pytest.raises(ValueError, match=r"full_attention.*sliding_attention=5"):
        rx.RopeSpec.from_hf_config({**undeclared, "rope_parameters": {"full_attention": full, "sliding_attention": 5}},
                                   layer_type="full_attention")


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


# -------------------------------------------------------- against the installed transformers
@pytest.mark.hf
def test_two_rope_blocks_read_as_transformers_reads_them():
    """rope_scaling and rope_parameters in one file: transformers takes rope_scaling whole (its
    rule on every release in TWO_BLOCKS_RULE_PROVEN_ON); rope_export's cos/sin equal the model's."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    base = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}
    pairs = [({"rope_type": "linear", "factor": 4.0}, {"rope_type": "default", "rope_theta": 10000.0}),
             ({"rope_type": "dynamic", "factor": 2.0}, {"rope_type": "yarn", "factor": 4.0, "rope_theta": 500000.0,
                                                        "original_max_position_embeddings": 128})]
    pos = torch.tensor([[0, 1, 7, 100, 511, 2000]])
    for scaling, parameters in pairs:
        cfg = {**base, "rope_scaling": scaling, "rope_parameters": parameters}
        module = LlamaRotaryEmbedding(transformers.LlamaConfig(**cfg))
        want = module(torch.zeros(1), pos)
        spec = rx.RopeSpec.from_hf_config({**cfg, "model_type": "llama"})
        cos, sin = rx.RotaryEmbedding(spec).cos_sin(pos)
        torch.testing.assert_close(torch.cat((cos, cos), -1), want[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.cat((sin, sin), -1), want[1], rtol=0, atol=1e-6)
    assert TWO_BLOCKS_RULE_PROVEN_ON and all(r.count(".") == 2 for r in TWO_BLOCKS_RULE_PROVEN_ON)


@pytest.mark.hf
def test_a_transformers_config_object_reads_as_its_config_json():
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2VLConfig(text_config={"hidden_size": 512, "num_attention_heads": 4})
    assert rx.RopeSpec.from_hf_config(config) == rx.RopeSpec.from_hf_config(config.to_dict())
    with pytest.raises(ValueError, match="config must be a dict, a transformers config or a config.json path, got int"):
        rx.RopeSpec.from_hf_config(5)


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
    config the text decoder is built from, whose reading tests/test_hf_coverage.py holds to its
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


@pytest.mark.hf
def test_field_facts_are_what_the_installed_transformers_proves():
    """Every ignored or self-filled field the probe finds on the installed release is recorded."""
    transformers = pytest.importorskip("transformers")
    from rope_export.architectures import FIELD_FACTS
    from rope_export.hf.fields import field_facts

    transformers.logging.set_verbosity_error()
    found = field_facts(sorted(VERIFIED_TEXT))
    missing = {t: {k: sorted(set(v) - set(FIELD_FACTS.get(t, {}).get(k, []))) for k, v in f.items()}
               for t, f in found.items()}
    missing = {t: f for t, f in missing.items() if any(f.values())}
    assert not missing, f"run tools/hf_coverage.py --write-verified: {missing}"
    assert len(found) >= 100, len(found)  # 158 types with a fact on transformers 5.25
