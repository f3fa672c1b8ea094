"""The rope fields of one (flat) config: its rope block (``rope_scaling`` / ``rope_parameters``,
top-level ``rope_theta`` and ``partial_rotary_factor``), checked; the block in force for one
layer type; the head width; and the top-level fields older VLM files keep beside a text_config.

`rope_export.hf_config` turns them into `RopeSpec` fields.

    >>> rope_params({"rope_scaling": {"type": "linear", "factor": 2.0}})["rope_type"]
    'linear'
"""

from __future__ import annotations

from typing import Any, Mapping

from . import frequencies as F
from .architectures import LEGACY_LABELS, TOP_LEVEL_TEXT_ROPE, default_theta
from .config_file import layer_types_of
from .spec import MAX_HEAD_DIM
from .values import positive_int, positive_number

__all__ = ["rope_params", "layer_params", "head_dim_of", "bounded_dim", "check_top_level_rope", "ROPE_TYPE_NAMES",
           "TWO_BLOCKS_RULE_PROVEN_ON"]

ROPE_TYPE_NAMES = tuple(F.ROPE_TYPES)
# A config with both rope_scaling and rope_parameters: transformers' rule (rope_scaling wins,
# whole), read in configuration_utils / modeling_rope_utils and checked against LlamaConfig and
# AutoConfig on each of these releases (tests/test_hf_config.py runs it on the installed one).
TWO_BLOCKS_RULE_PROVEN_ON = ("5.23.0", "5.25.0")
_ALIASES = {"su": "longrope", "mrope": "default", None: "default"}


def layer_params(cfg: Mapping[str, Any], layer_type: str | None) -> dict:
    """The rope fields in force for ``layer_type`` (a flat view of the config)."""
    types = layer_types_of(cfg)
    if not types:
        if layer_type is not None:
            raise ValueError(f"layer_type {layer_type!r} given, but this config has one rotary for every layer")
        return dict(cfg)
    if layer_type is None:
        raise ValueError(f"this config has a different rotary per layer type ({', '.join(types)}): "
                         "pass layer_type= and export one graph per type")
    if layer_type not in types:
        if layer_type in (cfg.get("rope_parameters") or {}):
            raise ValueError(f"layer_type {layer_type!r}: rope_parameters[{layer_type!r}] is null, these layers have "
                             "no rotary (no position embedding) and need no export")
        raise ValueError(f"layer_type {layer_type!r} is not one of this config's layer types ({', '.join(types)})")
    flat = {k: v for k, v in cfg.items() if k not in ("rope_parameters", "rope_scaling")}
    head_dims = _layer_head_dims(cfg, layer_type)
    if len(head_dims) > 1:
        raise ValueError(f"per_layer_config: the {layer_type} layers have different head_dim values {sorted(head_dims)}")
    if head_dims:
        flat["head_dim"] = head_dims.pop()
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping) and layer_type in params:
        flat["rope_parameters"] = dict(params[layer_type])
    elif layer_type == "sliding_attention":  # old Gemma 3 files: local layers use plain RoPE at their own base
        flat["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_local_base_freq"]}
    else:
        flat["rope_scaling"] = cfg.get("rope_scaling")
    return flat


def _layer_head_dims(cfg: Mapping[str, Any], layer_type: str) -> set:
    """head_dim overrides of the layers of one type (Gemma 4: full-attention layers are wider,
    as ``global_head_dim`` or ``per_layer_config``)."""
    if layer_type == "full_attention" and cfg.get("global_head_dim"):
        return {int(cfg["global_head_dim"])}
    layer_types, overrides = cfg.get("layer_types"), cfg.get("per_layer_config")
    if not isinstance(layer_types, list) or not isinstance(overrides, Mapping):
        return set()
    dims = set()
    for index, kind in enumerate(layer_types):
        if kind == layer_type:
            override = next((v for k, v in overrides.items() if str(k).isdigit() and int(k) == index), {})
            dims.add(int(override.get("head_dim") or head_dim_of(cfg)))
    return dims


# Numeric rope fields and what they must be: a number > 0, >= 0, an int > 0, or a list of numbers.
_POSITIVE = ("rope_theta", "factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "alpha",
             "attention_factor")
_NON_NEGATIVE = ("mscale", "mscale_all_dim")
_POSITIVE_INT = ("original_max_position_embeddings",)
_NUMBER_LISTS = ("short_factor", "long_factor")


def _check_numbers(params: Mapping[str, Any], where: str) -> None:
    for key in _POSITIVE:
        if params.get(key) is not None:
            positive_number(params[key], f"{where}.{key}")
    for key in _NON_NEGATIVE:
        value = params.get(key)
        if value is not None and value != 0:
            positive_number(value, f"{where}.{key}")
    for key in _POSITIVE_INT:
        if params.get(key) is not None:
            positive_int(params[key], f"{where}.{key}")
    for key in _NUMBER_LISTS:
        if params.get(key) is not None:
            if not isinstance(params[key], list):
                raise ValueError(f"{where}.{key} must be a list of numbers, got {type(params[key]).__name__}")
            for v in params[key]:
                positive_number(v, f"{where}.{key}[]")
    section = params.get("mrope_section")
    if section is not None and (not isinstance(section, list) or
                                any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in section)):
        raise ValueError(f"{where}.mrope_section must be a list of non-negative ints, got {section!r}")


def rope_params(cfg: Mapping[str, Any], kind: str = "text") -> dict:
    """The rope fields of a (flat) config: its ``rope_scaling`` block, else its ``rope_parameters``
    block, with the top-level ``rope_theta`` / ``partial_rotary_factor`` where the block has none.

    Where a file has both blocks, transformers takes ``rope_scaling`` whole and ignores
    ``rope_parameters`` (``rope_parameters = rope_scaling or rope_parameters``;
    `TWO_BLOCKS_RULE_PROVEN_ON`): so does rope_export.
    """
    for key in ("rope_scaling", "rope_parameters"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{key} must be an object (or null), got {type(value).__name__}")
    block = "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"
    params = dict(cfg.get(block) or {})
    _check_numbers(params, block)
    theta = params.get("rope_theta", cfg.get("rope_theta", cfg.get("rotary_emb_base")))
    # Named nowhere: the config class's default, as transformers fills it in (Mixtral: 1e6).
    params["rope_theta"] = (positive_number(theta, "rope_theta") if theta is not None
                            else default_theta(str(cfg.get("model_type", "")), kind))
    prf = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", cfg.get("rotary_pct")))
    if prf is not None:
        params["partial_rotary_factor"] = positive_number(prf, "partial_rotary_factor")
        if params["partial_rotary_factor"] > 1:
            raise ValueError(f"partial_rotary_factor must be in (0, 1], got {prf!r}")
    raw_type = params.get("rope_type", params.get("type"))
    if raw_type is not None and not isinstance(raw_type, str):
        raise ValueError(f"rope_scaling.rope_type must be a string, got {type(raw_type).__name__} {raw_type!r}")
    raw_type = LEGACY_LABELS.get(str(cfg.get("model_type", "")), {}).get(raw_type, raw_type)  # Phi-3's "yarn" is LongRoPE
    if raw_type == "dynamic" and params.get("alpha"):
        raw_type = "ntk_alpha"  # HunYuan: "dynamic" with a fixed alpha is a static, stretched base
    if raw_type not in _ALIASES and raw_type not in F.ROPE_TYPES and raw_type != "axial":
        raise ValueError(f"rope_scaling.rope_type: unknown rope type {raw_type!r}; supported: {', '.join(ROPE_TYPE_NAMES)}")
    params["rope_type"] = _ALIASES.get(raw_type, raw_type)
    return params


# The decoder's rope fields that files of older releases keep at the top level.
_TOP_LEVEL_ROPE_FIELDS = ("rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor")


def check_top_level_rope(cfg: Mapping[str, Any], sub: Mapping[str, Any]) -> None:
    """A family whose older files keep the decoder's rope fields at the top level
    (`architectures.TOP_LEVEL_TEXT_ROPE`) with a ``text_config`` beside them: transformers 5
    reads the text_config alone, a reader of the older layout the top level. Both readings
    must agree, or the file is refused naming both."""
    text = cfg.get("text_config")
    if not isinstance(text, Mapping) or str(cfg.get("model_type", "")) not in TOP_LEVEL_TEXT_ROPE:
        return
    top = {k: cfg[k] for k in _TOP_LEVEL_ROPE_FIELDS if cfg.get(k) is not None}
    if not top:
        return
    nested = {k: sub[k] for k in _TOP_LEVEL_ROPE_FIELDS if sub.get(k) is not None}
    model_type = sub.get("model_type", "")
    theirs = rope_params({**top, "model_type": model_type})
    ours = rope_params({**nested, "model_type": model_type})
    # Every rope quantity the top level names (its block's fields, rope_theta, partial_rotary_factor)
    # must read as the text_config's; what it does not name, it does not contradict.
    named = {k for block in ("rope_scaling", "rope_parameters") for k in (top.get(block) or {})} | (set(top) & {
        "rope_theta", "partial_rotary_factor"})
    named = {"rope_type" if k == "type" else k for k in named}
    if any(theirs.get(k) != ours.get(k) for k in named):
        raise ValueError(f"{cfg['model_type']}: the top level's rope fields {top} change what text_config's "
                         f"{nested or '(none)'} say: transformers 5 reads text_config alone, files of older releases "
                         "the top level; make them agree")


def head_dim_of(cfg: Mapping[str, Any], width_keys=("hidden_size", "n_embd"), head_keys=("num_attention_heads", "n_head")) -> int:
    """``head_dim`` of a (sub-)config, or the attention width over the head count; at most
    `spec.MAX_HEAD_DIM` (checked before anything is sized by it)."""
    if cfg.get("head_dim"):
        return bounded_dim(positive_int(cfg["head_dim"], "head_dim"), "head_dim")
    width_key = next((k for k in width_keys if cfg.get(k)), None)
    head_key = next((k for k in head_keys if cfg.get(k)), None)
    if width_key is None or head_key is None:
        raise ValueError(f"config: head_dim is missing and cannot be derived ({'/'.join(width_keys)} and {'/'.join(head_keys)} needed)")
    return bounded_dim(positive_int(cfg[width_key], width_key) // positive_int(cfg[head_key], head_key),
                       f"{width_key} / {head_key}")


def bounded_dim(value: int, name: str) -> int:
    """``value``, if a head width no larger than `spec.MAX_HEAD_DIM`."""
    if value > MAX_HEAD_DIM:
        raise ValueError(f"{name} gives a head of {value} dims, more than rope_export takes ({MAX_HEAD_DIM}; the widest "
                         "model head is 512)")
    return value
