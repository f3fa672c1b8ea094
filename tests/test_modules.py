"""The torch module against the float64 reference and against the maths of rotations."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import EPS32, all_specs, float32_tolerance, pair_norm_max, random_positions

import rope_export as rx
from rope_export.modules import deinterleave
from rope_export.reference import rotate

SPECS = all_specs()
IDS = [name for name, _ in SPECS]


def _qk(spec, gen, batch=2, seq=9, hq=4, hk=2, dtype=torch.float32):
    q = torch.randn(batch, hq, seq, spec.head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, hk, seq, spec.head_dim, generator=gen).to(dtype)
    return q, k


def _max_position(spec):
    # Past the trained context (crosses LongRoPE / dynamic NTK switches), bounded for the 2D grids.
    return 4 * (spec.max_position_embeddings or 4096)


@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_module_matches_float64_reference(name, spec, gen):
    rope = rx.RotaryEmbedding(spec)
    q, k = _qk(spec, gen)
    for high in (8, 1000, _max_position(spec)):
        pos = random_positions(spec, 2, 9, high, gen)
        q_rot, k_rot = rope(q, k, pos)
        for x, out in ((q, q_rot), (k, k_rot)):
            err = float((out.double() - rotate(x, pos, spec)).abs().max())
            tol = float32_tolerance(spec, pos, x)
            assert err <= tol, f"{name}: max error {err:.3g} > {tol:.3g} at positions < {high}"


@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_rotation_preserves_pair_norms_and_position_zero_is_identity(name, spec, gen):
    rope = rx.RotaryEmbedding(spec)
    q, k = _qk(spec, gen)
    pos = random_positions(spec, 2, 9, 50_000, gen)
    q_rot, _ = rope(q, k, pos)
    s = spec.attention_scaling
    for i in range(spec.num_pairs):
        (a, b), (oa, ob) = spec.pair_dims(i), spec.output_dims(i)
        before = torch.hypot(q[..., a].double(), q[..., b].double()) * s
        after = torch.hypot(q_rot[..., oa].double(), q_rot[..., ob].double())
        torch.testing.assert_close(after, before, atol=8 * EPS32 * float(before.max()), rtol=4 * EPS32)
    untouched = slice(spec.rotary_dim, None)
    assert torch.equal(q_rot[..., untouched], q[..., untouched])

    zero = torch.zeros_like(pos)
    q0, k0 = rope(q, k, zero)
    if spec.layout == "interleaved_to_half":  # angle 0 leaves the layout's permutation
        q, k = deinterleave(q, spec.rotary_dim), deinterleave(k, spec.rotary_dim)
    # angle 0: cos = 1, sin = 0 exactly, so only attention_scaling changes the values.
    if s == 1.0:
        assert torch.equal(q0, q) and torch.equal(k0, k)
    else:
        rot = slice(0, spec.rotary_dim)
        torch.testing.assert_close(q0[..., rot], q[..., rot] * s, rtol=2 * EPS32, atol=0)


@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_relative_property_per_axis(name, spec, gen):
    """<R(m)q, R(n)k> depends only on m - n, on every axis separately."""
    if spec.length_rule is not None:
        # The table itself depends on the largest position: stay inside one regime.
        limit = (spec.length_rule.original_max_position_embeddings if spec.length_rule.kind == "longrope"
                 else spec.length_rule.max_position_embeddings) - 100
    else:
        limit = 3000
    rope = rx.RotaryEmbedding(spec)
    q, k = _qk(spec, gen, batch=1, seq=1, hq=1, hk=1)
    m = random_positions(spec, 1, 1, limit // 2, gen)
    n = random_positions(spec, 1, 1, limit // 2, gen)
    base = (rope(q, k, m)[0] * rope(q, k, n)[1]).sum()
    for axis in range(spec.num_axes):
        shift = torch.zeros_like(m)
        if spec.num_axes == 1:
            shift += 37
        else:
            shift[axis] += 37
        moved = (rope(q, k, m + shift)[0] * rope(q, k, n + shift)[1]).sum()
        scale = pair_norm_max(q, spec) * pair_norm_max(k, spec) * spec.num_pairs
        assert abs(float(moved - base)) <= 1e-4 * scale, f"{name}: axis {axis}"


def test_mrope_with_equal_axes_equals_1d_rope(gen):
    for interleaved in (False, True):
        m = rx.RopeSpec.mrope(128, [16, 24, 24] if not interleaved else [24, 20, 20], 1e6, interleaved=interleaved)
        s = rx.RopeSpec.standard(128, 1e6)
        q, k = _qk(s, gen)
        pos = torch.randint(0, 100_000, (2, 9), generator=gen)
        a = rx.RotaryEmbedding(m)(q, k, pos.expand(3, -1, -1))
        b = rx.RotaryEmbedding(s)(q, k, pos)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # ...and with unequal axes it does not (no silent collapse to 1D).
    pos3 = torch.stack([pos, pos // 2, pos % 7])
    assert not torch.equal(rx.RotaryEmbedding(m)(q, k, pos3)[0], b[0])


@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_half_and_interleaved_layouts_agree_after_permutation(name, spec, gen):
    half, inter = spec.with_layout("half"), spec.with_layout("interleaved")
    P, R = spec.num_pairs, spec.rotary_dim
    perm = list(range(spec.head_dim))  # interleaved dim -> half dim
    for i in range(P):
        perm[2 * i], perm[2 * i + 1] = i, i + P
    assert sorted(perm[:R]) == list(range(R))
    q, k = _qk(spec, gen)
    pos = random_positions(spec, 2, 9, 10_000, gen)
    qh, kh = rx.RotaryEmbedding(half)(q, k, pos)
    qi, ki = rx.RotaryEmbedding(inter)(q[..., perm], k[..., perm], pos)
    assert torch.equal(qi, qh[..., perm]) and torch.equal(ki, kh[..., perm])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,spec", SPECS[::2], ids=IDS[::2])
def test_half_precision_within_dtype_rounding_up_to_1e6(name, spec, dtype, gen):
    """Angles stay float32 whatever the activation dtype, so a half-precision input differs
    from the float32 module only by rounding the result once: <= 1/2 ulp of the output."""
    rope = rx.RotaryEmbedding(spec)
    q, k = _qk(spec, gen)
    q, k = (q * 300).to(dtype), (k * 300).to(dtype)  # large magnitudes
    pos = random_positions(spec, 2, 9, 1_000_000, gen)
    q_rot, k_rot = rope(q, k, pos)
    assert q_rot.dtype == dtype and k_rot.dtype == dtype
    ref_q, _ = rope(q.float(), k.float(), pos)
    assert torch.isfinite(q_rot).all() and torch.isfinite(k_rot).all()
    eps = torch.finfo(dtype).eps
    bound = ref_q.abs() * eps / 2 + torch.finfo(dtype).tiny
    assert ((q_rot.float() - ref_q).abs() <= bound).all()


def test_apply_rotary_with_cached_cos_sin(gen):
    spec = rx.load_preset("llama-3.1-8b")
    rope = rx.RotaryEmbedding(spec)
    q, k = _qk(spec, gen)
    pos = torch.arange(9).expand(2, 9)
    cos, sin = rope.cos_sin(pos)
    assert cos.shape == (2, 9, 64) and cos.dtype == torch.float32
    assert torch.equal(rx.apply_rotary(q, cos, sin, spec), rope(q, k, pos)[0])
    assert torch.equal(rx.apply_rotary(q, cos[0], sin[0], spec), rope(q, k, pos)[0])  # [S, P] broadcast


def test_no_complex_ops_anywhere_in_the_package():
    import pathlib

    src = pathlib.Path(rx.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        for banned in ("view_as_complex", "torch.polar", "complex64", "cfloat"):
            assert banned not in text, f"{path.name} uses {banned}"


# ------------------------------------------------------------------ bad input
def test_bad_specs_name_the_field():
    with pytest.raises(ValueError, match="head_dim must be even"):
        rx.RopeSpec.standard(63)
    with pytest.raises(ValueError, match="rotary_dim"):
        rx.RopeSpec(head_dim=64, rotary_dim=80, inv_freq=(1.0,) * 40)
    with pytest.raises(ValueError, match="sections"):
        rx.RopeSpec.mrope(128, [16, 24, 20])
    with pytest.raises(ValueError, match="inv_freq"):
        rx.RopeSpec(head_dim=8, rotary_dim=8, inv_freq=(1.0, 0.5))
    with pytest.raises(ValueError, match="axis_of_pair"):
        rx.RopeSpec(head_dim=4, rotary_dim=4, inv_freq=(1.0, 0.5), axis_of_pair=(0, 1))
    with pytest.raises(ValueError, match="layout"):
        rx.RopeSpec.standard(8, layout="neox")


def test_bad_hf_configs_name_the_field():
    base = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}
    with pytest.raises(ValueError, match="rope_type"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"type": "ntk-by-parts-v9"}})
    with pytest.raises(ValueError, match="rope_scaling.factor"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"type": "linear"}})
    with pytest.raises(ValueError, match="low_freq_factor"):
        rx.RopeSpec.from_hf_config({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0,
                                                           "original_max_position_embeddings": 64}})
    with pytest.raises(ValueError, match="short_factor"):
        rx.RopeSpec.from_hf_config({**base, "original_max_position_embeddings": 64, "rope_scaling": {"type": "longrope", "long_factor": [1.0] * 32}})
    with pytest.raises(ValueError, match="head_dim"):
        rx.RopeSpec.from_hf_config({"num_attention_heads": 4})
    with pytest.raises(ValueError, match="vision_config"):
        rx.RopeSpec.from_hf_config(base, part="vision")
    with pytest.raises(ValueError, match="not a vision encoder rope_export knows"):
        rx.RopeSpec.from_hf_config({"vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64}}, part="vision")
    with pytest.raises(ValueError, match="no such file"):
        rx.RopeSpec.from_hf_config("/nonexistent/config.json")
    with pytest.raises(ValueError, match="unknown preset"):
        rx.load_preset("llama-99")


def test_bad_forward_inputs_name_the_problem(gen):
    rope3 = rx.RotaryEmbedding(rx.load_preset("qwen2-vl-7b"))
    q, k = _qk(rope3.spec, gen)
    with pytest.raises(ValueError, match=r"\[3, B, S\]"):
        rope3(q, k, torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        rope3(q, k, torch.zeros(3, 2, 9))
    rope1 = rx.RotaryEmbedding(rx.load_preset("mistral-7b"))
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        rope1(q, k, torch.zeros(1, 2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="head_dim mismatch"):
        rope1(q, k[..., :64], torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend"):
        rx.RotaryEmbedding(rope1.spec, backend="cuda-magic")


# --------------------------------------------------------------- spec round trip
@pytest.mark.parametrize("name,spec", SPECS[::2], ids=IDS[::2])
def test_spec_json_round_trip_and_hash(name, spec):
    again = rx.RopeSpec.from_dict(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    assert rx.RopeSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.head_dim = 2  # type: ignore[misc]


@pytest.mark.parametrize("name,spec", all_specs(), ids=[n for n, _ in all_specs()])
def test_eager_fast_path_is_bit_identical_to_the_plain_ops(name, spec, gen):
    """Eager calls take fewer kernels (large tensors: one output buffer; small ones: widened
    cos/sin); exporters and autograd take the plain ops. The results must be equal, bit for bit."""
    rope = rx.RotaryEmbedding(spec)
    pos = random_positions(spec, 2, 7, 5000, gen)
    cos, sin = rope.cos_sin(pos)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(2, 3, 7, spec.head_dim, generator=gen).to(dtype)
        fast = rx.apply_rotary(x, cos, sin, spec.layout)
        plain = rx.apply_rotary(x.float().requires_grad_(), cos, sin, spec.layout).detach().to(dtype)
        assert fast.dtype == dtype and torch.equal(fast, plain), (name, dtype)
        # The module's small-tensor path (decode: widened cos/sin shared by q and k), too.
        small, _ = rope(x, x[:, :1], pos)
        assert small.dtype == dtype and torch.equal(small, plain), (name, dtype, "small")
