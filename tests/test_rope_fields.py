"""Tests of rope_export.rope_fields: a config's rope block read and checked, as transformers reads it."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.rope_fields import TWO_BLOCKS_RULE_PROVEN_ON
from tests.helpers import LLAMA_KWARGS


QWEN25_VL_TEXT = {"model_type": "qwen2_5_vl_text", "hidden_size": 1024, "num_attention_heads": 16,
                  "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]}, "rope_theta": 5000.0}


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


BASE = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}


@pytest.mark.parametrize("cfg, field", [
    ({**BASE, "rope_theta": float("inf")}, "rope_theta"),
    ({**BASE, "rope_theta": [1e6]}, "rope_theta"),
    ({**BASE, "head_dim": 128.7}, "head_dim"),
    ({**BASE, "rope_scaling": {"type": "dynamic", "factor": float("nan")}}, "factor"),
    ({**BASE, "rope_scaling": {"type": "dynamic", "factor": -1}}, "factor"),
    ({**BASE, "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 0}},
     "original_max_position_embeddings"),
    ({**BASE, "rope_scaling": "linear"}, "rope_scaling"),
    ({**BASE, "rope_scaling": [1, 2]}, "rope_scaling"),
    ({**BASE, "partial_rotary_factor": 1.5}, "partial_rotary_factor"),
])
def test_bad_config_fields_are_named(cfg, field):
    with pytest.raises(ValueError, match=field):
        rx.RopeSpec.from_hf_config(cfg)


@pytest.mark.hf
def test_old_style_rope_scaling_keys_read_the_same():
    # Older config.json files: rope_scaling {"type": ...} and a top-level rope_theta.
    new = rx.RopeSpec.from_hf_config({**LLAMA_KWARGS, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}})
    old = rx.RopeSpec.from_hf_config({**LLAMA_KWARGS, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert new.inv_freq == old.inv_freq
