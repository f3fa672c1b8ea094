"""Tests of rope_export.hf.adapters: one replacement per rotary kind (per layer type, cos-once, complex freqs_cis)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.hf.export import RTOL, example_inputs, export_bytes  # noqa: E402
from tests.helpers import run_onnx_bytes  # noqa: E402


def test_per_layer_type_rotary_is_patched_per_type_and_exports():
    """Gemma 3: forward(x, position_ids, layer_type), local layers at theta 10k, global at 1M.
    One adapter per layer type; eager equals the unpatched model; the export matches it."""
    config = transformers.Gemma3TextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, layer_types=["sliding_attention", "full_attention"], sliding_window=4,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}})
    config._attn_implementation = "eager"
    model = transformers.Gemma3TextModel(config).eval()
    wrapper, args, names, axes = example_inputs(model)
    with torch.no_grad():
        want = wrapper(*args)
    with rx.hf.patch(model) as patched:
        specs = {name: spec for name, _, spec in patched.replaced}
        assert set(specs) == {"rotary_emb[sliding_attention]", "rotary_emb[full_attention]"}
        assert specs["rotary_emb[full_attention]"].inv_freq != specs["rotary_emb[sliding_attention]"].inv_freq
        with torch.no_grad():
            torch.testing.assert_close(wrapper(*args), want, rtol=1e-5, atol=1e-5)
        data = export_bytes(wrapper, args, names, axes, exporter="dynamo", opset=23)
    assert [n.op_type for n in onnx.load_from_string(data).graph.node].count("RotaryEmbedding") == 4
    for case in (args, example_inputs(model, batch=3, seq=13, seed=1)[1]):
        with torch.no_grad():
            ref = wrapper(*case).numpy()
        assert np.abs(run_onnx_bytes(data, names, case) - ref).max() <= RTOL * max(1.0, np.abs(ref).max())
    # A rotary whose layer types disagree with the spec it reads is refused, naming the type.
    model.rotary_emb.full_attention_inv_freq *= 1.01
    with pytest.raises(ValueError, match="full_attention.*differs"):
        rx.hf.patch(model)


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
