"""Read the rotary description out of the config.json files models really publish.

Handles: nested ``text_config`` / ``vision_config``; the old ``rope_scaling`` + top-level
``rope_theta`` keys and the new ``rope_parameters`` dict; ``partial_rotary_factor`` /
``rotary_pct`` / GPT-J's ``rotary_dim``; ``head_dim`` vs ``hidden_size / heads``; vision
configs whose ``hidden_size`` is the projector width, not the attention width (Qwen2-VL).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from . import frequencies as F
from .spec import DynamicNTK, LongRopeSwitch

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope", "proportional")
_ALIASES = {"su": "longrope", "mrope": "default", None: "default"}
_INTERLEAVED_TEXT = {"gptj", "codegen"}
_INTERLEAVED_MROPE = {"qwen3_vl", "qwen3_vl_moe", "qwen3_vl_text", "qwen3_vl_moe_text"}
_DEFAULT_MROPE_SECTION = {"qwen2_vl": [16, 24, 24], "qwen2_5_vl": [16, 24, 24], "qwen2_vl_text": [16, 24, 24], "qwen2_5_vl_text": [16, 24, 24], "qwen3_vl": [24, 20, 20], "qwen3_vl_moe": [24, 20, 20],
                          "qwen3_vl_text": [24, 20, 20], "qwen3_vl_moe_text": [24, 20, 20]}
_VISION_FAMILIES = {
    "pixtral": "pixtral",
    "llava": "pixtral",
    "mistral3": "pixtral",
    "llama4_vision_model": "llama4",
    "llama4": "llama4",
    "qwen2_vl": "qwen_vl",
    "qwen2_5_vl": "qwen_vl",
    "qwen3_vl": "qwen_vl",
    "qwen3_vl_moe": "qwen_vl",
    "qwen2_vl_vision": "qwen_vl",
    "qwen2_5_vl_vision": "qwen_vl",
    "qwen3_vl_vision": "qwen_vl",
    "qwen3_vl_moe_vision": "qwen_vl",
}


def load_config(cfg: Mapping[str, Any] | str | os.PathLike) -> dict:
    """A config as a dict: the mapping itself, or the parsed JSON file at that path."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    path = os.fspath(cfg)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"config: no such file {path!r}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config: {path!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"config: {path!r} must hold a JSON object")
    return data


def select_part(cfg: Mapping[str, Any], part: str | None) -> tuple[str, dict, dict]:
    """(part, sub-config, parent config) for part in {"text", "vision", None}."""
    if part not in (None, "text", "vision"):
        raise ValueError(f"part must be 'text', 'vision' or None, got {part!r}")
    parent = dict(cfg)
    if part is None:
        if "text_config" in cfg or any(k in cfg for k in ("num_attention_heads", "n_head")) and not _is_vision(cfg):
            part = "text"
        elif "vision_config" in cfg or _is_vision(cfg):
            part = "vision"
        else:
            raise ValueError("config: found neither a decoder (num_attention_heads) nor a vision_config")
    if part == "text":
        if "text_config" in cfg and isinstance(cfg["text_config"], Mapping):
            # Nested configs keep some rope fields at top level (older Qwen2.5-VL files): inherit them.
            top = {k: v for k, v in cfg.items() if k not in ("text_config", "vision_config")}
            return part, {**top, **cfg["text_config"]}, parent
        if _is_vision(cfg) or not any(k in cfg for k in ("num_attention_heads", "n_head")):
            raise ValueError("config: part='text' asked, but the config has no decoder (num_attention_heads)")
        return part, dict(cfg), parent
    if "vision_config" in cfg and isinstance(cfg["vision_config"], Mapping):
        return part, dict(cfg["vision_config"]), parent
    if _is_vision(cfg):
        return part, dict(cfg), parent
    raise ValueError("config: part='vision' asked, but the config has no vision_config")


def _is_vision(cfg: Mapping[str, Any]) -> bool:
    mt = str(cfg.get("model_type", ""))
    return mt in ("pixtral", "llama4_vision_model") or mt.endswith("_vision") or ("vision_config" not in cfg and "patch_size" in cfg)


def _rope_params(cfg: Mapping[str, Any]) -> dict:
    """Merge new-style ``rope_parameters`` and old-style ``rope_scaling`` + top-level keys."""
    params: dict = {}
    for key in ("rope_scaling", "rope_parameters"):
        value = cfg.get(key)
        if isinstance(value, Mapping):
            params.update(value)
    theta = params.get("rope_theta", cfg.get("rope_theta", cfg.get("rotary_emb_base")))
    params["rope_theta"] = float(theta) if theta is not None else 10000.0
    prf = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", cfg.get("rotary_pct")))
    if prf is not None:
        params["partial_rotary_factor"] = float(prf)
    raw_type = params.get("rope_type", params.get("type"))
    if cfg.get("model_type") == "phi3" and raw_type == "yarn":
        raw_type = "longrope"  # Phi-3's reference code reads its legacy "yarn" label as LongRoPE
    if raw_type not in _ALIASES and raw_type not in ROPE_TYPES and raw_type != "axial":
        raise ValueError(f"rope_scaling.rope_type: unknown rope type {raw_type!r}; supported: {', '.join(ROPE_TYPES)}")
    params["rope_type"] = _ALIASES.get(raw_type, raw_type)
    return params


def _require(params: Mapping[str, Any], key: str, rope_type: str) -> Any:
    if params.get(key) is None:
        raise ValueError(f"rope_scaling.{key} is required for rope_type {rope_type!r}")
    return params[key]


def _head_dim(cfg: Mapping[str, Any], width_keys=("hidden_size", "n_embd"), head_keys=("num_attention_heads", "n_head")) -> int:
    if cfg.get("head_dim"):
        return int(cfg["head_dim"])
    width = next((cfg[k] for k in width_keys if cfg.get(k)), None)
    heads = next((cfg[k] for k in head_keys if cfg.get(k)), None)
    if width is None or heads is None:
        raise ValueError(f"config: head_dim is missing and cannot be derived ({'/'.join(width_keys)} and {'/'.join(head_keys)} needed)")
    return int(width) // int(heads)


def spec_from_hf_config(cls, cfg, part=None, name=""):
    cfg = load_config(cfg)
    part, sub, parent = select_part(cfg, part)
    if part == "vision":
        return _vision_spec(cls, sub, parent, name)
    return _text_spec(cls, sub, name)


def _text_spec(cls, cfg: dict, name: str):
    params = _rope_params(cfg)
    rope_type = params["rope_type"]
    if rope_type == "axial":
        raise ValueError("rope_scaling.rope_type 'axial' belongs to vision encoders: use part='vision'")
    model_type = str(cfg.get("model_type", ""))
    head_dim = _head_dim(cfg)
    theta = params["rope_theta"]
    prf = params.get("partial_rotary_factor")
    if "rotary_dim" in cfg and cfg["rotary_dim"] is not None:  # GPT-J / CodeGen
        dim = int(cfg["rotary_dim"])
    else:
        dim = int(head_dim * prf) if prf is not None else head_dim
    max_pos = cfg.get("max_position_embeddings", cfg.get("n_positions"))
    layout = "interleaved" if model_type in _INTERLEAVED_TEXT else "half"
    length_rule = None
    scaling = {k: v for k, v in params.items() if k != "type"}

    if rope_type == "default":
        inv_freq, attn = F.default_inv_freq(theta, dim)
    elif rope_type == "linear":
        inv_freq, attn = F.linear_inv_freq(theta, dim, float(_require(params, "factor", rope_type)))
    elif rope_type == "dynamic":
        factor = float(_require(params, "factor", rope_type))
        if max_pos is None:
            raise ValueError("max_position_embeddings is required for rope_type 'dynamic'")
        inv_freq, attn = F.default_inv_freq(theta, dim)
        length_rule = DynamicNTK(theta=theta, factor=factor, max_position_embeddings=int(max_pos))
    elif rope_type == "yarn":
        if "factor" not in params:
            raise ValueError("rope_scaling.factor is required for rope_type 'yarn'")
        original = params.get("original_max_position_embeddings") or max_pos
        if original is None:
            raise ValueError("rope_scaling.original_max_position_embeddings is required for rope_type 'yarn'")
        factor = params["factor"]
        if factor is None:
            factor = max_pos / original
        inv_freq, attn = F.yarn_inv_freq(
            theta, dim, float(factor), int(original),
            beta_fast=params.get("beta_fast"), beta_slow=params.get("beta_slow"), mscale=params.get("mscale"),
            mscale_all_dim=params.get("mscale_all_dim"), attention_factor=params.get("attention_factor"),
            truncate=params.get("truncate", True),
        )
    elif rope_type == "llama3":
        inv_freq, attn = F.llama3_inv_freq(
            theta, dim, float(_require(params, "factor", rope_type)),
            float(_require(params, "low_freq_factor", rope_type)), float(_require(params, "high_freq_factor", rope_type)),
            int(params.get("original_max_position_embeddings") or _require(params, "original_max_position_embeddings", rope_type)),
        )
    elif rope_type == "longrope":
        # Phi-3 keeps original_max_position_embeddings at top level; the reference prefers it there.
        original = cfg.get("original_max_position_embeddings") or params.get("original_max_position_embeddings")
        if original is None:
            raise ValueError("rope_scaling.original_max_position_embeddings is required for rope_type 'longrope'")
        short = _require(params, "short_factor", rope_type)
        long = _require(params, "long_factor", rope_type)
        factor = params.get("factor")
        if factor is None:
            if max_pos is None:
                raise ValueError("max_position_embeddings is required for rope_type 'longrope' without rope_scaling.factor")
            factor = max_pos / original
        kw = dict(factor=float(factor), original_max_position_embeddings=int(original), attention_factor=params.get("attention_factor"))
        inv_freq, attn = F.longrope_inv_freq(theta, dim, short, **kw)
        long_inv, _ = F.longrope_inv_freq(theta, dim, long, **kw)
        length_rule = LongRopeSwitch(original_max_position_embeddings=int(original), long_inv_freq=tuple(long_inv.tolist()))
        scaling["original_max_position_embeddings"] = int(original)
    elif rope_type == "proportional":
        inv_freq, attn = F.proportional_inv_freq(theta, head_dim, prf if prf is not None else 1.0, float(params.get("factor", 1.0)))
        dim = head_dim
    else:  # pragma: no cover - _rope_params already rejected it
        raise ValueError(f"rope_scaling.rope_type: unknown rope type {rope_type!r}")

    # Qwen-VL reference code falls back to a per-model section when the config names none.
    section = params.get("mrope_section") or _DEFAULT_MROPE_SECTION.get(model_type)
    common = dict(name=name, max_position_embeddings=int(max_pos) if max_pos is not None else None)
    if section is not None:
        if length_rule is not None:
            raise ValueError(f"rope_type {rope_type!r} with mrope_section is not supported")
        if dim != head_dim:
            raise ValueError("mrope_section with partial rotary is not supported")
        interleaved = bool(params.get("mrope_interleaved", model_type in _INTERLEAVED_MROPE))
        spec = cls.mrope(head_dim, section, theta, interleaved=interleaved, layout=layout, inv_freq=inv_freq.tolist(),
                         attention_scaling=attn, **common)
        return _with_scaling(spec, {**scaling, "mrope_section": list(section), "mrope_interleaved": interleaved})
    return cls(head_dim=head_dim, rotary_dim=dim, inv_freq=tuple(inv_freq.tolist()), layout=layout,
               attention_scaling=attn, length_rule=length_rule, scaling=scaling, **common)


def _with_scaling(spec, scaling):
    import dataclasses

    return dataclasses.replace(spec, scaling=scaling)


def _vision_spec(cls, cfg: dict, parent: dict, name: str):
    model_type = str(cfg.get("model_type") or parent.get("model_type") or "")
    family = _VISION_FAMILIES.get(model_type)
    if family is None:
        raise ValueError(
            f"vision_config.model_type {model_type!r} is not a supported vision encoder "
            f"(supported: pixtral, llama4, qwen2_vl, qwen2_5_vl, qwen3_vl)"
        )
    params = _rope_params(cfg)
    theta = params["rope_theta"]
    if family == "pixtral":
        head_dim = _head_dim(cfg)
        spec = cls.axial_2d(head_dim, theta, frequencies="interleaved", layout="half", name=name)
    elif family == "llama4":
        # Meta's complex code pairs consecutive dims and puts the column (x) angles first.
        head_dim = int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
        spec = cls.axial_2d(head_dim, theta, frequencies="shared", layout="interleaved", column_first=True, name=name)
    else:
        # Qwen2-VL's vision hidden_size is the projector width; embed_dim is the attention width.
        width = cfg.get("embed_dim") or cfg.get("hidden_size")
        heads = cfg.get("num_heads") or cfg.get("num_attention_heads")
        if width is None or heads is None:
            raise ValueError("vision_config: embed_dim/hidden_size and num_heads are required")
        head_dim = int(cfg.get("head_dim") or int(width) // int(heads))
        spec = cls.axial_2d(head_dim, theta, frequencies="shared", layout="half", name=name)
    return _with_scaling(spec, {**spec.scaling_dict, "family": family, "model_type": model_type})
