"""Length rules: inverse frequencies that depend on the run-time length ``max(position) + 1``
(dynamic NTK, LongRoPE). A spec with one computes its table inside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .values import FLOAT32_MAX, float32_tuple, positive_int, positive_number

__all__ = ["DynamicNTK", "LongRopeSwitch", "LengthRule", "rule_from_dict"]


@dataclass(frozen=True)
class DynamicNTK:
    """Dynamic NTK scaling: inv_freq depends on the run-time length ``L = max(position) + 1``.

    For ``L <= max_position_embeddings`` the spec's static ``inv_freq`` applies; past it the
    base grows (see `frequencies.dynamic_ntk_inv_freq`). Computed inside the graph.
    """

    theta: float
    factor: float
    max_position_embeddings: int
    kind: str = field(default="dynamic", init=False)

    def __post_init__(self) -> None:
        # The graph grows the base in float32: both must be float32 numbers.
        for name in ("theta", "factor"):
            if positive_number(getattr(self, name), name) > FLOAT32_MAX:
                raise ValueError(f"{name} must be finite in float32 (< 3.4e38), got {str(getattr(self, name))[:40]}")
        _bounded_length(self.max_position_embeddings, "max_position_embeddings")


@dataclass(frozen=True)
class LongRopeSwitch:
    """LongRoPE: ``long_inv_freq`` replaces ``inv_freq`` when ``max(position) + 1`` exceeds
    ``original_max_position_embeddings`` (the same switch as the Phi-3 reference code)."""

    original_max_position_embeddings: int
    long_inv_freq: tuple[float, ...]
    kind: str = field(default="longrope", init=False)

    def __post_init__(self) -> None:
        _bounded_length(self.original_max_position_embeddings, "original_max_position_embeddings")
        if not isinstance(self.long_inv_freq, (tuple, list)):
            raise ValueError("long_inv_freq must be a sequence")
        object.__setattr__(self, "long_inv_freq", float32_tuple(self.long_inv_freq, "long_inv_freq"))


LengthRule = Union[DynamicNTK, LongRopeSwitch]


def rule_from_dict(rule) -> LengthRule | None:
    """A length rule from its `RopeSpec.to_dict` form (None stays None)."""
    if rule is None:
        return None
    if not isinstance(rule, dict):
        raise ValueError(f"length_rule must be an object, got {type(rule).__name__}")
    rule = dict(rule)
    kind = rule.pop("kind", None)
    if kind == "dynamic":
        return DynamicNTK(**rule)
    if kind == "longrope":
        return LongRopeSwitch(**rule)
    raise ValueError(f"length_rule.kind must be 'dynamic' or 'longrope', got {kind!r}")


def _bounded_length(value, name: str) -> None:
    if positive_int(value, name) > 2**40:  # the graphs compare it with int64 positions; spec.MAX_POSITIONS
        raise ValueError(f"{name} must be a positive int <= 2**40, got {str(value)[:40]}")
