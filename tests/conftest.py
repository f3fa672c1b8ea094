from __future__ import annotations

import dataclasses

import pytest
import torch

import rope_export as rx

PRESETS = rx.list_presets()
EPS32 = 2.0**-24


TINY = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}
SCALING_SPECS = {
    # rope types no preset uses, from tiny configs
    "dynamic-ntk": {**TINY, "rope_scaling": {"type": "dynamic", "factor": 4.0}},
    "linear": {**TINY, "rope_scaling": {"type": "linear", "factor": 4.0}},
    "proportional": {**TINY, "rope_parameters": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 1e6}},
}


def all_specs():
    """Every preset and tiny scaling config, in both layouts: (id, spec)."""
    out = []
    named = [(n, rx.load_preset(n)) for n in PRESETS]
    named += [(n, rx.RopeSpec.from_hf_config(c, name=n)) for n, c in SCALING_SPECS.items()]
    for name, spec in named:
        for layout in ("half", "interleaved"):
            out.append((f"{name}-{layout}", dataclasses.replace(spec, layout=layout)))
    return out


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def random_positions(spec, batch, seq, high, gen):
    """int64 positions; for multi-axis specs every axis draws its own values."""
    shape = (batch, seq) if spec.num_axes == 1 else (spec.num_axes, batch, seq)
    return torch.randint(0, int(high), shape, generator=gen, dtype=torch.int64)


def pair_norm_max(x, spec):
    """Largest 2D norm over rotation pairs of x [..., D]."""
    idx = [spec.pair_dims(i) for i in range(spec.num_pairs)]
    a = x[..., [i for i, _ in idx]].double()
    b = x[..., [j for _, j in idx]].double()
    return float(torch.sqrt(a * a + b * b).max())


def float32_tolerance(spec, positions, x):
    """Allowed |module - float64 reference| for float32 angles.

    The float32 angle fl(pos * inv_freq) is off by up to |angle| * 2^-24; sin/cos of it and
    the four products of the rotation add a few ulps of the pair norm. Dynamic NTK's table is
    itself computed by a chain of float32 pow/div (as the model does), so its frequencies may
    be some ulps from exact maths: allow 4x on the angle term there. Factor 2 of margin.
    """
    from rope_export.reference import inv_freq_for

    freqs = inv_freq_for(spec, int(positions.max()))
    max_angle = float(positions.abs().max()) * max(freqs)
    k = 4.0 if spec.length_rule is not None and spec.length_rule.kind == "dynamic" else 1.0
    return 2.0 * spec.attention_scaling * pair_norm_max(x, spec) * (k * max_angle * EPS32 + 8 * EPS32)
