"""Tests of rope_export.length_rules: dynamic NTK and LongRoPE tables at the run-time length, against transformers."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from tests.helpers import COS_ATOL, LLAMA_KWARGS, arange_positions, hf_text_rotary

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf


@pytest.mark.parametrize("length", [10, 256, 257, 700])
def test_dynamic_ntk_matches_reference_at_runtime_length(length):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    _, hf = hf_text_rotary(LlamaConfig, LlamaRotaryEmbedding, rope_parameters=dict(params), **LLAMA_KWARGS)
    mod = rx.RotaryEmbedding(rx.RopeSpec.from_hf_config({**LLAMA_KWARGS, "rope_parameters": params}))
    pos = arange_positions(length)
    x = torch.zeros(1, 1, length, 32)
    cos_hf, _ = hf(x, pos)  # updates hf.inv_freq for this length
    assert torch.equal(mod.inv_freq_at(pos), hf.inv_freq)
    torch.testing.assert_close(mod.cos_sin(pos)[0], cos_hf[..., :16], atol=COS_ATOL, rtol=0)


def test_longrope_switches_tables_like_phi3():
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    short = [1.0 + 0.05 * i for i in range(16)]
    long = [1.0 + 1.5 * i for i in range(16)]
    cfg = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
               original_max_position_embeddings=64, rope_theta=10000.0, num_hidden_layers=1,
               rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long})
    hf = Phi3RotaryEmbedding(Phi3Config(**cfg))
    mod = rx.RotaryEmbedding(rx.RopeSpec.from_hf_config({**cfg, "model_type": "phi3"}))
    assert mod.spec.attention_scaling == hf.attention_scaling
    for length in (64, 65, 300, 10):
        pos = arange_positions(length)
        hf(torch.zeros(1, 1, length, 32), pos)
        assert torch.equal(mod.inv_freq_at(pos), hf.inv_freq), length
