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

from .architectures import ALTERNATING_2D_TEXT, KEY_NAMES, NESTED_THETA, ROPE_LABELS, VISION_ENCODER_TYPES, VISION_FAMILIES

__all__ = ["load_config", "select_part", "layer_types_of", "is_vision", "has_memory_attention", "MAX_CONFIG_BYTES",
           "PART_ALIASES"]

MAX_CONFIG_BYTES = 16 << 20


def load_config(cfg: Mapping[str, Any] | str | os.PathLike) -> dict:
    """A config as a dict: the mapping itself, a transformers config object's ``to_dict()``, or
    the parsed JSON file at that path."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if callable(getattr(cfg, "to_dict", None)) and not isinstance(cfg, (str, os.PathLike)):
        data = cfg.to_dict()  # a transformers PretrainedConfig: the config.json it saves
        if not isinstance(data, Mapping):
            raise ValueError(f"config: {type(cfg).__name__}.to_dict() gave {type(data).__name__}, not a dict")
        return dict(data)
    if not isinstance(cfg, (str, os.PathLike)):
        raise ValueError(f"config must be a dict, a transformers config or a config.json path, got {type(cfg).__name__}")
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
    except RecursionError:
        raise ValueError(f"config: {path!r} nests its JSON too deeply to be a config.json") from None
    if not isinstance(data, dict):
        raise ValueError(f"config: {path!r} must hold a JSON object")
    if "rope_export_preset" in data or ("config" in data and "source" in data and isinstance(data["config"], dict)):
        raise ValueError(f"config: {path!r} is a rope_export preset file, not a model config; use --preset NAME, "
                         "or pass its \"config\" object (the model's own config.json is at its \"source\")")
    return data


# A part's key path that means the same as the part's name.
PART_ALIASES = {"text_config": "text", "vision_config": "vision"}


def select_part(cfg: Mapping[str, Any], part: str | None) -> tuple[str, dict, dict]:
    """(kind, sub-config, parent config): kind is "text" or "vision" (which rule reads it).

    ``part``: "text" (the decoder: ``text_config`` when nested; "text_config" means the same),
    "vision" (``vision_config``; "vision_config" the same), "memory_attention" (SAM 2 video's,
    2D over the memory's feature grid; kind "vision"), "root" (the root config's own rotary
    where it also nests a decoder: MusicFlamingo's audio clock), None (text when the config has
    a decoder, else vision), or the dotted path of any nested config (``"audio_config"``,
    ``"thinker_config.text_config"``), read by its model_type.

    A nested ``text_config`` is read alone, as transformers 5 reads it: fields beside it belong
    to the root model (MusicFlamingo's top-level ``head_dim`` and ``rope_parameters`` are its audio
    clock's). Only its ``model_type`` is taken from the root when it names none. Families whose
    older files keep the decoder's rope fields at the top level (`architectures.TOP_LEVEL_TEXT_ROPE`)
    are checked by `rope_export.hf_config`: a top-level value the text_config does not repeat
    is an error naming both.
    """
    if not isinstance(part, (str, type(None))) or part == "":
        raise ValueError(f"part must be 'text', 'vision', 'root', a nested config's key path or None, got {part!r}")
    part = PART_ALIASES.get(part, part)
    parent = dict(cfg)
    if part == "memory_attention":  # SAM 2 video: its memory attention's fields sit in the root config
        if not has_memory_attention(cfg):
            raise ValueError("part='memory_attention' asked, but the config has no memory_attention_hidden_size (SAM 2 video)")
        return "vision", parent, parent
    if part == "root":
        root = {k: v for k, v in _renamed_keys(cfg).items() if not isinstance(v, Mapping) or k.endswith("_parameters")
                or k in ("rope_scaling", "attn_config")}
        return ("vision" if is_vision(root) else "text"), root, parent
    if part not in (None, "text", "vision"):
        sub: Any = cfg
        for key in part.split("."):
            if not isinstance(sub, Mapping) or not isinstance(sub.get(key), Mapping):
                raise ValueError(f"part {part!r}: the config has no nested config at {key!r} "
                                 "(part is 'text', 'vision', 'root' or the key path of a nested config)")
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
            sub = _renamed_keys(dict(cfg["text_config"]))
            if not sub.get("model_type") and cfg.get("model_type"):
                sub["model_type"] = cfg["model_type"]  # read as the family's "<type>_text" decoder
            return part, dict(sub), parent
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
    model_type = str(cfg.get("model_type", ""))
    if model_type not in KEY_NAMES and model_type not in NESTED_THETA:
        return cfg
    out = {**cfg, **{new: cfg[old] for old, new in KEY_NAMES.get(model_type, {}).items() if old in cfg}}
    nested = cfg.get(NESTED_THETA.get(str(cfg.get("model_type", "")), ""))
    if isinstance(nested, Mapping) and nested.get("rope_theta") is not None:
        # DBRX's own files keep the base in attn_config (databricks/dbrx-instruct: 500000), as vLLM
        # reads it; transformers 5.23 ignores it there and rotates with rope_parameters' (10000).
        where = NESTED_THETA[str(cfg["model_type"])]
        params = cfg.get("rope_parameters") or {}
        if params.get("rope_theta") not in (None, nested["rope_theta"]):
            raise ValueError(f"{cfg['model_type']}: {where}.rope_theta {nested['rope_theta']} and rope_parameters.rope_theta "
                             f"{params['rope_theta']} disagree (a file re-saved by transformers 5, which ignores "
                             f"{where}'s); set rope_parameters.rope_theta to the base the model was trained with")
        out["rope_theta"] = nested["rope_theta"]
    return out


def is_vision(cfg: Mapping[str, Any]) -> bool:
    mt = str(cfg.get("model_type", ""))
    if mt in ALTERNATING_2D_TEXT:
        return False
    return mt in VISION_ENCODER_TYPES or mt.endswith("_vision") or ("vision_config" not in cfg and "patch_size" in cfg)


# Fields of a flat rope_parameters block (transformers' RopeParameters and the legacy keys):
# any other key of a rope_parameters object names a layer type.
ROPE_FIELDS = frozenset({
    "rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings", "attention_factor", "beta_fast",
    "beta_slow", "short_factor", "long_factor", "low_freq_factor", "high_freq_factor", "mscale", "mscale_all_dim",
    "partial_rotary_factor", "mrope_section", "mrope_interleaved", "alpha", "truncate", "finetuned",
})


def layer_types_of(cfg: Mapping[str, Any]) -> list[str]:
    """The layer types whose rotary differs (Gemma 3 style), or [] when one rotary serves every layer.

    transformers 5 writes them as ``rope_parameters = {layer_type: {...}}`` (``null`` for a type
    whose layers have no rotary, as Beam's full-attention layers); older Gemma 3 files give the
    local layers' base as ``rope_local_base_freq``.

    Raises:
        ValueError: a malformed per-layer block, naming the layer type: an entry that is neither
            an object nor null, layer-type entries mixed with flat rope fields, every entry null.
    """
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping):
        declared = set(cfg.get("layer_types") or []) if isinstance(cfg.get("layer_types"), list) else set()
        declared |= set(ROPE_LABELS.get(str(cfg.get("model_type", "")), ()))  # transformers' _rope_type_labels
        entries = {k: v for k, v in params.items()
                   if isinstance(v, Mapping) or k in declared or (v is None and k not in ROPE_FIELDS)}
        if entries:
            flat = {k: v for k, v in params.items() if k not in entries}
            if flat:
                raise ValueError(f"rope_parameters mixes layer-type entries ({', '.join(map(str, entries))}) with flat "
                                 f"fields ({', '.join(f'{k}={v!r}' for k, v in flat.items())}): give every layer type an "
                                 "object (or null for no rotary), or one flat block for every layer")
            for k, v in entries.items():
                if v is not None and not isinstance(v, Mapping):
                    raise ValueError(f"rope_parameters[{k!r}] (layer type {k!r}) must be an object or null, got "
                                     f"{type(v).__name__} {v!r}")
            if declared and not set(entries) & declared:
                # transformers takes a block as per-layer only when it names a declared layer type.
                raise ValueError(f"rope_parameters is keyed by layer types ({', '.join(map(str, entries))}) none of which "
                                 f"the config's layer_types ({', '.join(sorted(declared))}) declare: transformers reads it "
                                 "as one flat block of default fields; the two readings disagree")
            live = sorted(k for k, v in entries.items() if v is not None)
            if not live:
                raise ValueError(f"rope_parameters: every layer type's entry is null ({', '.join(map(str, entries))}): "
                                 "no layer has a rotary")
            return live
    if cfg.get("rope_local_base_freq") is not None:
        return ["full_attention", "sliding_attention"]
    return []
