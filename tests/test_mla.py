"""Multi-head latent attention rotaries (DeepSeek V2 / V3, Mistral 4, GLM-4.7-Flash, LongCat):
the "interleaved_to_half" layout (rotate pairs (2i, 2i+1), write them to (i, i+P)), read from
configs, against transformers' own apply functions, exported, and patched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rope_export as rx
from rope_export.export import example_inputs
from rope_export.modules import deinterleave
from rope_export.reference import rotate
from rope_export.validate import TOLERANCES, compare

from helpers import float32_tolerance, random_positions

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf
ort = pytest.importorskip("onnxruntime")

# DeepSeek-V3's config.json rope fields (deepseek-ai/DeepSeek-V3), with a smaller context.
DEEPSEEK_V3 = {"model_type": "deepseek_v3", "hidden_size": 7168, "num_attention_heads": 128, "qk_rope_head_dim": 64,
               "qk_nope_head_dim": 128, "v_head_dim": 128, "max_position_embeddings": 4096, "rope_theta": 10000,
               "rope_interleave": True,
               "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096 // 40,
                                "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}


def _spec(cfg=DEEPSEEK_V3):
    return rx.RopeSpec.from_hf_config(cfg)


def test_config_reads_the_de_interleaving_layout_on_q_pe():
    spec = _spec()
    assert (spec.layout, spec.head_dim, spec.rotary_dim) == ("interleaved_to_half", 64, 64)
    assert _spec({**DEEPSEEK_V3, "rope_interleave": False}).layout == "half"
    # DeepSeek V2: complex multiplication over adjacent pairs, written in place.
    v2 = {k: v for k, v in DEEPSEEK_V3.items() if k != "rope_interleave"}
    assert _spec({**v2, "model_type": "deepseek_v2"}).layout == "interleaved"
    # Mistral 4: frequencies over head_dim * partial_rotary_factor, which is all of q_pe.
    m4 = {"model_type": "mistral4", "hidden_size": 4096, "num_attention_heads": 32, "head_dim": 128,
          "qk_rope_head_dim": 64, "rope_interleave": True,
          "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}
    assert (_spec(m4).rotary_dim, _spec(m4).layout) == (64, "interleaved_to_half")
    with pytest.raises(ValueError, match="would not cover q_pe"):
        _spec({**m4, "head_dim": 96})
    # DeepSeek V3.2: its indexer rotates half pairs, its attention de-interleaves: one spec per use.
    v32 = {**DEEPSEEK_V3, "model_type": "deepseek_v32", "index_head_dim": 128}
    with pytest.raises(ValueError, match="two ways"):
        _spec(v32)
    assert rx.RopeSpec.from_hf_config(v32, layer_type="attention").layout == "interleaved_to_half"
    assert rx.RopeSpec.from_hf_config(v32, layer_type="indexer").layout == "half"


def test_layout_is_the_half_rotation_of_de_interleaved_dims():
    spec = rx.RopeSpec.standard(8, rotary_dim=6, layout="interleaved_to_half")
    x = torch.arange(8.0).reshape(1, 1, 1, 8)
    assert deinterleave(x, 6)[0, 0, 0].tolist() == [0, 2, 4, 1, 3, 5, 6, 7]
    pos = torch.tensor([[3]])
    zero = rx.RotaryEmbedding(spec)(x, x, torch.zeros_like(pos))[0]
    assert zero[0, 0, 0].tolist() == [0, 2, 4, 1, 3, 5, 6, 7]  # angle 0: the permutation alone
    want = rotate(deinterleave(x, 6), pos, spec.with_layout("half")).float()
    torch.testing.assert_close(rx.RotaryEmbedding(spec)(x, x, pos)[0], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotate(x, pos, spec).float(), want, rtol=0, atol=1e-12)


def test_matches_deepseek_v3_modeling_code():
    """Numbers from transformers' own DeepseekV3RotaryEmbedding and apply_rotary_pos_emb_interleave."""
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as M

    config = transformers.DeepseekV3Config(**{k: v for k, v in DEEPSEEK_V3.items() if k != "model_type"})
    hf = M.DeepseekV3RotaryEmbedding(config)
    spec = _spec()
    g = torch.Generator().manual_seed(0)
    pos = torch.tensor([[0, 1, 2, 7, 100, 1000, 4095, 9000]])
    q, k = torch.randn(1, 4, 8, 64, generator=g), torch.randn(1, 1, 8, 64, generator=g)
    cos, sin = hf(q, pos)
    want = M.apply_rotary_pos_emb_interleave(q, k, cos, sin)
    got = rx.RotaryEmbedding(spec)(q, k, pos)
    for g_, w in zip(got, want):
        assert compare(g_.numpy(), w.numpy(), TOLERANCES["float32"])["ok"]
    # the in-place interleaved rotation differs (by a permutation): not what the model computes
    inplace = rx.RotaryEmbedding(spec.with_layout("interleaved"))(q, k, pos)[0]
    assert (inplace - want[0]).abs().max() > 1


@pytest.mark.parametrize("form,opset", [("fused", 23), ("table", 23), ("decomposed", 17), ("contrib", 23)])
def test_exported_forms_match_the_reference(tmp_path, form, opset):
    spec = _spec()
    path = str(tmp_path / "mla.onnx")
    rx.export_onnx(spec, path, form=form, opset=opset)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    q, k, pos = example_inputs(spec, batch=2, seq=19, high=4000, seed=3)
    got = session.run(None, {"q": q.numpy(), "k": k.numpy(), "position_ids": pos.numpy()})
    for g_, x in zip(got, (q, k)):
        want = rotate(x, pos, spec)
        assert np.abs(g_ - want.numpy()).max() <= float32_tolerance(spec, pos, x)


def test_validator_passes_the_graph_and_plugin_form_refuses(tmp_path):
    spec = _spec()
    path = str(tmp_path / "mla.onnx")
    rx.export_onnx(spec, path)
    assert rx.validate(path).passed
    with pytest.raises(ValueError, match="de-interleave"):
        rx.export_onnx(spec, str(tmp_path / "p.onnx"), form="plugin")


def test_module_against_float64_reference_random_positions():
    spec = _spec()
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 3, 17, 64, generator=g), torch.randn(2, 1, 17, 64, generator=g)
    pos = random_positions(spec, 2, 17, 8000, g)
    for got, x in zip(rx.RotaryEmbedding(spec)(q, k, pos), (q, k)):
        assert (got.double() - rotate(x, pos, spec)).abs().max() <= float32_tolerance(spec, pos, x)


def test_export_hf_patches_deepseek_v3_and_matches(tmp_path):
    from rope_export.hf.export import export_hf

    config = transformers.AutoConfig.for_model("deepseek_v3").to_dict()  # rope_interleave: true
    report = export_hf(config, tmp_path / "ds.onnx", layers=1, compare_unpatched=False)
    assert report.passed, report.summary()
    assert report.rotary_nodes == 2
    assert report.replaced[0][2].layout == "interleaved_to_half"
