"""Tests of rope_export.hf.apply_site: the apply functions a model calls, found, checked and swapped whatever wraps them."""

# Wrappers: a plain function; transformers 5.25's hub-kernel ``Func`` module; a kernelized copy
# per attention; an attribute of an attention instance; a one-tensor apply function (Gemma 4).

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.hf.apply_site import ApplySite, unwrap  # noqa: E402
from rope_export.hf.export import export_hf  # noqa: E402

DATA = pathlib.Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def kernels_llama():
    """tests/data/kernels_llama.py: a modeling file decorated as transformers 5.25 decorates its own."""
    pytest.importorskip("kernels", reason="the kernels package (a dependency of transformers 5.25) is not installed")
    spec = importlib.util.spec_from_file_location("rope_export_test_kernels_llama", DATA / "kernels_llama.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _model(module, seed=0):
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(seed)
    return module.KernelsLlamaModel(config).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 7, 64, generator=g), torch.arange(7)[None].expand(2, -1) * 37


def test_kernels_wrapped_function_is_seen_through(kernels_llama):
    original = kernels_llama.apply_rotary_pos_emb
    assert isinstance(original, torch.nn.Module) and type(original).__name__ == "Func"  # what 5.25 makes of it
    site = ApplySite(kernels_llama.__name__, "apply_rotary_pos_emb")
    assert site.form == "qk" and site.parameters == ["q", "k", "cos", "sin", "unsqueeze_dim"]
    assert unwrap(original).__name__ == "apply_rotary_pos_emb"


def test_patch_swaps_every_holder_and_unpatch_restores_the_exact_objects(kernels_llama):
    model = _model(kernels_llama)
    original = kernels_llama.apply_rotary_pos_emb
    held = model.layers[1].rotary_fn
    assert held is original  # an attention holding the very object (registered as its child module)
    x, pos = _inputs()
    with torch.no_grad():
        want = model(x, pos)
    with rx.hf.patch(model) as patched:
        assert kernels_llama.apply_rotary_pos_emb is not original
        assert getattr(kernels_llama.apply_rotary_pos_emb, "rope_export_replacement", False)
        assert model.layers[1].rotary_fn is not original  # the instance holder swapped too
        assert patched.replaced[0][1] == "KernelsLlamaRotaryEmbedding"
        with torch.no_grad():
            got = model(x, pos)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert kernels_llama.apply_rotary_pos_emb is original and model.layers[1].rotary_fn is original
    assert model.layers[1]._modules["rotary_fn"] is original


def test_patched_twin_and_deepcopy_share_the_swap(kernels_llama):
    import copy

    model, twin = _model(kernels_llama), _model(kernels_llama, seed=1)
    original = kernels_llama.apply_rotary_pos_emb
    first, second = rx.hf.patch(model), rx.hf.patch(twin)
    clone = copy.deepcopy(model)
    first.unpatch()
    assert kernels_llama.apply_rotary_pos_emb is not original  # the twin and the clone still use it
    second.unpatch()
    assert kernels_llama.apply_rotary_pos_emb is not original
    clone.__dict__["_rope_export_patch"].unpatch()
    assert kernels_llama.apply_rotary_pos_emb is original
    assert clone.layers[1].rotary_fn is original


def _kernelize(copy_, forward, repo="kernels-community/fake-rotary"):
    # What kernels.kernelize does to an attention's private copy (kernels 0.19 _replace_forward).
    copy_.forward = types.MethodType(forward, copy_)
    copy_.__dict__["_kernel_repo"] = repo


def test_a_kernelized_copy_is_checked_like_the_original(kernels_llama):
    model = _model(kernels_llama)
    (copy_,) = model.layers[0]._kernel_funcs.values()  # kernels keys it by the layer name, "rotary_pos_emb"
    plain = unwrap(kernels_llama.apply_rotary_pos_emb)
    _kernelize(copy_, lambda self, q, k, cos, sin, unsqueeze_dim=1: plain(q, k, cos, sin, unsqueeze_dim))
    with torch.no_grad():
        want = model(*_inputs())
    with rx.hf.patch(model):  # a kernel that rotates like the original: accepted
        with torch.no_grad():
            got = model(*_inputs())
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    # A kernel that rotates by minus the angle: the model ran it, so swapping would change it.
    _kernelize(copy_, lambda self, q, k, cos, sin, unsqueeze_dim=1: plain(q, k, cos, -sin, unsqueeze_dim))
    original = kernels_llama.apply_rotary_pos_emb
    with pytest.raises(ValueError, match=r"_kernel_funcs\['rotary_pos_emb'\].*fake-rotary.*rotates differently"):
        rx.hf.patch(model)
    assert kernels_llama.apply_rotary_pos_emb is original and type(model.rotary_emb).__name__ == "KernelsLlamaRotaryEmbedding"


def test_an_unknown_wrapper_is_refused_naming_the_release(monkeypatch):
    from transformers.models.qwen3 import modeling_qwen3

    class Opaque:  # a callable wrapper no release of transformers or kernels makes
        def __call__(self, *args, **kwargs):
            return None

    monkeypatch.setattr(modeling_qwen3, "apply_rotary_pos_emb", Opaque())
    cfg = transformers.Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    model = transformers.Qwen3Model(cfg)
    with pytest.raises(ValueError, match=rf"Opaque object, not a function or a wrapper rope_export knows \(transformers "
                                         rf"{transformers.__version__}\)"):
        rx.hf.patch(model)
    assert type(model.rotary_emb).__name__ == "Qwen3RotaryEmbedding"


def test_installed_transformers_llama_patches_and_restores_its_own_object():
    """Whatever the installed release makes of Llama's apply_rotary_pos_emb (a function in 5.23,
    a Func module with kernels installed in 5.25), patch finds it and unpatch puts it back."""
    from transformers.models.llama import modeling_llama

    original = modeling_llama.apply_rotary_pos_emb
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaModel(cfg).eval()
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        want = model(ids).last_hidden_state
        with rx.hf.patch(model):
            assert modeling_llama.apply_rotary_pos_emb is not original
            got = model(ids).last_hidden_state
    assert modeling_llama.apply_rotary_pos_emb is original
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_every_non_pristine_kernel_copy_is_checked(kernels_llama):
    """A copy in _kernel_funcs replaced by another module, given a forward hook, or of another
    class: the model runs it, so the patch checks it like the original."""
    plain = unwrap(kernels_llama.apply_rotary_pos_emb)

    def minus(q, k, cos, sin, unsqueeze_dim=1):
        return plain(q, k, cos, -sin, unsqueeze_dim)

    class Other(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return minus(*args, **kwargs)

    def other_module(layer):
        (key,) = layer._kernel_funcs
        layer._kernel_funcs[key] = Other()

    def hooked(layer):
        (copy_,) = layer._kernel_funcs.values()
        copy_.register_forward_hook(lambda module, args, out: tuple(-t for t in out))

    for tamper in (other_module, hooked):
        model = _model(kernels_llama)
        tamper(model.layers[0])
        with pytest.raises(ValueError, match=r"_kernel_funcs\['rotary_pos_emb'\].*rotates differently"):
            rx.hf.patch(model)


def test_restores_exactly_what_it_swapped_and_nothing_else(kernels_llama):
    """unpatch restores a module that imported the function while the swap was in force; keeps a
    holder someone else changed meanwhile; a patched copy dropped without unpatch gives its share
    back when collected."""
    import copy
    import gc

    original = kernels_llama.apply_rotary_pos_emb
    model = _model(kernels_llama)
    patched = rx.hf.patch(model)
    late = types.ModuleType("rope_export_test_late_importer")
    late.apply_rotary_pos_emb = kernels_llama.apply_rotary_pos_emb  # `from ... import` while patched
    sys.modules[late.__name__] = late
    try:
        twin = copy.deepcopy(model)
        del twin
        gc.collect()
        patched.unpatch()
        assert kernels_llama.apply_rotary_pos_emb is original and late.apply_rotary_pos_emb is original
    finally:
        del sys.modules[late.__name__]
    mine = lambda q, k, cos, sin, unsqueeze_dim=1: (q, k)  # noqa: E731
    patched = rx.hf.patch(model)
    held = model.layers[1]
    held._modules["rotary_fn"] = torch.nn.Identity()  # the user's own, set while patched
    kernels_llama.apply_rotary_pos_emb = mine
    try:
        patched.unpatch()
        assert kernels_llama.apply_rotary_pos_emb is mine and isinstance(held._modules["rotary_fn"], torch.nn.Identity)
    finally:
        kernels_llama.apply_rotary_pos_emb = original
        held._modules["rotary_fn"] = original


def test_one_tensor_apply_function_and_per_layer_head_dims_gemma4(tmp_path):
    """Gemma 4 applies its rotary one tensor at a time, apply_rotary_pos_emb(x, cos, sin), per
    layer type: patched (checked against that function) and exported, PASS against the model.
    Its float32 export differs from torch by ~2e-5 unpatched too (measured), inside RTOL."""
    config = transformers.AutoConfig.for_model("gemma4_text").to_dict()
    report = export_hf(config, tmp_path / "g4.onnx", layers=2, compare_unpatched=False)
    assert report.passed, report.summary()
    assert {n for n, _, _ in report.replaced} == {"rotary_emb[full_attention]", "rotary_emb[sliding_attention]"}
    assert report.rotary_nodes == 4
