"""Shared test data and tolerances (imported by the test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses

import torch

import rope_export as rx
from rope_export.spec import LAYOUTS
from rope_export.validate import reference_error_bound

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
    """Every preset and tiny scaling config, in every layout: (id, spec)."""
    out = []
    named = [(n, rx.load_preset(n)) for n in PRESETS]
    named += [(n, rx.RopeSpec.from_hf_config(c, name=n)) for n, c in SCALING_SPECS.items()]
    for name, spec in named:
        for layout in LAYOUTS:
            out.append((f"{name}-{layout}", dataclasses.replace(spec, layout=layout)))
    return out


def random_positions(spec, batch, seq, high, gen):
    """int64 positions; for multi-axis specs every axis draws its own values."""
    return torch.randint(0, int(high), spec.position_shape(batch, seq), generator=gen, dtype=torch.int64)


def pair_norm_max(x, spec):
    """Largest 2D norm over rotation pairs of x [..., D]."""
    idx = [spec.pair_dims(i) for i in range(spec.num_pairs)]
    a = x[..., [i for i, _ in idx]].double()
    b = x[..., [j for _, j in idx]].double()
    return float(torch.sqrt(a * a + b * b).max())


def float32_tolerance(spec, positions, x):
    """Allowed |module - float64 reference| for float32 angles (`reference_error_bound`): one
    ulp of the angle, 4 for dynamic NTK, whose table is itself a chain of float32 pow/div."""
    ulps = 4.0 if spec.length_rule is not None and spec.length_rule.kind == "dynamic" else 1.0
    return reference_error_bound(spec, positions, pair_norm_max(x, spec), angle_ulps=ulps)
