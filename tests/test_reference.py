"""Tests of rope_export.reference: the float64 oracle against the rotation written as complex numbers."""

from __future__ import annotations

import numpy as np
import torch

import rope_export as rx
from rope_export.reference import inv_freq_for, rotate


def _complex_rotation(x, positions, inv_freq, layout):
    """RoPE as the paper writes it: pair j is the complex number x_a + i x_b times e^(i pos f_j)."""
    x = x.numpy().astype(np.float64)
    d = x.shape[-1]
    if layout == "half":
        a, b = x[..., : d // 2], x[..., d // 2:]
    else:
        a, b = x[..., 0::2], x[..., 1::2]
    angle = positions.numpy().astype(np.float64)[:, None, :, None] * np.asarray(inv_freq)  # [B, 1, S, P]
    z = (a + 1j * b) * np.exp(1j * angle)
    out = np.empty_like(x)
    if layout == "half":
        out[..., : d // 2], out[..., d // 2:] = z.real, z.imag
    else:
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def test_reference_is_the_complex_rotation_in_both_layouts():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 16, generator=g, dtype=torch.float64)
    positions = torch.randint(0, 100_000, (2, 9), generator=g)
    for layout in ("half", "interleaved"):
        spec = rx.RopeSpec.standard(16, 10000.0, layout=layout)
        want = _complex_rotation(x, positions, spec.inv_freq, layout)
        np.testing.assert_allclose(rotate(x, positions, spec).numpy(), want, rtol=0, atol=1e-9)


def test_partial_rotary_leaves_the_other_dims_alone():
    spec = rx.RopeSpec.standard(16, rotary_dim=8)
    x = torch.randn(1, 2, 5, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = rotate(x, torch.arange(5)[None] + 7, spec)
    assert out[..., 8:].equal(x[..., 8:]) and not torch.allclose(out[..., :8], x[..., :8])


def test_each_axis_of_a_multi_axis_spec_moves_only_its_pairs():
    spec = rx.RopeSpec.mrope(32, sections=[4, 6, 6], theta=1e6)
    x = torch.randn(1, 1, 4, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    base = torch.zeros(3, 1, 4, dtype=torch.int64)
    for axis in range(3):
        moved = base.clone()
        moved[axis] = 1000
        diff = (rotate(x, moved, spec) - rotate(x, base, spec)).abs().amax(dim=(0, 1, 2))
        changed = {d for d in range(32) if diff[d] > 1e-12}
        expected = {d for i in range(spec.num_pairs) if spec.axis_of_pair[i] == axis for d in spec.pair_dims(i)}
        assert changed == expected, (axis, sorted(changed), sorted(expected))


def test_inv_freq_switches_with_the_length_rule():
    spec = rx.RopeSpec.from_hf_config({"model_type": "llama", "hidden_size": 512, "num_attention_heads": 4,
                                       "max_position_embeddings": 4096,
                                       "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
    rule = spec.length_rule
    assert rule is not None and rule.kind == "dynamic"
    assert inv_freq_for(spec, rule.max_position_embeddings - 1) == list(spec.inv_freq)
    past = inv_freq_for(spec, 4 * rule.max_position_embeddings)
    # NTK raises the base past the trained length: every frequency but the first (always 1) slows
    assert past[0] == 1.0 and all(p < f for p, f in zip(past[1:], spec.inv_freq[1:]))
