"""Tests of rope_export.frequencies: inverse-frequency tables bit for bit against transformers' own code."""

# Every expected number here is produced at test time by transformers (a test extra), never by
# rope_export; tiny configs are built in the test, nothing is downloaded. inv_freq must be
# torch.equal; cos/sin within 2 float32 ulps of 1 (helpers.COS_ATOL).

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from tests.helpers import COS_ATOL, LLAMA_KWARGS, arange_positions, hf_text_rotary

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402


ROPE_PARAMETERS = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32, "rope_theta": 10000.0},
    "yarn-untruncated": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                         "original_max_position_embeddings": 32, "rope_theta": 150000.0},
    "yarn-mscale": {"rope_type": "yarn", "factor": 40.0, "mscale": 0.707, "mscale_all_dim": 0.707,
                    "original_max_position_embeddings": 16, "rope_theta": 10000.0},
    "yarn-attention-factor": {"rope_type": "yarn", "factor": 4.0, "attention_factor": 0.5, "beta_fast": 16,
                              "original_max_position_embeddings": 64, "rope_theta": 10000.0},
}


@pytest.mark.parametrize("case", sorted(ROPE_PARAMETERS))
def test_llama_family_inv_freq_bit_identical(case):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = dict(ROPE_PARAMETERS[case])
    config, hf = hf_text_rotary(LlamaConfig, LlamaRotaryEmbedding, rope_parameters=dict(params), **LLAMA_KWARGS)
    spec = rx.RopeSpec.from_hf_config({**LLAMA_KWARGS, "model_type": "llama", "rope_parameters": params})
    mod = rx.RotaryEmbedding(spec)
    pos = arange_positions(40, start=3)
    assert torch.equal(mod.inv_freq_at(pos), hf.inv_freq), case
    assert spec.attention_scaling == pytest.approx(hf.attention_scaling, rel=0, abs=0)
    x = torch.zeros(1, 1, 40, spec.head_dim)
    cos_hf, sin_hf = hf(x, pos)
    cos, sin = mod.cos_sin(pos)
    torch.testing.assert_close(cos, cos_hf[..., : spec.num_pairs], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin, sin_hf[..., : spec.num_pairs], atol=COS_ATOL, rtol=0)


def test_proportional_zero_frequency_pairs():
    from transformers import LlamaConfig

    params = {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}
    config = LlamaConfig(rope_parameters=dict(params), **{**LLAMA_KWARGS, "head_dim": 64})
    inv_hf, attn = ROPE_INIT_FUNCTIONS["proportional"](config)
    spec = rx.RopeSpec.from_hf_config({**LLAMA_KWARGS, "head_dim": 64, "rope_parameters": params})
    assert torch.equal(torch.tensor(spec.inv_freq), inv_hf)
    assert spec.rotary_dim == 64 and spec.num_pairs == 32 and spec.inv_freq[8:] == (0.0,) * 24


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
