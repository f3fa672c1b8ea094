"""Models with no rotary module: each attention gathers (sin, cos) from a sinusoid table of its
own (``embed_positions``, GPT-J and CodeGen before transformers 5.25, which gives them a rotary
module instead) and calls its modeling file's
``apply_rotary_pos_emb(tensor, sin, cos)`` on ``[B, S, H, R]`` slices, pairs (2i, 2i+1).

`rope_export.hf.patch` keeps the tables and swaps that function (the standard ``RotaryEmbedding``
op when exported), after checking that the tables hold the spec's angles and that the function
rotates as ours does.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..modules import RotaryEmbedding
from ..spec import RopeSpec
from .apply_site import ApplySite
from .behaviour import max_error, random_qk, rotation

__all__ = ["table_attentions", "has_table_attentions", "TABLE_FORMAT"]

TABLE_FORMAT = "sincos_table"  # the swap's tag: (sin, cos) gathered by the attention itself


def table_attentions(model: nn.Module) -> list[tuple[str, nn.Module, RopeSpec]]:
    """(name, attention module, spec) for each attention holding a sinusoid table; [] when none.

    Raises:
        ValueError: a table or an apply function that does not match the model's config.
    """
    found = _table_modules(model)
    if not found:
        return []
    config = model.config
    try:
        spec = RopeSpec.from_hf_config(config.to_dict(), part="text", name=str(config.model_type))
    except ValueError as exc:
        raise ValueError(f"{type(model).__name__}: cannot read the rotary description from its config: {exc}") from None
    if spec.layout != "interleaved":
        raise ValueError(f"{type(model).__name__}: a sinusoid-table attention with a {spec.layout!r} spec; "
                         "rope_export patches only GPT-J-style (interleaved) tables")
    for name, module in found:
        _check_table(f"{name} ({type(module).__name__})", module, spec)
    _check_apply(type(model).__name__, sys.modules[type(found[0][1]).__module__], spec)
    return [(name, module, spec) for name, module in found]


def has_table_attentions(model: nn.Module) -> bool:
    """Whether the model's attentions hold sinusoid tables (no checks: `table_attentions` runs them)."""
    return bool(_table_modules(model))


def _table_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(getattr(m, "embed_positions", None), torch.Tensor) and hasattr(m, "rotary_dim")]


def _check_table(name: str, module: nn.Module, spec: RopeSpec) -> None:
    table = module.embed_positions.float().cpu()
    pairs = spec.rotary_dim // 2
    if table.shape[-1] != 2 * pairs:
        raise ValueError(f"{name}: its table has {table.shape[-1]} columns, the spec's rotary_dim is {spec.rotary_dim}")
    pos = torch.tensor([0, 1, 2, 3, 7, 31, 100, table.shape[-2] - 1])[None]
    with torch.no_grad():
        cos, sin = RotaryEmbedding(spec).cos_sin(pos)
    got = table[pos[0]]
    # Both sides compute float32 angles from float32 frequencies that may differ by an ulp:
    # at position p that is p * 6e-8 radians, so 1e-6 per table row leaves 16x headroom; a
    # customised table (a 1% edit: tests/hf/test_tables.py) is off by far more.
    err = max(float((got[:, :pairs] - sin[0]).abs().max()), float((got[:, pairs:] - cos[0]).abs().max()))
    if err > 1e-6 * table.shape[-2] + 1e-6:
        raise ValueError(f"{name}: its sinusoid table differs from its config's rotary by {err:.3g} "
                         f"(spec: {spec.describe()}): the module was customised in a way rope_export does not recognise")


def _check_apply(name: str, modeling, spec: RopeSpec) -> None:
    """The modeling file's apply_rotary_pos_emb(tensor, sin, cos) against its replacement."""
    from .rotary import make_apply

    site = ApplySite(modeling.__name__, "apply_rotary_pos_emb")
    if not site.exists() or site.form != "sincos":
        raise ValueError(f"{name}: its modeling file has no apply_rotary_pos_emb(tensor, sin, cos)")
    g = torch.Generator().manual_seed(0)
    pairs = spec.rotary_dim // 2
    q, k = random_qk(spec.rotary_dim, 5)
    angles = torch.rand(1, 5, pairs, generator=g) * 100
    want = rotation(site.original, "sincos", q, k, angles.sin(), angles.cos())
    got = rotation(make_apply(site, False, "once", "interleaved"), "sincos", q, k, angles.sin(), angles.cos())
    err = max_error(want, got)
    if not err <= 1e-5:
        raise ValueError(f"{name}: its apply_rotary_pos_emb rotates differently from rope_export's "
                         f"(max |diff| {err:.3g}); rope_export does not patch it")
