"""Float64 reference: the rotation written as literally as the maths, one pair at a time.

It shares no code with `rope_export.modules`: it reads only the spec's numbers and
computes everything else itself, in float64. It is exact maths, not the parity target
(the model computes angles in float32), so comparisons against it must allow an error
that grows with |position| (about |angle| * 2^-24 per angle).

Example:
    >>> import torch, rope_export as rx
    >>> from rope_export.reference import rotate
    >>> spec = rx.RopeSpec.standard(8)
    >>> x = torch.ones(1, 1, 1, 8)
    >>> rotate(x, torch.zeros(1, 1, dtype=torch.int64), spec).equal(x.double())
    True
"""

from __future__ import annotations

import torch

__all__ = ["rotate", "inv_freq_for"]


def inv_freq_for(spec, max_position: int) -> list[float]:
    """The inverse frequencies (float64 list) in force when the largest position is ``max_position``."""
    rule = spec.length_rule
    table = [float(v) for v in spec.inv_freq]
    if rule is None:
        return table
    length = int(max_position) + 1
    if rule.kind == "longrope":
        return [float(v) for v in rule.long_inv_freq] if length > rule.original_max_position_embeddings else table
    if length <= rule.max_position_embeddings:
        return table
    d = spec.rotary_dim
    base = rule.theta * ((rule.factor * length / rule.max_position_embeddings) - (rule.factor - 1)) ** (d / (d - 2))
    return [1.0 / base ** (2 * i / d) for i in range(d // 2)]


def rotate(x: torch.Tensor, position_ids: torch.Tensor, spec) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, S, D]`` by positions ``[B, S]`` (one axis) or ``[A, B, S]``.

    Returns a float64 tensor of the same shape.
    """
    x = x.to(torch.float64)
    pos = position_ids.to(torch.float64)
    if pos.dim() == 2:
        pos = pos[None]
    out = x.clone()
    half = spec.rotary_dim // 2
    freqs = inv_freq_for(spec, int(position_ids.max()))
    for i in range(half):
        (a, b), (oa, ob) = spec.pair_dims(i), spec.output_dims(i)  # read, written (DeepSeek: de-interleaved)
        theta = pos[spec.axis_of_pair[i]] * freqs[i]  # [B, S]
        c = (torch.cos(theta) * spec.attention_scaling)[:, None, :]
        s = (torch.sin(theta) * spec.attention_scaling)[:, None, :]
        xa, xb = x[..., a], x[..., b]
        out[..., oa] = xa * c - xb * s
        out[..., ob] = xb * c + xa * s
    return out
