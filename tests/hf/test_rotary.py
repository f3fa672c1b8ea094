"""Tests of rope_export.hf.rotary: HFRotary and the swapped apply functions, fused or not, float32 whatever the model's dtype."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.hf.export import RTOL, example_inputs, export_bytes  # noqa: E402
from tests.helpers import build_hf_case, run_onnx_bytes  # noqa: E402


def test_unfused_patch_writes_no_rotary_op():
    model = build_hf_case("llama4-vision")
    wrapper, args, names, axes = example_inputs(model)
    with rx.hf.patch(model, fused=False):
        data = export_bytes(wrapper, args, names, axes, exporter="legacy", opset=17)
    assert "RotaryEmbedding" not in {n.op_type for n in onnx.load_from_string(data).graph.node}
    with torch.no_grad():
        want = wrapper(*args).numpy()
    assert np.abs(run_onnx_bytes(data, names, args) - want).max() <= RTOL * max(1.0, np.abs(want).max())


def test_a_patched_model_cast_afterwards_keeps_float32_frequencies():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                   rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    model = transformers.LlamaModel(cfg).eval()
    with rx.hf.patch(model) as patched:
        model.to(torch.bfloat16)
        adapter = model.rotary_emb
        assert adapter.rope.inv_freq.dtype == torch.float32
        spec = patched.replaced[0][2]
        pos = torch.arange(6)[None] * 1000
        cos, _ = adapter(torch.zeros(1, dtype=torch.bfloat16), pos)
        want, _ = rx.RotaryEmbedding(spec).cos_sin(pos)
        assert torch.equal(cos[..., : spec.num_pairs], want.to(torch.bfloat16))
