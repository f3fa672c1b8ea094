"""The probe behind `rope_export.hf.coverage`: one transformers config's rotary classes, each
run as its model runs it (its rotary module on probe positions, its modeling file's apply
function on random q and k) and held against the spec `from_hf_config` reads from the config.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math

import torch

from ..architectures import XY_POSITIONS, superseded
from ..config_file import has_memory_attention, is_vision
from ..hf_config import head_dim_of, layer_types_of, rotary_uses, select_part, spec_fields, verification_key
from ..modules import RotaryEmbedding
from ..positions import patch_grid_positions
from ..spec import RopeSpec
from ..validate.compare import TOLERANCES, compare
from .apply_site import ApplySite, transformers_version
from .behaviour import call_rotary, probe_positions, random_qk, rotation, vision_rotation
from .sources import apply_names, configs_for, modeling_module, rotary_classes, sub_configs

__all__ = ["Row", "modeling_module", "rotary_classes", "sub_configs", "probe_config"]


@dataclasses.dataclass
class Row:
    model_type: str
    part: str
    layer_type: str | None
    rotary_class: str
    status: str  # "exact" | "refused" | "wrong" | "superseded" | "unprobed": what from_hf_config does
    detail: str = ""
    max_err: float = math.nan
    rule: str = ""  # the same judgement of the reading rule alone, the verified table bypassed
    config_type: str = ""  # the model_type from_hf_config reads for this part (a VLM's text: "<vlm>_text")


def _build_rotary(rotary_cls, cfg, **kwargs):
    try:
        return rotary_cls(cfg, **kwargs).eval()
    except AttributeError:
        # Typed with a VLM's config but built from its text_config by the model (Qwen2-VL).
        if getattr(cfg, "text_config", None) is None:
            raise
        return rotary_cls(cfg.text_config, **kwargs).eval()


def _part(attr: str, cfg, rotary_cls) -> str:
    """The ``part`` a user passes to `from_hf_config` for this sub-config."""
    if attr == "" and has_memory_attention(cfg.to_dict()):
        return "memory_attention"
    if attr == "" and getattr(cfg, "text_config", None) is not None and _builds_from(rotary_cls, cfg):
        return "root"  # the root's own rotary beside a nested decoder (MusicFlamingo's audio clock)
    if attr in ("", "text_config"):
        # By what the config is (MLCD's vision rotary class has no "vision" in its name; DeepSeek-OCR 2's
        # encoder is a decoder stack over image tokens), the class name only when it has no decoder (SAM 2).
        data = cfg.to_dict()
        vision = is_vision(data) or "vision" in rotary_cls.__name__.lower() and not data.get("num_attention_heads")
        return "vision" if attr == "" and vision else "text"
    if attr == "vision_config":
        return "vision"
    return attr  # a nested config by its key path (audio encoders, talkers, ...)


def _builds_from(rotary_cls, cfg) -> bool:
    """Whether the rotary builds from this config itself (not, as a VLM's text rotary typed with
    the VLM's config does, only from its text_config)."""
    try:
        rotary_cls(cfg)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001 - it reads this config; what else fails is the probe's to report
        return True
    return True


def _multi_axis(rotary, pos2d, layer_type) -> torch.Tensor | None:
    """[A, 1, S] positions with different streams when the rotary is multi-axis (M-RoPE's 3
    axes, NeoMME's 2), else None."""
    for axes in (3, 2):
        streams = torch.stack([pos2d[0], pos2d[0] // 2 + 1, (pos2d[0] * 3) % 97])[:axes, None]
        try:
            mixed = call_rotary(rotary, streams, layer_type)[0]
            same = call_rotary(rotary, pos2d[None].expand(axes, -1, -1), layer_type)[0]
            flat = call_rotary(rotary, pos2d, layer_type)[0]
        except Exception:  # noqa: BLE001 - a one-axis rotary rejects multi-axis positions
            continue
        if mixed[0].shape == flat[0].shape and torch.equal(same[0], flat[0]) and not torch.equal(mixed[0], flat[0]):
            return streams
    return None


def _head_width(cfg, spec: RopeSpec | None) -> int:
    return spec.head_dim if spec is not None else head_dim_of(cfg.to_dict())


def probe_config(root, data: dict | None = None) -> list[Row]:
    """The coverage rows of one transformers config object (its model type's rotary classes);
    ``data``: the config.json the spec is read from (default: the object's own ``to_dict()``,
    as transformers saves it; `fields` passes the trimmed file the object was built from)."""
    model_type = root.model_type
    _, module = modeling_module(model_type)
    data = root.to_dict() if data is None else {**data, "model_type": model_type}
    rows = []
    for rotary_cls in rotary_classes(module):
        # [] when built from a config this model type does not hold
        for attr, cfg in configs_for(rotary_cls, root, module):
            rows.extend(_probe_rows(model_type, data, attr, cfg, rotary_cls, module))
    return rows


def _probe_rows(model_type, data, attr, cfg, rotary_cls, module) -> list[Row]:
    part = _part(attr, cfg, rotary_cls)
    takes_layer = "layer_type" in inspect.signature(rotary_cls.forward).parameters
    # Rows per layer type, or per use of a rotary applied two ways (DeepSeek V3.2: attention, indexer)
    try:
        layer_types = layer_types_of(_part_dict(cfg.to_dict(), part)) if takes_layer else list(rotary_uses(data, part))
    except ValueError as exc:  # a per-layer block the reading refuses: one refused row says why
        return [Row(model_type, part, None, rotary_cls.__name__, "refused", f"ValueError: {exc}", rule="refused")]
    try:
        kind, sub, _ = select_part(data, part)
        config_type = f"{kind}:{verification_key(data, part, sub) or ''}"
    except ValueError:
        config_type = "-"
    rows = []
    for layer_type in layer_types or [None]:
        row = _probe_one(model_type, data, cfg, part, rotary_cls, module, layer_type)
        note = superseded(config_type.partition(":")[2], transformers_version()) if row.status == "wrong" else ""
        if note:  # this release's code predates the rule rope_export follows (architectures.Family.since)
            row.status, row.detail = "superseded", f"transformers {transformers_version()}: {note} ({row.detail})"
        row.rule, row.config_type = row.status, config_type
        refusal = _accepted(data, part, layer_type) if row.status != "refused" else ""
        if refusal:
            row.status, row.detail = "refused", refusal
        rows.append(row)
    return rows


def _part_dict(data: dict, part: str) -> dict:  # Step3p7: layer types in its text part
    try:
        return select_part(data, part)[1]
    except ValueError:  # no such part: the probe row reports it
        return data


def _probe_one(model_type, data, cfg, part, rotary_cls, module, layer_type) -> Row:
    row = Row(model_type, part, layer_type, rotary_cls.__name__, "unprobed")
    if _part_kind(data, part, rotary_cls) == "vision":
        return _probe_vision(row, data, cfg, rotary_cls, module, part)
    spec, spec_error = _spec_or_error(data, part, layer_type)
    # One use of a rotary applied two ways (DeepSeek V3.2): a use, not a layer type, so the rotary
    # is called without it; its own apply function rotates the first rotary dims of its heads.
    uses = rotary_uses(data, part)
    use = uses.get(layer_type)
    if use is not None:
        layer_type = None
    declared = getattr(cfg, "layer_types", None)
    if layer_type is not None and isinstance(declared, list) and layer_type not in declared:
        # A type the default config's layers do not use (Mellum's sliding): declare one layer.
        cfg = copy.deepcopy(cfg)
        cfg.layer_types = [*declared, layer_type]
    try:
        kwargs = {"layer_type": layer_type} if layer_type is not None and "layer_type" in inspect.signature(rotary_cls.__init__).parameters else {}
        rotary = _build_rotary(rotary_cls, cfg, **kwargs)
        max_pos = getattr(getattr(rotary, "config", cfg), "max_position_embeddings", None)
        outputs, pos = call_rotary(rotary, probe_positions("text", int(max_pos) if max_pos else None), layer_type)
        streams = _multi_axis(rotary, pos, layer_type)
        if streams is not None:
            outputs, pos = call_rotary(rotary, streams, layer_type)
    except Exception as exc:  # noqa: BLE001
        row.detail = f"rotary module: {type(exc).__name__}: {exc}"[:200]
        return _refused_or(row, spec_error)
    try:
        names = (use[0],) if use else apply_names(module, cfg, rotary_cls.__name__, complex_freqs=outputs[1] is None,
                                                  uses=uses)
        if len(names) != 1:
            row.detail = "no module-level apply function its attention calls (apply_rotary_emb if complex), or two called unconditionally"
            return _refused_or(row, spec_error)
        site = ApplySite(module.__name__, names[0])
        q, k = random_qk(_head_width(cfg, spec), pos.shape[-1])
        want = rotation(site.original, site.form, q, k, *outputs, rotary_dim=spec.rotary_dim if spec else None)
    except Exception as exc:  # noqa: BLE001
        row.detail = f"apply function: {type(exc).__name__}: {exc}"[:200]
        return _refused_or(row, spec_error)
    if spec is not None and spec.num_axes == 1 and pos.dim() == 3:
        row.status, row.detail = "wrong", f"the model's rotary follows {pos.shape[0]} position streams, the spec one"
        return row
    if spec is not None and spec.num_axes > 1 and pos.dim() == 2:
        pos = pos[None].expand(spec.num_axes, -1, -1)
    return _judge(row, spec, spec_error, q, k, pos, want)


def _part_kind(data: dict, part: str, rotary_cls) -> str:
    """"text" or "vision": which reading rule the part takes."""
    try:
        return select_part(data, part)[0]
    except ValueError:  # no such part: judged by the class name (the probe row reports the rest)
        return "vision" if "vision" in rotary_cls.__name__.lower() else "text"


def _spec_or_error(data: dict, part, layer_type=None):
    """(spec, "") or (None, why not), for the reading rule alone (verified table bypassed)."""
    try:
        spec = RopeSpec(**spec_fields(data, part, layer_type, verified_only=False))
    except (ValueError, TypeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return spec, ""


def _accepted(data: dict, part, layer_type) -> str:
    """"" when `RopeSpec.from_hf_config` accepts the config, else its error."""
    try:
        RopeSpec.from_hf_config(data, part=part, layer_type=layer_type)
    except ValueError as exc:
        return f"ValueError: {exc}"
    return ""


def _probe_vision(row: Row, data: dict, cfg, rotary_cls, module, part: str = "vision") -> Row:
    # Vision encoders with (row, column) per patch: position_ids [N, 2] -> cos/sin [N, D].
    steps = torch.tensor([0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
    spec, spec_error = _spec_or_error(data, part)
    # [N, 2] (row, column) per patch, or [N, 3] (t, row, column) for a 3-axis spec (MiniMax-M3-VL)
    hw = torch.stack([steps % 5, steps % 37, (steps * 7) % 41][3 - (spec.num_axes if spec else 2):], dim=-1)
    if list(inspect.signature(rotary_cls.forward).parameters)[1:] == ["hidden_states"]:
        return _probe_fixed_grid(row, spec, spec_error, cfg, rotary_cls, module)
    try:
        rotary = _build_rotary(rotary_cls, cfg)
        cos, sin = call_rotary(rotary, hw.flip(-1) if rotary_cls.__name__ in XY_POSITIONS else hw)[0]
        width = _head_width(cfg, spec)
        g = torch.Generator().manual_seed(0)
        q, k = torch.randn(len(steps), 2, width, generator=g), torch.randn(len(steps), 2, width, generator=g)
        apply_2d = getattr(module, "apply_rotary_pos_emb_2d", getattr(module, "apply_rotary_pos_emb_2d_self_attn", None))
        if apply_2d is not None:  # SAM (EdgeTAM: its self-attention's): q/k [1, H, N, D], cos/sin [1, N, D]
            with torch.no_grad():
                want = tuple(t[0].transpose(0, 1) for t in apply_2d(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin))
        else:
            name = "apply_rotary_pos_emb_vision" if hasattr(module, "apply_rotary_pos_emb_vision") else "apply_rotary_pos_emb"
            site = ApplySite(module.__name__, name)
            want = vision_rotation(site.original, site.form, q, k, cos, sin)
    except Exception as exc:  # noqa: BLE001
        row.detail = f"vision rotary: {type(exc).__name__}: {exc}"[:200]
        return _refused_or(row, spec_error)
    # [N, H, D] packed patches <-> our [1, H, N, D]
    return _judge(row, spec, spec_error, q, k, hw.T[:, None].contiguous(), want,
                  view=lambda t: t.transpose(0, 1)[None], unview=lambda t: t[0].transpose(0, 1))


def _probe_fixed_grid(row: Row, spec, spec_error: str, cfg, rotary_cls, module) -> Row:
    # Llama 4 vision: no positions; complex freqs [N + 1, 1, P] for its fixed patch grid (rows and
    # columns counted from 1) and a class token last, applied by vision_apply_rotary_emb to [B, S, H, D].
    try:
        freqs = _build_rotary(rotary_cls, cfg)(torch.zeros(1))
        grid = int(cfg.image_size) // int(cfg.patch_size)
        width = _head_width(cfg, spec)
        g = torch.Generator().manual_seed(0)
        q, k = (torch.randn(freqs.shape[0], 2, width, generator=g) for _ in range(2))
        site = ApplySite(module.__name__, "vision_apply_rotary_emb")
        want = vision_rotation(site.original, site.form, q, k, freqs)
    except Exception as exc:  # noqa: BLE001
        row.detail = f"vision rotary: {type(exc).__name__}: {exc}"[:200]
        return _refused_or(row, spec_error)
    return _judge(row, spec, spec_error, q, k, patch_grid_positions(grid, grid, offset=1, cls_token="last"), want,
                  view=lambda t: t.transpose(0, 1)[None], unview=lambda t: t[0].transpose(0, 1))


def _judge(row: Row, spec: RopeSpec | None, spec_error: str, q, k, positions, want, view=None, unview=None) -> Row:
    """Our module on the probe inputs against the model's rotation ``want``."""
    if spec is None:
        row.status, row.detail = "refused", spec_error
        return row
    view, unview = view or (lambda t: t), unview or (lambda t: t)
    try:
        with torch.no_grad():
            got = tuple(unview(t) for t in RotaryEmbedding(spec)(view(q), view(k), positions))
    except Exception as exc:  # noqa: BLE001 - a spec that cannot even run the model's positions is wrong
        row.status, row.detail = "wrong", f"our module: {type(exc).__name__}: {exc}"[:200]
        return row
    stats = [compare(g_.numpy(), w.float().numpy(), TOLERANCES["float32"]) for g_, w in zip(got, want)]
    row.max_err = max(s["max_abs_err"] for s in stats)
    if all(s["ok"] for s in stats):
        row.status, row.detail = "exact", spec.describe()
    else:
        row.status, row.detail = "wrong", f"max |diff| {row.max_err:.3g}: {spec.describe()}"
    return row


def _refused_or(row: Row, spec_error: str) -> Row:
    # The model's code could not be run here: a refusal is still a refusal; an accepted spec
    # stays unprobed (the detail says why) and must be covered by a test of its own.
    if spec_error:
        row.status, row.detail = "refused", spec_error
    return row
