"""Tests of rope_export.hf.patch: drop-in rotary for whole transformers models, restored exactly, refusing what it cannot do."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.hf.export import example_inputs, tiny_model  # noqa: E402
from tests.helpers import HF_CASES, build_hf_case  # noqa: E402


@pytest.mark.parametrize("name", list(HF_CASES))
def test_patched_eager_equals_unpatched_and_unpatch_restores(name):
    model = build_hf_case(name)
    wrapper, args, _, _ = example_inputs(model)
    modules_before = dict(model.named_modules())
    with torch.no_grad():
        want = wrapper(*args)
    with rx.hf.patch(model) as patched:
        assert patched.replaced and all(isinstance(model.get_submodule(n), rx.hf.HFRotary) for n, _, _ in patched.replaced)
        with torch.no_grad():
            got = wrapper(*args)
    # float32 angles and rotation on both sides, the same operations: equal to a few ulps.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert dict(model.named_modules()).keys() == modules_before.keys()
    assert all(model.get_submodule(k) is v for k, v in modules_before.items() if k)
    with torch.no_grad():
        assert torch.equal(wrapper(*args), want)


def test_bad_input_gives_clear_errors():
    model = build_hf_case("llama")
    with rx.hf.patch(model):
        with pytest.raises(ValueError, match="already patched"):
            rx.hf.patch(model)
    with pytest.raises(ValueError, match="not patched"):
        rx.hf.unpatch(model)
    # A rotary module edited by hand: its cos/sin no longer follow its config.
    model.rotary_emb.inv_freq.mul_(1.01)
    with pytest.raises(ValueError, match="customised"):
        rx.hf.patch(model)
    assert type(model.rotary_emb).__name__ == "LlamaRotaryEmbedding"  # nothing half-done
    # A rotary no spec describes (NanoChat rotates by minus the angle): refused with the module named.
    cfg = transformers.NanoChatConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(ValueError, match="NanoChatRotaryEmbedding.*minus the angle"):
        rx.hf.patch(transformers.AutoModel.from_config(cfg))
    with pytest.raises(ValueError, match="no rotary module"):
        rx.hf.patch(torch.nn.Linear(2, 2))
    # An architecture whose rotary no spec describes (NanoChat rotates by minus the angle).
    with pytest.raises(ValueError, match="not supported by export-hf"):
        tiny_model({"model_type": "nanochat", "num_attention_heads": 2, "hidden_size": 64}, "text", 1)


def test_whole_vlm_patches_both_parts_and_unpatched_twins_keep_their_results():
    """A whole Qwen2-VL model has two rotaries (decoder M-RoPE, vision 2D); while it is patched,
    an unpatched model of the same architecture goes through the swapped apply functions and
    must still give its own results."""
    cfg = transformers.Qwen2VLConfig(
        text_config=dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                 "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=64, num_heads=2, hidden_size=64, patch_size=14, spatial_merge_size=2))
    torch.manual_seed(0)
    model, twin = (transformers.AutoModel.from_config(cfg, attn_implementation="eager").eval() for _ in range(2))
    grid = torch.tensor([[1, 4, 6]])
    pixels = torch.randn(24, 3 * 2 * 14 * 14)
    ids = torch.randint(0, 96, (2, 7))
    pos = torch.stack([torch.arange(7), torch.arange(7) // 2, torch.arange(7) % 3])[:, None].expand(3, 2, 7)

    def run(m):
        with torch.no_grad():
            return (m.visual(pixels, grid_thw=grid).last_hidden_state,
                    m.language_model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state)

    want, twin_want = run(model), run(twin)
    with rx.hf.patch(model) as patched:
        assert [cls for _, cls, _ in patched.replaced] == ["Qwen2VLVisionRotaryEmbedding", "Qwen2VLRotaryEmbedding"]
        for got, w in zip(run(model), want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)
        for got, w in zip(run(twin), twin_want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)


def test_half_precision_model_warns_and_differs_by_rounding_only():
    """model.to(bfloat16) rounds the inv_freq buffer; transformers then computes angles from
    rounded frequencies. patch() accepts it, says so, and uses the config's float32 values."""
    model = build_hf_case("llama").to(torch.bfloat16)
    wrapper, args, _, _ = example_inputs(model)
    with torch.no_grad():
        want = wrapper(*args).float()
    with pytest.warns(UserWarning, match="bfloat16"):
        patched = rx.hf.patch(model)
    with torch.no_grad():
        got = wrapper(*args).float()
    patched.unpatch()
    # Measured 1 bf16 ulp (0.0156 at magnitude ~3): rotation in float32 rounded once vs
    # transformers rounding cos/sin and each product to bfloat16.
    assert float((got - want).abs().max()) <= 4 * 2**-8 * float(want.abs().max())


def test_meta_and_half_precision_models():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2)
    with torch.device("meta"):
        meta = transformers.LlamaModel(cfg)
    with pytest.raises(ValueError, match="meta device"):
        rx.hf.patch(meta)
    half = transformers.LlamaModel(cfg).to(torch.bfloat16)
    with pytest.warns(UserWarning, match="runs in bfloat16: rope_export rotates in float32"):
        rx.hf.patch(half).unpatch()


def test_patch_refuses_the_rotary_itself_and_survives_deepcopy():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    model = transformers.LlamaModel(cfg)
    with pytest.raises(ValueError, match="patch the model that holds it"):
        rx.hf.patch(model.rotary_emb)
    original = modeling_llama.apply_rotary_pos_emb
    rx.hf.patch(model)
    twin = copy.deepcopy(model)
    rx.hf.unpatch(twin)
    assert type(twin.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    assert modeling_llama.apply_rotary_pos_emb is not original  # the original is still patched
    rx.hf.unpatch(model)
    assert modeling_llama.apply_rotary_pos_emb is original and type(model.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    model.to(torch.float32)  # no recursion
