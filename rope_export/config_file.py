"""A model's config.json: loaded (with the checks a file from the internet needs) and split into
its parts (decoder, vision encoder, any nested config by key path) and layer types.

Example:
    >>> select_part({"model_type": "qwen2_vl", "text_config": {"num_attention_heads": 28}}, None)[0]
    'text'
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from .architectures import ALTERNATING_2D_TEXT, KEY_NAMES, VISION_FAMILIES

__all__ = ["load_config", "select_part", "layer_types_of", "is_vision", "has_memory_attention", "MAX_CONFIG_BYTES"]

MAX_CONFIG_BYTES = 16 << 20


def load_config(cfg: Mapping[str, Any] | str | os.PathLike) -> dict:
    """A config as a dict: the mapping itself, or the parsed JSON file at that path."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    path = os.fspath(cfg)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"config: no such file {path!r}")
    if not os.path.isfile(path):  # /dev/zero, a FIFO: nothing a config.json is, and it may never end
        raise ValueError(f"config: {path!r} is not a regular file")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ValueError(f"config: {path!r} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config.json is a few KB")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config: {path!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"config: {path!r} must hold a JSON object")
    if "rope_export_preset" in data or ("config" in data and "source" in data and isinstance(data["config"], dict)):
        raise ValueError(f"config: {path!r} is a rope_export preset file, not a model config; use --preset NAME, "
                         "or pass its \"config\" object (the model's own config.json is at its \"source\")")
    return data


def select_part(cfg: Mapping[str, Any], part: str | None) -> tuple[str, dict, dict]:
    """(kind, sub-config, parent config): kind is "text" or "vision" (which rule reads it).

    ``part``: "text" (the decoder: ``text_config`` when nested), "vision" (``vision_config``),
    "memory_attention" (SAM 2 video's, 2D over the memory's feature grid; kind "vision"),
    None (text when the config has a decoder, else vision), or the dotted path of any nested
    config (``"audio_config"``, ``"thinker_config.text_config"``), read by its model_type.
    """
    if not isinstance(part, (str, type(None))) or part == "":
        raise ValueError(f"part must be 'text', 'vision', a nested config's key path or None, got {part!r}")
    parent = dict(cfg)
    if part == "memory_attention":  # SAM 2 video: its memory attention's fields sit in the root config
        if not has_memory_attention(cfg):
            raise ValueError("part='memory_attention' asked, but the config has no memory_attention_hidden_size (SAM 2 video)")
        return "vision", parent, parent
    if part not in (None, "text", "vision"):
        sub: Any = cfg
        for key in part.split("."):
            if not isinstance(sub, Mapping) or not isinstance(sub.get(key), Mapping):
                raise ValueError(f"part {part!r}: the config has no nested config at {key!r} "
                                 "(part is 'text', 'vision' or the key path of a nested config)")
            sub = sub[key]
        sub = dict(sub)
        kind = "vision" if str(sub.get("model_type", "")) in VISION_FAMILIES or is_vision(sub) else "text"
        return kind, sub, parent
    if part is None:
        cfg = _renamed_keys(cfg)
        if "text_config" in cfg or any(k in cfg for k in ("num_attention_heads", "n_head")) and not is_vision(cfg):
            part = "text"
        elif "vision_config" in cfg or is_vision(cfg):
            part = "vision"
        else:
            raise ValueError("config: found neither a decoder (num_attention_heads) nor a vision_config")
    if part == "text":
        cfg = _renamed_keys(cfg)
        if "text_config" in cfg and isinstance(cfg["text_config"], Mapping):
            # Nested configs keep some rope fields at top level (older Qwen2.5-VL files): inherit them.
            top = {k: v for k, v in cfg.items() if k not in ("text_config", "vision_config")}
            return part, {**top, **cfg["text_config"]}, parent
        if is_vision(cfg) or not any(k in cfg for k in ("num_attention_heads", "n_head")):
            raise ValueError("config: part='text' asked, but the config has no decoder (num_attention_heads)")
        return part, dict(cfg), parent
    if "vision_config" in cfg and isinstance(cfg["vision_config"], Mapping):
        return part, dict(cfg["vision_config"]), parent
    if is_vision(cfg):
        return part, dict(cfg), parent
    raise ValueError("config: part='vision' asked, but the config has no vision_config")


def has_memory_attention(cfg: Mapping[str, Any]) -> bool:
    """SAM 2 video's configs: the memory attention's fields sit in the root config."""
    return "memory_attention_hidden_size" in cfg


def _renamed_keys(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config under the standard key names, for the model types that use their own
    (transformers' ``attribute_map``: DBRX's ``n_heads``, Moonshine's decoder heads)."""
    renames = KEY_NAMES.get(str(cfg.get("model_type", "")))
    if not renames:
        return cfg
    out = {**cfg, **{new: cfg[old] for old, new in renames.items() if old in cfg}}
    attn = cfg.get("attn_config")
    if cfg.get("model_type") == "dbrx" and isinstance(attn, Mapping) and attn.get("rope_theta") is not None:
        # DBRX's own files keep the base in attn_config (databricks/dbrx-instruct: 500000), as vLLM
        # reads it; transformers 5.23 ignores it there and rotates with rope_parameters' (10000).
        params = cfg.get("rope_parameters") or {}
        if params.get("rope_theta") not in (None, attn["rope_theta"]):
            raise ValueError(f"dbrx: attn_config.rope_theta {attn['rope_theta']} and rope_parameters.rope_theta "
                             f"{params['rope_theta']} disagree (a file re-saved by transformers 5, which ignores "
                             "attn_config's); set rope_parameters.rope_theta to the base the model was trained with")
        out["rope_theta"] = attn["rope_theta"]
    return out


def is_vision(cfg: Mapping[str, Any]) -> bool:
    mt = str(cfg.get("model_type", ""))
    if mt in ALTERNATING_2D_TEXT:
        return False
    return mt in ("pixtral", "llama4_vision_model") or mt.endswith("_vision") or ("vision_config" not in cfg and "patch_size" in cfg)


def layer_types_of(cfg: Mapping[str, Any]) -> list[str]:
    """The layer types whose rotary differs (Gemma 3 style), or [] when one rotary serves every layer.

    transformers 5 writes them as ``rope_parameters = {layer_type: {...}}`` (``null`` for a type
    whose layers have no rotary, as Beam's full-attention layers); older Gemma 3 files give the
    local layers' base as ``rope_local_base_freq``.
    """
    params = cfg.get("rope_parameters")
    if (isinstance(params, Mapping) and any(isinstance(v, Mapping) for v in params.values())
            and all(isinstance(v, Mapping) or v is None for v in params.values())):
        return sorted(k for k, v in params.items() if v is not None)
    if cfg.get("rope_local_base_freq") is not None:
        return ["full_attention", "sliding_attention"]
    return []
