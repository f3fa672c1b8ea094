"""Inverse-frequency tables, computed exactly as the models' reference code does, and the
rope-type registry that reads them from a config's rope parameters.

Parity means the float32 bits a model was trained with, so every rule here uses
the same float32 torch operations, in the same order, as the published code
(Hugging Face transformers' ``modeling_rope_utils`` and the vision encoders).
Reordering a product or dividing instead of multiplying by a reciprocal moves
an entry by one ulp, which moves outputs by ~1e-4 at position 100k.

The ``*_inv_freq`` rules return ``(inv_freq, attention_scaling)`` (``dynamic_ntk_inv_freq``,
evaluated at run time, returns the table alone): ``inv_freq`` is a float32 tensor of shape
``[dim // 2]`` and ``attention_scaling`` a Python float that multiplies cos and sin.
`ROPE_TYPES` maps each ``rope_type`` to one function of one signature (as transformers'
``ROPE_INIT_FUNCTIONS``) returning a `Frequencies`.

Example:
    >>> inv, scale = default_inv_freq(10000.0, 8)
    >>> inv.tolist(), scale
    ([1.0, 0.10000000149011612, 0.009999999776482582, 0.0010000000474974513], 1.0)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch

from .length_rules import DynamicNTK, LengthRule, LongRopeSwitch

__all__ = ["default_inv_freq", "linear_inv_freq", "dynamic_ntk_inv_freq", "yarn_inv_freq", "llama3_inv_freq",
           "longrope_inv_freq", "proportional_inv_freq", "axial_inv_freq", "Frequencies", "ROPE_TYPES"]





def _exponents(dim: int, stop: int | None = None) -> torch.Tensor:
    # arange(0, stop, 2) / dim in float32: the exponent vector every rule starts from.
    stop = dim if stop is None else stop
    return torch.arange(0, stop, 2, dtype=torch.int64).to(dtype=torch.float32) / dim


def default_inv_freq(theta: float, dim: int) -> tuple[torch.Tensor, float]:
    """Plain RoPE: ``1 / theta ** (2i / dim)`` for ``i < dim // 2``.

    Args:
        theta: rotary base (``rope_theta``), e.g. 10000.0.
        dim: number of rotated dims (``rotary_dim``), even.
    Returns:
        (float32 ``[dim // 2]``, 1.0)
    """
    return 1.0 / (theta ** _exponents(dim)), 1.0


def linear_inv_freq(theta: float, dim: int, factor: float) -> tuple[torch.Tensor, float]:
    """Linear (position interpolation) scaling: the default table divided by ``factor``."""
    inv_freq, _ = default_inv_freq(theta, dim)
    inv_freq /= factor
    return inv_freq, 1.0


def dynamic_ntk_inv_freq(
    theta: float, dim: int, factor: float, max_position_embeddings: int, seq_len: torch.Tensor
) -> torch.Tensor:
    """Dynamic NTK scaling at run-time length ``seq_len`` (int64 scalar tensor).

    The base grows with the sequence: ``theta * (factor * L / M - (factor - 1)) ** (d / (d - 2))``
    with ``L = max(seq_len, M)``. Pure tensor code, so it traces into an ONNX graph.
    Callers keep the static table for ``seq_len <= M`` (that is what the reference does).

    Returns:
        float32 ``[dim // 2]``
    """
    seq_len = torch.maximum(seq_len, torch.tensor(max_position_embeddings, dtype=seq_len.dtype, device=seq_len.device))
    base = theta * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base ** _exponents(dim).to(seq_len.device))


def yarn_inv_freq(
    theta: float,
    dim: int,
    factor: float,
    original_max_position_embeddings: int,
    *,
    beta_fast: float | None = None,
    beta_slow: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    attention_factor: float | None = None,
    truncate: bool = True,
) -> tuple[torch.Tensor, float]:
    """YaRN: blend interpolated and extrapolated frequencies with a linear ramp.

    ``attention_factor`` defaults to ``0.1 * ln(factor) + 1`` (or the ratio of the two
    mscale terms when ``mscale`` and ``mscale_all_dim`` are both set).
    """

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if dim % 2:  # its ramp has dim // 2 entries, its frequencies ceil(dim / 2): transformers' fails there too
        raise ValueError(f"YaRN needs an even rotary width, got {dim} dims")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = beta_fast or 32
    beta_slow = beta_slow or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original_max_position_embeddings / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # the reference's guard against a zero-width ramp

    pos_freqs = theta ** _exponents(dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq, float(attention_factor)


def llama3_inv_freq(
    theta: float,
    dim: int,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
) -> tuple[torch.Tensor, float]:
    """Llama 3.1 scaling: long wavelengths divided by ``factor``, short kept, a smooth band between."""
    inv_freq, _ = default_inv_freq(theta, dim)
    old_context_len = original_max_position_embeddings
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def longrope_inv_freq(
    theta: float,
    dim: int,
    ext_factors: Sequence[float],
    *,
    factor: float,
    original_max_position_embeddings: int,
    attention_factor: float | None = None,
) -> tuple[torch.Tensor, float]:
    """LongRoPE (Phi-3 "su"): per-pair rescale factors, one table short, one long.

    ``factor`` is ``max_position_embeddings / original_max_position_embeddings`` when the
    config gives none; ``attention_factor`` defaults to ``sqrt(1 + ln(factor) / ln(original))``.
    """
    if len(ext_factors) != dim // 2:
        raise ValueError(
            f"rope_scaling long_factor/short_factor: expected {dim // 2} entries (rotary_dim / 2), got {len(ext_factors)}"
        )
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_max_position_embeddings))
    ext = torch.tensor(list(ext_factors), dtype=torch.float32)
    inv_freq = 1.0 / (ext * theta ** _exponents(dim))
    return inv_freq, float(attention_factor)


def axial_inv_freq(theta: float, head_dim: int, frequencies: str) -> torch.Tensor:
    """2D RoPE's ``head_dim // 2`` entries, rows' pairs then columns' pairs.

    "shared": the table over ``head_dim // 2`` dims, once per axis (Qwen-VL vision, Llama 4
    vision); "interleaved": the table over ``head_dim``, rows take its even entries and
    columns its odd ones (Pixtral).
    """
    if frequencies == "shared":
        table, _ = default_inv_freq(theta, head_dim // 2)
        return torch.cat((table, table))
    if frequencies == "interleaved":
        table, _ = default_inv_freq(theta, head_dim)
        return torch.cat((table[0::2], table[1::2]))
    raise ValueError(f"frequencies must be 'shared' or 'interleaved', got {frequencies!r}")


def proportional_inv_freq(
    theta: float, head_dim: int, partial_rotary_factor: float, factor: float = 1.0
) -> tuple[torch.Tensor, float]:
    """Proportional RoPE (transformers 5, Gemma 4): ``head_dim // 2`` pairs, the first
    ``int(p * head_dim // 2)`` rotate with exponents over the *full* head_dim, the rest have
    frequency 0 (identity). Unlike a partial-rotary tail these zero pairs sit inside the
    rotate_half layout, paired as (i, i + head_dim / 2).
    """
    rope_angles = int(partial_rotary_factor * head_dim // 2)
    rotated = 1.0 / (theta ** (torch.arange(0, 2 * rope_angles, 2, dtype=torch.int64).to(dtype=torch.float32) / head_dim))
    nope = head_dim // 2 - rope_angles
    inv_freq = torch.cat((rotated, torch.zeros(nope, dtype=torch.float32))) if nope > 0 else rotated
    inv_freq /= factor
    return inv_freq, 1.0


# ------------------------------------------------------------------ rope-type registry
class Frequencies(NamedTuple):
    """What a rope type gives a spec: float32 ``inv_freq`` ``[P]``, ``attention_scaling`` and,
    when the table depends on the run-time length, a `LengthRule`."""

    inv_freq: torch.Tensor
    attention_scaling: float = 1.0
    length_rule: LengthRule | None = None


def _require(params: Mapping[str, Any], key: str) -> Any:
    if params.get(key) is None:
        raise ValueError(f"rope_scaling.{key} is required for rope_type {params.get('rope_type')!r}")
    return params[key]


def _default(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    return Frequencies(*default_inv_freq(params["rope_theta"], rotary_dim))


def _linear(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    return Frequencies(*linear_inv_freq(params["rope_theta"], rotary_dim, float(_require(params, "factor"))))


def _dynamic(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    factor = float(_require(params, "factor"))
    if max_position_embeddings is None:
        raise ValueError("max_position_embeddings is required for rope_type 'dynamic'")
    theta = params["rope_theta"]
    inv_freq, _ = default_inv_freq(theta, rotary_dim)
    return Frequencies(inv_freq, 1.0, DynamicNTK(theta=theta, factor=factor, max_position_embeddings=int(max_position_embeddings)))


def _yarn(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    if "factor" not in params:
        raise ValueError("rope_scaling.factor is required for rope_type 'yarn'")
    original = params.get("original_max_position_embeddings") or max_position_embeddings
    if original is None:
        raise ValueError("rope_scaling.original_max_position_embeddings is required for rope_type 'yarn'")
    factor = params["factor"]
    if factor is None:
        factor = max_position_embeddings / original
    return Frequencies(*yarn_inv_freq(
        params["rope_theta"], rotary_dim, float(factor), int(original),
        beta_fast=params.get("beta_fast"), beta_slow=params.get("beta_slow"), mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"), attention_factor=params.get("attention_factor"),
        truncate=params.get("truncate", True),
    ))


def _llama3(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    return Frequencies(*llama3_inv_freq(
        params["rope_theta"], rotary_dim, float(_require(params, "factor")), float(_require(params, "low_freq_factor")),
        float(_require(params, "high_freq_factor")), int(_require(params, "original_max_position_embeddings")),
    ))


def _ntk_alpha(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    # HunYuan: "dynamic" with a fixed alpha stretches the base once (Python float maths, as its code).
    alpha = float(_require(params, "alpha"))
    return Frequencies(*default_inv_freq(params["rope_theta"] * alpha ** (rotary_dim / (rotary_dim - 2)), rotary_dim))


def _longrope(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    # transformers falls back to max_position_embeddings when the original length is not given.
    original = params.get("original_max_position_embeddings") or max_position_embeddings
    if original is None:
        raise ValueError("rope_scaling.original_max_position_embeddings (or max_position_embeddings) is required for rope_type 'longrope'")
    short, long = _require(params, "short_factor"), _require(params, "long_factor")
    factor = params.get("factor")
    if factor is None:
        if max_position_embeddings is None:
            raise ValueError("max_position_embeddings is required for rope_type 'longrope' without rope_scaling.factor")
        factor = max_position_embeddings / original
    kw = dict(factor=float(factor), original_max_position_embeddings=int(original), attention_factor=params.get("attention_factor"))
    inv_freq, attn = longrope_inv_freq(params["rope_theta"], rotary_dim, short, **kw)
    long_inv, _ = longrope_inv_freq(params["rope_theta"], rotary_dim, long, **kw)
    return Frequencies(inv_freq, attn, LongRopeSwitch(original_max_position_embeddings=int(original),
                                                      long_inv_freq=tuple(long_inv.tolist())))


def _proportional(params, head_dim, rotary_dim, max_position_embeddings) -> Frequencies:
    # P = head_dim / 2 pairs whatever partial_rotary_factor says: the factor zeroes the tail pairs.
    prf = params.get("partial_rotary_factor")
    return Frequencies(*proportional_inv_freq(params["rope_theta"], head_dim, prf if prf is not None else 1.0,
                                              float(params.get("factor", 1.0))))


RopeType = Callable[[Mapping[str, Any], int, int, "int | None"], Frequencies]

# rope_type -> rule(params, head_dim, rotary_dim, max_position_embeddings). ``params`` holds the
# config's rope parameters with ``rope_theta`` resolved; the result has rotary_dim // 2 entries
# (head_dim // 2 for "proportional").
ROPE_TYPES: dict[str, RopeType] = {
    "default": _default,
    "linear": _linear,
    "dynamic": _dynamic,
    "yarn": _yarn,
    "llama3": _llama3,
    "longrope": _longrope,
    "ntk_alpha": _ntk_alpha,
    "proportional": _proportional,
}
