"""Named model presets: the rope fields of each model's published config.json.

Preset files live in ``models/`` (shipped in the wheel as ``rope_export.models``), one per
model, with the config subset and its source. A preset id is the model name for its
default part (text when the model has a decoder) and ``name:vision`` for a vision encoder
of a model that also has a decoder.

Example:
    >>> import rope_export as rx
    >>> "qwen2-vl-7b:vision" in rx.list_presets()
    True
    >>> rx.load_preset("qwen2-vl-7b:vision").head_dim
    80
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from pathlib import Path

from .config_file import select_part  # neither imports torch: listing presets stays instant
from .spec import RopeSpec


__all__ = ["list_presets", "load_preset", "preset_info", "heads_of", "config_heads", "preset_path"]


def _preset_entries():
    # Installed: package data rope_export.models (a namespace package, so use the
    # Traversable API, not paths). From a source tree without install: ../models.
    try:
        entries = [e for e in resources.files("rope_export.models").iterdir() if e.name.endswith(".json")]
        if entries:
            return entries
    except (ModuleNotFoundError, TypeError, FileNotFoundError):
        pass
    return list((Path(__file__).resolve().parent.parent / "models").glob("*.json"))


@functools.lru_cache(maxsize=None)
def _files() -> dict[str, dict]:
    entries = sorted(_preset_entries(), key=lambda e: e.name)
    return {e.name[: -len(".json")]: json.loads(e.read_text(encoding="utf-8")) for e in entries}


def preset_path(preset: str) -> str | None:
    """The file a preset is read from, where it is a file on disk (None for an unknown preset)."""
    name = preset.partition(":")[0]
    for entry in _preset_entries():
        if entry.name == f"{name}.json":
            try:
                return str(entry)
            except TypeError:
                return None
    return None


def _parts(cfg: dict) -> list[str]:
    parts = []
    for part in ("text", "vision"):
        try:
            select_part(cfg, part)
            parts.append(part)
        except ValueError:
            pass
    return parts


def list_presets() -> list[str]:
    """All preset ids, sorted: ``name`` (default part) and ``name:vision`` where a model has both."""
    ids = []
    for name, data in _files().items():
        parts = _parts(data["config"])
        ids.append(name)
        if len(parts) > 1:
            ids.extend(f"{name}:{p}" for p in parts[1:])
    return sorted(ids)


def _split(preset: str, part: str | None) -> tuple[str, str | None]:
    name, _, suffix = preset.partition(":")
    if suffix and part and suffix != part:
        raise ValueError(f"preset {preset!r} names part {suffix!r} but part={part!r} was given")
    if name not in _files():
        close = difflib.get_close_matches(name, list(_files()), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ValueError(f"unknown preset {name!r}; {hint}known: {', '.join(list_presets())}")
    return name, (suffix or part)


def preset_info(preset: str) -> dict:
    """The preset file's content: name, model, variant, source, notes and the config subset;
    ``variant`` describes the part the preset id names (``qwen2-vl-7b:vision``: the encoder's)."""
    name, part = _split(preset, None)
    info = json.loads(json.dumps(_files()[name]))
    if part == "vision" and "vision_variant" in info:
        info["variant"] = info["vision_variant"]
    return info


def load_preset(preset: str, part: str | None = None, layer_type: str | None = None) -> RopeSpec:
    """The `RopeSpec` of a preset, e.g. ``load_preset("qwen3-vl-8b", part="vision")``.

    Raises:
        ValueError: unknown preset, part or layer type.
    """
    name, part = _split(preset, part)
    label = name if part in (None, _parts(_files()[name]["config"])[0]) else f"{name}:{part}"
    return RopeSpec.from_hf_config(_files()[name]["config"], part=part, layer_type=layer_type, name=label)


def heads_of(preset: str) -> tuple[int, int]:
    """(Hq, Hk): the preset model's query and key/value head counts (vision encoders: Hk = Hq)."""
    name, part = _split(preset, None)
    return config_heads(_files()[name]["config"], part)


def config_heads(cfg: dict, part: str | None = None) -> tuple[int, int]:
    """(Hq, Hk) of a config's part, as `heads_of` reads a preset's.

    Raises:
        ValueError: the part names no head count.
    """
    part, sub, _ = select_part(cfg, part)
    try:
        return _heads(part, sub)
    except (TypeError, ValueError):
        raise ValueError(f"the config's {part} part names no positive head counts (num_attention_heads, "
                         "num_key_value_heads)") from None


def _heads(part: str, sub: dict) -> tuple[int, int]:
    if part == "vision":
        heads = int(sub.get("num_heads") or sub.get("num_attention_heads"))
        if heads <= 0:
            raise ValueError(f"heads {heads}")
        return heads, heads
    hq = int(sub.get("num_attention_heads") or sub.get("n_head"))
    hk = int(sub.get("num_key_value_heads") or hq)
    if not 0 < hk <= hq:
        raise ValueError(f"heads {hq}/{hk}")
    return hq, hk
