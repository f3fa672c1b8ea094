"""Read the rotary description out of the config.json files models really publish.

Handles: nested ``text_config`` / ``vision_config``; the old ``rope_scaling`` + top-level
``rope_theta`` keys and the new ``rope_parameters`` dict; ``partial_rotary_factor`` /
``rotary_pct`` / GPT-J's ``rotary_dim``; ``head_dim`` vs ``hidden_size / heads``; vision
configs whose ``hidden_size`` is the projector width, not the attention width (Qwen2-VL).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from . import frequencies as F
from .architectures import (ALTERNATING_2D_TEXT, field_facts_of, ALTERNATING_MROPE, DEFAULT_MROPE_SECTION, DEINTERLEAVING_MLA, HEAD_DIM_KEY,
                            INTERLEAVED_MROPE, INTERLEAVED_TEXT, REFUSED_TEXT, REFUSED_VISION, ROTARY_FLAG, ROTARY_USES, VERIFIED_TEXT,
                            VISION_FAMILIES)
from .axes import alternating_axes, axial_axes, mrope_axes
from .config_file import PART_ALIASES, layer_types_of, load_config, select_part
from .rope_fields import ROPE_TYPE_NAMES, bounded_dim, check_top_level_rope, head_dim_of, layer_params, rope_params
from .values import positive_int

__all__ = ["load_config", "default_name", "select_part", "spec_fields", "verification_key", "head_dim_of", "layer_types_of", "rotary_uses",
           "ROPE_TYPE_NAMES"]


def default_name(cfg: Mapping[str, Any], part: str | None = None) -> str:
    """A spec's label when none is given: the last part of the config's ``_name_or_path`` (what
    ``save_pretrained`` records), else its ``model_type``; ``:vision`` for a vision part."""
    label = cfg.get("_name_or_path") if isinstance(cfg.get("_name_or_path"), str) else ""
    label = label.rstrip("/\\").rsplit("/", 1)[-1] or (cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else "")
    try:
        kind = select_part(cfg, part)[0]
    except ValueError:
        kind = None
    return f"{label}:vision" if label and kind == "vision" else label


def spec_fields(cfg: Mapping[str, Any] | str | os.PathLike, part: str | None = None, layer_type: str | None = None,
                *, verified_only: bool = True) -> dict:
    """The `RopeSpec` fields (keyword arguments, ``name`` aside) a config describes;
    `RopeSpec.from_hf_config` is ``RopeSpec(**spec_fields(cfg, part, layer_type), name=...)``.

    Raises ValueError naming the field or model type when the config describes a rotary that
    rope_export cannot represent exactly, or (``verified_only``, the default) a text model type
    not verified against its modeling code. `rope_export.hf.coverage` reads unverified types
    with ``verified_only=False`` to check them.
    """
    cfg = load_config(cfg)
    if layer_type is not None and not isinstance(layer_type, str):
        raise ValueError(f"layer_type must be a string (one layer type), got {type(layer_type).__name__}")
    kind, sub, parent = select_part(cfg, part)
    if kind == "text" and PART_ALIASES.get(part, part) in (None, "text"):
        check_top_level_rope(cfg, sub)
    if kind == "vision":
        if layer_type is not None:
            raise ValueError("layer_type applies to text decoders, not vision encoders")
        return _vision_fields(sub, parent)
    key = verification_key(cfg, part, sub)
    if key in REFUSED_TEXT:
        raise ValueError(f"model_type {key!r}: {REFUSED_TEXT[key]}; rope_export cannot represent it exactly")
    if key in ROTARY_FLAG and not sub.get(ROTARY_FLAG[key], False):
        raise ValueError(f"model_type {key!r}: {ROTARY_FLAG[key]} is false or missing (transformers' default): "
                         "this model has no rotary")
    if key in ROTARY_USES:
        fields = _use_fields(sub, key, layer_type)
    else:
        fields = _text_fields(layer_params(sub, layer_type))  # its own errors are the more precise ones
    if verified_only:
        _check_text_model_type(key)
        _check_field_facts(key, sub, layer_type)
    return fields


# Where a config names each quantity `architectures.FIELD_FACTS` speaks of.
def _names_partial(cfg, block) -> object:
    return next((v for v in (block.get("partial_rotary_factor"), cfg.get("partial_rotary_factor"), cfg.get("rotary_pct"))
                 if v is not None), None)


def _check_field_facts(model_type: str | None, cfg: Mapping[str, Any], layer_type: str | None) -> None:
    """Refuse what the family's code reads otherwise than the reading rule (`hf.fields`): an
    ignored field set, or a field left out that its config class fills in itself."""
    facts = field_facts_of(model_type or "")
    if not facts:
        return
    try:
        flat = layer_params(cfg, layer_type)
    except ValueError:
        return  # the reading itself says what is wrong
    block = flat.get("rope_scaling") or flat.get("rope_parameters") or {}
    block = block if isinstance(block, Mapping) else {}
    partial = _names_partial(flat, block)
    if "partial_rotary_factor" in facts.get("ignores", ()) and partial not in (None, 1, 1.0):
        raise ValueError(f"model_type {model_type!r}: its rotary ignores partial_rotary_factor (it rotates the whole head), "
                         f"yet this config sets {partial}: the file and the model disagree; remove it or check the model")
    present = {"head_dim": flat.get("head_dim") is not None, "partial_rotary_factor": partial is not None,
               "rope_type": bool(flat.get("rope_scaling") or flat.get("rope_parameters")),
               "rope_theta": any(v is not None for v in (block.get("rope_theta"), flat.get("rope_theta"),
                                                         flat.get("rotary_emb_base")))}
    for quantity in facts.get("requires", ()):
        if not present.get(quantity, True):
            where = "rope_parameters block" if quantity == "rope_type" else quantity
            raise ValueError(f"model_type {model_type!r}: the config names no {where}, which its config class fills in "
                             f"with a default of its own (not the generic one rope_export would read): name it, as the "
                             "config.json files transformers saves do")


def rotary_uses(cfg: Mapping[str, Any], part: str | None = "text") -> dict:
    """`architectures.ROTARY_USES` of a config part's model type: {use: (apply function, layout,
    width key)} for a rotary applied two ways (DeepSeek V3.2), {} for every other."""
    try:
        return ROTARY_USES.get(verification_key(cfg, part) or "", {})
    except ValueError:  # no such part
        return {}


def _use_fields(cfg: dict, model_type: str, use: str | None) -> dict:
    """One use of a rotary applied two ways (`architectures.ROTARY_USES`; layer_type names the use)."""
    uses = ROTARY_USES[model_type]
    if use not in uses:
        raise ValueError(f"model_type {model_type!r} applies its rotary two ways ({', '.join(uses)}), with different "
                         f"pairings: pass layer_type= one of them{'' if use is None else f' (got {use!r})'}")
    fields = _text_fields(layer_params(cfg, None))
    _, layout, width_key = uses[use]
    head_dim = positive_int(cfg.get(width_key), width_key)
    if head_dim < fields["rotary_dim"]:
        raise ValueError(f"{width_key} {head_dim} is narrower than its rotated dims {fields['rotary_dim']}")
    return {**fields, "head_dim": head_dim, "layout": layout}


def verification_key(cfg: Mapping[str, Any], part: str | None, sub: Mapping[str, Any] | None = None) -> str | None:
    """The name `architectures.VERIFIED_TEXT` knows a text part by: its model_type, or, for a
    nested config without one (Evolla's protein encoder, Qwen3-Omni's code2wav),
    ``"<root model_type>.<part>"``. None: a config with no model_type at all (the generic rule)."""
    sub = select_part(cfg, part)[1] if sub is None else sub
    model_type = sub.get("model_type")
    if not model_type and PART_ALIASES.get(part, part) not in (None, "text", "vision", "root") and cfg.get("model_type"):
        # A nested config with no model_type of its own (key absent or ""): known by its place.
        return f"{cfg.get('model_type', '')}.{part}"
    return None if model_type is None else str(model_type)


def _check_text_model_type(model_type: str | None) -> None:
    if model_type is None:
        return  # no architecture to check against: the generic rule (half layout, whole head) applies
    if model_type not in VERIFIED_TEXT and f"{model_type}_text" not in VERIFIED_TEXT:
        raise ValueError(f"model_type {model_type!r} is not one rope_export has verified against its modeling code "
                         "(rope_export.architectures.VERIFIED_TEXT); rope_export.hf.coverage.check_config(config) checks this "
                         "config against transformers' own code and returns the spec when it is exact")


def _text_fields(cfg: dict) -> dict:
    params = rope_params(cfg)
    rope_type = params["rope_type"]
    if rope_type == "axial":
        raise ValueError("rope_scaling.rope_type 'axial' belongs to vision encoders: use part='vision'")
    model_type = str(cfg.get("model_type", ""))
    deinterleaves = False
    prf = params.get("partial_rotary_factor")
    if cfg.get("qk_rope_head_dim"):
        # Multi-head latent attention (DeepSeek V2/V3, MiniCPM3, Kimi): only the q_pe / k_pe part
        # of each head rotates; the spec describes that part.
        # rope_interleave (DeepSeek V3): pairs (2i, 2i+1) rotated and written de-interleaved.
        deinterleaves = bool(cfg.get("rope_interleave")) or model_type in DEINTERLEAVING_MLA
        qk = bounded_dim(positive_int(cfg["qk_rope_head_dim"], "qk_rope_head_dim"), "qk_rope_head_dim")
        if prf is not None and cfg.get("head_dim"):
            # Mistral 4: the frequencies span head_dim * partial_rotary_factor, which must be q_pe.
            span = int(positive_int(cfg["head_dim"], "head_dim") * prf)
            if span != qk:
                raise ValueError(f"qk_rope_head_dim {qk} != head_dim * partial_rotary_factor = {span}: the rotary "
                                 "would not cover q_pe")
            prf = None
        cfg = {**cfg, "head_dim": qk}
    elif HEAD_DIM_KEY.get(model_type) and cfg.get(HEAD_DIM_KEY[model_type]):
        cfg = {**cfg, "head_dim": bounded_dim(positive_int(cfg[HEAD_DIM_KEY[model_type]], HEAD_DIM_KEY[model_type]),
                                              HEAD_DIM_KEY[model_type])}
    head_dim = head_dim_of(cfg)
    if "rotary_dim" in cfg and cfg["rotary_dim"] is not None:  # GPT-J / CodeGen
        dim = bounded_dim(positive_int(cfg["rotary_dim"], "rotary_dim"), "rotary_dim")
    else:
        dim = int(head_dim * prf) if prf is not None else head_dim
    if dim <= 0:
        raise ValueError(f"the rotary width {dim} (head_dim {head_dim}" + (f" x partial_rotary_factor {prf}" if prf else "")
                         + ") leaves no dims to rotate")
    max_pos = cfg.get("max_position_embeddings", cfg.get("n_positions"))
    if max_pos is not None:
        max_pos = positive_int(max_pos, "max_position_embeddings")
    if rope_type == "longrope" and cfg.get("original_max_position_embeddings"):
        # Phi-3 keeps original_max_position_embeddings at top level; the reference prefers it there.
        params["original_max_position_embeddings"] = int(cfg["original_max_position_embeddings"])
    freqs = F.ROPE_TYPES[rope_type](params, head_dim, dim, max_pos)
    fields = dict(head_dim=head_dim, rotary_dim=2 * len(freqs.inv_freq), inv_freq=tuple(freqs.inv_freq.tolist()),
                  layout="interleaved_to_half" if deinterleaves else "interleaved" if model_type in INTERLEAVED_TEXT else "half",
                  attention_scaling=freqs.attention_scaling, length_rule=freqs.length_rule,
                  scaling={k: v for k, v in params.items() if k != "type"},
                  max_position_embeddings=int(max_pos) if max_pos is not None else None)

    if model_type in ALTERNATING_2D_TEXT:
        pairs = fields["rotary_dim"] // 2
        fields.update(num_axes=2, axis_of_pair=tuple(j % 2 for j in range(pairs)),
                      scaling={**fields["scaling"], "axes": "row, column alternating"})
    # Qwen-VL reference code falls back to a per-model section when the config names none.
    section = params.get("mrope_section") or DEFAULT_MROPE_SECTION.get(model_type)
    if section is not None:
        if freqs.length_rule is not None:
            raise ValueError(f"rope_type {rope_type!r} with mrope_section is not supported")
        interleaved = bool(params.get("mrope_interleaved", model_type in INTERLEAVED_MROPE))
        if model_type in ALTERNATING_MROPE:
            axes = alternating_axes(section)
            if len(axes) != fields["rotary_dim"] // 2:
                raise ValueError(f"mrope_section {list(section)} sums to {len(axes)} pairs, rotary_dim / 2 is "
                                 f"{fields['rotary_dim'] // 2}")
        else:
            axes = mrope_axes(section, interleaved=interleaved, pairs=fields["rotary_dim"] // 2)
        fields.update(num_axes=len(section), axis_of_pair=axes,
                      scaling={**fields["scaling"], "mrope_section": list(section), "mrope_interleaved": interleaved})
    return fields


def _vision_fields(cfg: dict, parent: dict) -> dict:
    model_type = str(cfg.get("model_type") or parent.get("model_type") or "")
    family = VISION_FAMILIES.get(model_type)
    if model_type in REFUSED_VISION:
        raise ValueError(f"vision model_type {model_type!r}: {REFUSED_VISION[model_type]}; rope_export cannot represent it exactly")
    if family is None:
        raise ValueError(
            f"vision_config.model_type {model_type!r} is not a vision encoder rope_export knows "
            f"(rope_export.architectures.VISION_FAMILIES: Pixtral, Llama 4, the Qwen-VL family, Kimi-K2.5, Step3, ...)"
        )
    theta = rope_params({**cfg, "model_type": model_type}, "vision")["rope_theta"]
    if family == "thw":
        return _thw_fields(cfg, theta, model_type)
    # Pixtral: the 1D table's even entries for rows, odd for columns. Llama 4 and SAM 2 video's
    # memory attention: consecutive dims paired, the column (x) angles first. Qwen-VL: one table twice.
    # Step3: Qwen-VL's with the columns first. Kimi-K2.5: one table, each frequency's column
    # pair then its row pair (w0 h0 w1 h1 ...).
    frequencies, layout, column_first = {"pixtral": ("interleaved", "half", False),
                                         "llama4": ("shared", "interleaved", True),
                                         "qwen_vl": ("shared", "half", False),
                                         "step3": ("shared", "half", True),
                                         "kimi": ("shared", "half", True),
                                         "sam_memory": ("shared", "interleaved", True)}[family]
    if family in ("pixtral", "step3", "kimi"):
        head_dim = head_dim_of(cfg)
    elif family == "sam_memory":  # its attention projects down by memory_attention_downsample_rate
        head_dim = positive_int(cfg.get("memory_attention_hidden_size"), "memory_attention_hidden_size") // (
            positive_int(cfg.get("memory_attention_downsample_rate", 1), "memory_attention_downsample_rate")
            * positive_int(cfg.get("memory_attention_num_attention_heads"), "memory_attention_num_attention_heads"))
    elif family == "llama4":
        head_dim = head_dim_of({k: v for k, v in cfg.items() if k != "head_dim"})  # hidden_size / heads, as its code
    else:
        # Qwen2-VL's vision hidden_size is the projector width; embed_dim is the attention width.
        width = cfg.get("embed_dim") or cfg.get("hidden_size")
        heads = cfg.get("num_heads") or cfg.get("num_attention_heads")
        if width is None or heads is None:
            raise ValueError("vision_config: embed_dim/hidden_size and num_heads are required")
        head_dim = int(cfg.get("head_dim") or int(width) // int(heads))
    bounded_dim(head_dim, "head_dim")
    if head_dim % 4:
        raise ValueError(f"head_dim must be a multiple of 4 for 2D RoPE, got {head_dim}")
    inv_freq = F.axial_inv_freq(theta, head_dim, frequencies).tolist()
    axes = axial_axes(head_dim // 2, column_first=column_first)
    if family == "kimi":  # the two halves' pairs zipped: (w f0, h f0, w f1, h f1, ...)
        half = head_dim // 4
        inv_freq = [v for pair in zip(inv_freq[:half], inv_freq[half:]) for v in pair]
        axes = tuple(a for pair in zip(axes[:half], axes[half:]) for a in pair)
    # Pixtral and Llama 4 see at most image_size / patch_size patches a side (Llama 4 counts
    # them from 1; its class token sits at 0): the positions' bound, so `auto` may use a table.
    side = (int(cfg["image_size"]) // int(cfg["patch_size"]) if family in ("pixtral", "llama4")
            and cfg.get("image_size") and cfg.get("patch_size") else None)
    if family == "sam_memory" and isinstance(cfg.get("memory_attention_rope_feat_sizes"), list):
        side = max(int(v) for v in cfg["memory_attention_rope_feat_sizes"])  # the memory's feature grid
    return dict(head_dim=head_dim, rotary_dim=head_dim, inv_freq=tuple(inv_freq),
                layout=layout, num_axes=2, axis_of_pair=axes,
                max_position_embeddings=None if side is None else side + (family == "llama4"),
                scaling={"rope_type": "axial", "rope_theta": theta, "frequencies": frequencies, "column_first": column_first,
                         "family": family, "model_type": model_type})


def _thw_fields(cfg: dict, theta: float, model_type: str) -> dict:
    """3D vision RoPE (MiniMax-M3-VL): (t, h, w) per patch, one table over ``2 * (head_dim // 3 // 2)``
    dims per axis, the axes' pairs one after the other; the last ``head_dim % 6`` dims pass through."""
    head_dim = head_dim_of(cfg)
    per_axis = (head_dim // 3) // 2
    if per_axis == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3D RoPE")
    table = F.default_inv_freq(theta, 2 * per_axis)[0].tolist()
    return dict(head_dim=head_dim, rotary_dim=6 * per_axis, inv_freq=tuple(table * 3), layout="half", num_axes=3,
                axis_of_pair=tuple(a for a in range(3) for _ in range(per_axis)),
                scaling={"rope_type": "axial", "rope_theta": theta, "frequencies": "shared", "family": "thw",
                         "model_type": model_type})
