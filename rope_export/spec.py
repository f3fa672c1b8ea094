"""`RopeSpec`: one per-pair description that covers every RoPE variant.

With ``P = rotary_dim // 2`` rotation pairs, every variant computes

    angle[b, s, i] = float32(position[axis_of_pair[i], b, s]) * inv_freq[i]
    (x_a, x_b) -> (x_a cos - x_b sin, x_b cos + x_a sin)       (cos, sin times attention_scaling)

where pair ``i`` is dims ``(i, i + P)`` for ``layout="half"`` (rotate_half / NeoX / HF) and
``(2i, 2i + 1)`` for ``layout="interleaved"`` (GPT-J, Meta's complex code). Dims past
``rotary_dim`` pass through untouched (partial rotary).

Example:
    >>> import rope_export as rx
    >>> spec = rx.RopeSpec.mrope(128, sections=[16, 24, 24], theta=1e6)
    >>> spec.num_axes, spec.axis_of_pair[14:18]
    (3, (0, 0, 1, 1))
    >>> rx.RopeSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .axes import axial_axes, mrope_axes
from .length_rules import DynamicNTK, LengthRule, LongRopeSwitch, rule_from_dict
from .values import FLOAT32_MAX, float32_tuple, freeze, thaw

__all__ = ["RopeSpec", "DynamicNTK", "LongRopeSwitch", "LAYOUTS"]

# Bounds of every size a spec holds, far above any model's (transformers 5.25: head_dim 512,
# 3 position axes, 10M positions), so that a crafted file cannot make anything allocate GBs.
MAX_HEAD_DIM, MAX_AXES, MAX_POSITIONS = 8192, 8, 2**40
LAYOUTS = ("half", "interleaved", "interleaved_to_half")


@dataclass(frozen=True)
class RopeSpec:
    """Everything needed to apply one model's rotary embedding.

    Attributes:
        head_dim: D, the last dim of q and k; even.
        rotary_dim: R <= D, dims that rotate (partial rotary leaves ``D - R`` untouched); even.
        inv_freq: P = R // 2 float32 values (stored as Python floats), one per pair.
        layout: "half" (pair i = dims i, i+P), "interleaved" (pair i = dims 2i, 2i+1), or
            "interleaved_to_half" (reads 2i, 2i+1, writes i, i+P: DeepSeek V3's rope_interleave).
        num_axes: A, the number of position streams (1 text, 2 image rows/cols, 3 M-RoPE t/h/w).
        axis_of_pair: P ints in [0, A): which position stream pair i follows.
        attention_scaling: multiplies cos and sin (YaRN, LongRoPE); 1.0 otherwise.
        length_rule: None, `DynamicNTK` or `LongRopeSwitch` when inv_freq depends on the length.
        scaling: the scaling description it came from (rope_type and its parameters), informative.
        max_position_embeddings: the model's trained context, when known (validation uses it).
        name: a label, e.g. the preset name.
    """

    head_dim: int
    rotary_dim: int
    inv_freq: tuple[float, ...]
    layout: str = "half"
    num_axes: int = 1
    axis_of_pair: tuple[int, ...] = ()
    attention_scaling: float = 1.0
    length_rule: LengthRule | None = None
    scaling: tuple = ()
    max_position_embeddings: int | None = None
    name: str = ""

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        for key, limit in (("head_dim", MAX_HEAD_DIM), ("rotary_dim", MAX_HEAD_DIM), ("num_axes", MAX_AXES)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < value <= limit:
                raise ValueError(f"{key} must be a positive int <= {limit}, got {value!r}")
            set_(key, int(value))
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even, got {self.head_dim}")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary_dim must be even, got {self.rotary_dim}")
        if self.rotary_dim > self.head_dim:
            raise ValueError(f"rotary_dim ({self.rotary_dim}) must be <= head_dim ({self.head_dim})")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        pairs = self.rotary_dim // 2
        for key in ("inv_freq", "axis_of_pair"):
            if not isinstance(getattr(self, key), (tuple, list)):
                raise ValueError(f"{key} must be a sequence, got {type(getattr(self, key)).__name__}")
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {type(self.name).__name__}")
        set_("inv_freq", float32_tuple(self.inv_freq, "inv_freq"))
        if len(self.inv_freq) != pairs:
            raise ValueError(f"inv_freq has {len(self.inv_freq)} entries, expected rotary_dim // 2 = {pairs}")
        if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in self.axis_of_pair):
            raise ValueError("axis_of_pair entries must be ints")
        axes = tuple(int(a) for a in self.axis_of_pair) if len(self.axis_of_pair) else (0,) * pairs
        if len(axes) != pairs:
            raise ValueError(f"axis_of_pair has {len(axes)} entries, expected rotary_dim // 2 = {pairs}")
        if any(a < 0 or a >= self.num_axes for a in axes):
            raise ValueError(f"axis_of_pair entries must lie in [0, num_axes={self.num_axes})")
        set_("axis_of_pair", axes)
        if isinstance(self.attention_scaling, bool) or not isinstance(self.attention_scaling, (int, float, np.floating)):
            raise ValueError(f"attention_scaling must be a number, got {type(self.attention_scaling).__name__}")
        try:
            scaling = float(self.attention_scaling)
        except OverflowError:
            scaling = math.inf
        # The graphs multiply float32 cos/sin by it: it must be a finite float32 too.
        if not math.isfinite(scaling) or scaling <= 0 or scaling > FLOAT32_MAX or np.float32(scaling) == 0:
            raise ValueError(f"attention_scaling must be a float32 number > 0, got {str(self.attention_scaling)[:40]}")
        set_("attention_scaling", scaling)
        if isinstance(self.length_rule, LongRopeSwitch) and len(self.length_rule.long_inv_freq) != pairs:
            raise ValueError(f"length_rule.long_inv_freq must have rotary_dim // 2 = {pairs} entries")
        if self.length_rule is not None and self.num_axes != 1:
            raise ValueError("length_rule (dynamic NTK / LongRoPE) is only supported for one-axis specs")
        if self.length_rule is not None and not isinstance(self.length_rule, (DynamicNTK, LongRopeSwitch)):
            raise ValueError(f"length_rule must be DynamicNTK, LongRopeSwitch or None, got {type(self.length_rule).__name__}")
        set_("scaling", freeze(dict(self.scaling) if isinstance(self.scaling, Mapping) else thaw(self.scaling) or {}))
        if self.max_position_embeddings is not None:
            mpe = self.max_position_embeddings
            if isinstance(mpe, bool) or not isinstance(mpe, (int, np.integer)) or not 0 < mpe <= MAX_POSITIONS:
                raise ValueError(f"max_position_embeddings must be a positive int <= 2**40, got {mpe!r}")
            set_("max_position_embeddings", int(mpe))

    # ------------------------------------------------------------ properties
    @property
    def num_pairs(self) -> int:
        """P = rotary_dim // 2."""
        return self.rotary_dim // 2

    @property
    def scaling_dict(self) -> dict:
        """``scaling`` as a plain dict (rope_type and its parameters)."""
        return thaw(self.scaling) or {}

    def position_shape(self, batch: int, seq: int) -> tuple[int, ...]:
        """The shape of ``position_ids`` for this spec: ``(B, S)`` with one axis, ``(A, B, S)`` with A."""
        return (batch, seq) if self.num_axes == 1 else (self.num_axes, batch, seq)

    def pair_dims(self, i: int) -> tuple[int, int]:
        """The two dims of head_dim that pair ``i`` rotates (reads), in this layout."""
        return (i, i + self.num_pairs) if self.layout == "half" else (2 * i, 2 * i + 1)

    def output_dims(self, i: int) -> tuple[int, int]:
        """The two dims pair ``i`` is written to: `pair_dims`, but (i, i+P) for "interleaved_to_half"."""
        return (i, i + self.num_pairs) if self.layout == "interleaved_to_half" else self.pair_dims(i)

    def with_layout(self, layout: str) -> "RopeSpec":
        """The same rotation applied to the other dim pairing."""
        return dataclasses.replace(self, layout=layout)

    # ---------------------------------------------------------- constructors
    @classmethod
    def standard(
        cls,
        head_dim: int,
        theta: float = 10000.0,
        *,
        rotary_dim: int | None = None,
        partial_rotary_factor: float | None = None,
        layout: str = "half",
        name: str = "",
        max_position_embeddings: int | None = None,
    ) -> "RopeSpec":
        """1D RoPE over the first ``rotary_dim`` dims (default: all; or ``int(head_dim * factor)``).

        >>> RopeSpec.standard(128, 500000.0).num_pairs
        64
        """
        head_dim = _head_dim(head_dim)
        if rotary_dim is None:
            rotary_dim = int(head_dim * partial_rotary_factor) if partial_rotary_factor is not None else head_dim
        from . import frequencies as F  # torch: read and exported specs do not need it

        inv_freq, _ = F.default_inv_freq(theta, rotary_dim)
        return cls(
            head_dim=head_dim, rotary_dim=rotary_dim, inv_freq=tuple(inv_freq.tolist()), layout=layout,
            scaling={"rope_type": "default", "rope_theta": theta}, name=name,
            max_position_embeddings=max_position_embeddings,
        )

    @classmethod
    def axial_2d(
        cls,
        head_dim: int,
        theta: float = 10000.0,
        *,
        frequencies: str = "shared",
        layout: str = "half",
        column_first: bool = False,
        name: str = "",
    ) -> "RopeSpec":
        """2D RoPE for image patches; positions are ``[2, B, S]`` = (row, column).

        frequencies="shared": both axes use the table computed over ``head_dim // 2`` dims
        (Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision, Llama 4 vision); "interleaved": the 1D
        table over ``head_dim``, rows take its even entries, columns its odd ones (Pixtral).
        The first half of the pairs follows rows, the second half columns
        (``column_first=True`` swaps that, as Llama 4 vision does).

        >>> s = RopeSpec.axial_2d(64, frequencies="interleaved")
        >>> s.axis_of_pair[15:17]
        (0, 1)
        """
        head_dim = _head_dim(head_dim, multiple=4, why=" for 2D RoPE")
        pairs = head_dim // 2
        from . import frequencies as F

        inv_freq = F.axial_inv_freq(theta, head_dim, frequencies)
        axes = axial_axes(pairs, column_first=column_first)
        return cls(
            head_dim=head_dim, rotary_dim=head_dim, inv_freq=tuple(inv_freq.tolist()), layout=layout, num_axes=2,
            axis_of_pair=axes, name=name,
            scaling={"rope_type": "axial", "rope_theta": theta, "frequencies": frequencies, "column_first": column_first},
        )

    @classmethod
    def mrope(
        cls,
        head_dim: int,
        sections: Sequence[int],
        theta: float = 10000.0,
        *,
        interleaved: bool = False,
        layout: str = "half",
        inv_freq: Sequence[float] | None = None,
        attention_scaling: float = 1.0,
        name: str = "",
        max_position_embeddings: int | None = None,
    ) -> "RopeSpec":
        """Multi-axis RoPE (Qwen2-VL M-RoPE); positions are ``[A, B, S]`` with A = len(sections).

        ``sections`` counts pairs per axis. Contiguous (Qwen2-VL, Qwen2.5-VL): they must sum to
        ``head_dim // 2``; pairs ``[0, s0)`` follow axis 0, the next ``s1`` axis 1, ...
        Interleaved (Qwen3-VL): pair j follows axis ``a = j % A`` when ``a > 0`` and
        ``j < A * sections[a]``, else axis 0 (any sum). The frequency table is the 1D one, never
        restarted per section.

        >>> RopeSpec.mrope(128, [24, 20, 20], interleaved=True).axis_of_pair[:6]
        (0, 1, 2, 0, 1, 2)
        """
        head_dim = _head_dim(head_dim)  # before the sections: an odd width is the first thing wrong
        sections = [int(s) for s in sections]
        axes = mrope_axes(sections, interleaved=interleaved, pairs=head_dim // 2)
        if inv_freq is None:
            from . import frequencies as F

            inv_freq = F.default_inv_freq(theta, head_dim)[0].tolist()
        return cls(
            head_dim=head_dim, rotary_dim=head_dim, inv_freq=tuple(inv_freq), layout=layout, num_axes=len(sections),
            axis_of_pair=axes, attention_scaling=attention_scaling, name=name,
            scaling={"rope_type": "default", "rope_theta": theta, "mrope_section": sections, "mrope_interleaved": interleaved},
            max_position_embeddings=max_position_embeddings,
        )

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any] | str, part: str | None = None, *, layer_type: str | None = None,
                       name: str | None = None) -> "RopeSpec":
        """Build the spec from a Hugging Face ``config.json`` (a dict or a path).

        Args:
            cfg: the parsed config or the path of a config.json file.
            part: "text" (``text_config`` when nested), "vision", "memory_attention" (SAM 2 video) or a
                nested config's key path; default: text when the config has a decoder, else vision.
            layer_type: for decoders whose layer types use different rotaries (Gemma 3:
                "full_attention", "sliding_attention"), the one to describe; for one rotary
                applied two ways (DeepSeek V3.2: "attention", "indexer"), the use; required there.
            name: the spec's label; default: the config's ``_name_or_path`` (its last part), else
                its ``model_type``, with ``:vision`` for a vision part (`hf_config.default_name`).
        Raises:
            ValueError: naming the field or model type that is missing, unknown, inconsistent, or
                describes a rotary rope_export cannot represent exactly. Text decoders must be of
                a model type verified against its modeling code (``architectures.VERIFIED_TEXT``),
                or carry no ``model_type`` (then the generic rule applies: half layout, whole head).

        >>> spec = RopeSpec.from_hf_config({"hidden_size": 4096, "num_attention_heads": 32,
        ...     "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
        ...     "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
        >>> spec.head_dim, spec.scaling_dict["rope_type"]
        (128, 'llama3')
        """
        from .hf_config import default_name, load_config, spec_fields

        try:
            cfg = load_config(cfg)
            fields = spec_fields(cfg, part=part, layer_type=layer_type)
            return cls(**fields, name=default_name(cfg, part) if name is None else name)
        except RecursionError:
            raise ValueError("config: nested too deeply to be a config.json") from None

    # ------------------------------------------------------------ round trip
    def to_dict(self) -> dict:
        """A JSON-ready dict; `from_dict` inverts it exactly."""
        out = {
            "head_dim": self.head_dim,
            "rotary_dim": self.rotary_dim,
            "layout": self.layout,
            "num_axes": self.num_axes,
            "axis_of_pair": list(self.axis_of_pair),
            "inv_freq": list(self.inv_freq),
            "attention_scaling": self.attention_scaling,
            "length_rule": None,
            "scaling": self.scaling_dict,
            "max_position_embeddings": self.max_position_embeddings,
            "name": self.name,
        }
        if self.length_rule is not None:
            rule = dataclasses.asdict(self.length_rule)
            if "long_inv_freq" in rule:
                rule["long_inv_freq"] = list(rule["long_inv_freq"])
            out["length_rule"] = rule
        return out

    def to_json(self) -> str:
        """Compact, key-sorted JSON (deterministic)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> "RopeSpec":
        """Inverse of `to_dict` (also accepts the JSON text).

        Raises:
            ValueError: not JSON, not an object, unknown fields, or fields of the wrong type.
        """
        try:
            if isinstance(data, str):
                data = json.loads(data)
            if not isinstance(data, Mapping):
                raise ValueError(f"RopeSpec: expected an object of fields, got {type(data).__name__}")
            unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"unknown RopeSpec fields: {sorted(unknown)}")
            data = {**data, "length_rule": rule_from_dict(data.get("length_rule"))}
            for key in ("inv_freq", "axis_of_pair"):
                if key in data:
                    if not isinstance(data[key], (list, tuple)):
                        raise ValueError(f"{key} must be a list, got {type(data[key]).__name__}")
                    data[key] = tuple(data[key])
            return cls(**data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"RopeSpec JSON: {exc}") from None
        except RecursionError:
            raise ValueError("RopeSpec: nested too deeply") from None
        except TypeError as exc:  # a field of the wrong type deep inside
            raise ValueError(f"RopeSpec: a field has the wrong type ({exc})") from None

    def describe(self) -> str:
        """One human line: variant, axes, layout, scaling."""
        kind = self.scaling_dict.get("rope_type", "custom")
        if self.length_rule is not None:
            kind = self.length_rule.kind
        return (
            f"{self.name or 'rope'}: head_dim={self.head_dim} rotary_dim={self.rotary_dim} layout={self.layout} "
            f"axes={self.num_axes} scaling={kind} attention_scaling={self.attention_scaling:g}"
        )


def _head_dim(value, multiple: int = 2, why: str = "") -> int:
    """A constructor's head_dim, checked before anything is computed from it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < value <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be a positive int <= {MAX_HEAD_DIM}, got {value!r}")
    if value % multiple:
        raise ValueError(f"head_dim must be {'even' if multiple == 2 else f'a multiple of {multiple}'}{why}, got {value}")
    return int(value)
