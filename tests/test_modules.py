"""Tests of rope_export.modules: the torch rotary modules against the float64 reference and the maths of rotations."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.modules import deinterleave
from rope_export.reference import rotate
from rope_export.validate import TOLERANCES, compare
from tests.helpers import (DEEPSEEK_V3, EPS32, all_specs, deepseek_v3_spec, float32_tolerance, pair_norm_max,
                           random_positions)


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


def test_rotary_module_refuses_mismatched_inputs():
    rope = rx.RotaryEmbedding(rx.RopeSpec.standard(8))
    q = torch.randn(1, 2, 5, 8)
    pos = torch.arange(5)[None]
    for bad_args, message in [((q, q, torch.zeros(3, 5, dtype=torch.int64)), "batch"),
                              ((q, q, torch.zeros(1, 1, dtype=torch.int64)), "positions per row"),
                              ((q.long(), q.long(), pos), "float32"),
                              ((q, q[:, :, :3], pos), "disagree")]:
        with pytest.raises(ValueError, match=message):
            rope(*bad_args)
    q2 = torch.randn(2, 2, 5, 8)  # batch-1 positions are shared: documented
    assert rope(q2, q2, pos)[0].shape == q2.shape
    longrope = rx.RotaryEmbedding(rx.load_preset("phi-3-mini-128k"))
    empty = torch.randn(1, 2, 0, 96)
    assert longrope(empty, empty, torch.zeros(1, 0, dtype=torch.int64))[0].shape == empty.shape


def test_frequencies_stay_float32_whatever_the_module_is_cast_to():
    spec = rx.load_preset("phi-3-mini-128k")  # LongRoPE: two frequency tables
    q = torch.randn(1, 2, 5, spec.head_dim)
    pos = torch.arange(5)[None] * 9000
    want = rx.RotaryEmbedding(spec)(q, q, pos)
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        module = cast(rx.RotaryEmbedding(spec))
        assert module.inv_freq.dtype == module.long_inv_freq.dtype == torch.float32
        assert torch.equal(module(q, q, pos)[0], want[0])


def test_backends_that_cannot_do_something_say_which_can():
    rope = rx.RotaryEmbedding(rx.RopeSpec.standard(8))
    with pytest.raises(TypeError, match="not TorchScript-scriptable: export it with torch.onnx.export"):
        torch.jit.script(rope)
    triton = rx.RotaryEmbedding(rx.RopeSpec.standard(8), backend="triton")
    q = torch.randn(1, 1, 3, 8, requires_grad=True)
    with pytest.raises(ValueError, match="backend='triton' has no backward"):
        triton(q, q, torch.arange(3)[None])


@pytest.mark.hf
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


@pytest.mark.hf
def test_matches_deepseek_v3_modeling_code():
    """Numbers from transformers' own DeepseekV3RotaryEmbedding and apply_rotary_pos_emb_interleave."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as M

    config = transformers.DeepseekV3Config(**{k: v for k, v in DEEPSEEK_V3.items() if k != "model_type"})
    hf = M.DeepseekV3RotaryEmbedding(config)
    spec = deepseek_v3_spec()
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


@pytest.mark.hf
def test_module_against_float64_reference_random_positions():
    spec = deepseek_v3_spec()
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 3, 17, 64, generator=g), torch.randn(2, 1, 17, 64, generator=g)
    pos = random_positions(spec, 2, 17, 8000, g)
    for got, x in zip(rx.RotaryEmbedding(spec)(q, k, pos), (q, k)):
        assert (got.double() - rotate(x, pos, spec)).abs().max() <= float32_tolerance(spec, pos, x)
