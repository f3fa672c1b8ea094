"""Hold `RopeSpec.from_hf_config` against transformers' own code, architecture by architecture.

For every rotary class of the installed transformers (or the model types asked for), the
architecture's default config is built, its rotary module computes cos/sin at probe positions,
and the modeling file's own apply function rotates random q and k with them. The spec
`from_hf_config` reads from the same config (as a ``config.json`` dict) must rotate q and k the
same way, or refuse the config. A row is:

* ``exact``: the spec rotates like the model (float32 parity tolerance, every probe);
* ``refused``: `from_hf_config` raised a ValueError (the message is the detail);
* ``wrong``: the spec differs from the model: the one outcome that must never happen;
* ``superseded``: the installed release's code rotates otherwise than a later release whose
  rule rope_export follows (`architectures.Family.since`: a bug fixed there); the patch refuses
  such a model (its check sees the difference);
* ``unprobed``: this generic probe cannot run the model's own code (an unusual rotary or apply
  signature); the detail says why.

Positions: 0..4000 and past twice the trained context (length rules), three different streams
for M-RoPE (a model is multi-axis when its rotary gives different results for different
streams). Every layer type of per-layer-type rotaries (Gemma 3) is a row of its own.

    rows = coverage(["llama", "glm4"])
    print(format_rows(rows))
"""

from __future__ import annotations

from ..architectures import CONFIG_FIXES
from ..hf_config import select_part, spec_fields
from ..spec import RopeSpec
from .probe import Row, modeling_module, probe_config, rotary_classes, sub_configs

__all__ = ["Row", "coverage", "probe_model_type", "probe_config", "check_config", "rotary_model_types", "format_rows",
           "summary", "rule_exact_types", "rule_exact_text_types", "probed_types"]


def rotary_model_types() -> list[str]:
    """Every model type of the installed transformers whose modeling file defines a rotary class."""
    from transformers import CONFIG_MAPPING

    out = []
    for model_type in CONFIG_MAPPING.keys():
        try:
            _, module = modeling_module(model_type)
        except Exception:  # noqa: BLE001 - a modeling file that does not import here has nothing to probe
            continue
        if rotary_classes(module):
            out.append(model_type)
    return out


def _default_config(config_cls, model_type: str):
    root = config_cls()
    for attr, cfg in sub_configs(root):
        for key, value in CONFIG_FIXES.get(getattr(cfg, "model_type", ""), {}).items():
            current = getattr(cfg, key, None)
            setattr(cfg, key, {**current, **value} if isinstance(current, dict) else value)
    return root


def probe_model_type(model_type: str) -> list[Row]:
    """The coverage rows of one model type (one per rotary class, part and layer type)."""
    try:
        config_cls, _ = modeling_module(model_type)
        root = _default_config(config_cls, model_type)
    except Exception as exc:  # noqa: BLE001
        return [Row(model_type, "-", None, "-", "unprobed", f"default config: {type(exc).__name__}: {exc}"[:200])]
    return probe_config(root)


def check_config(cfg, part: str | None = None, layer_type: str | None = None) -> RopeSpec:
    """The spec of a config whose model type rope_export has not verified, checked against
    transformers' own code for this very config: built from it, its rotary and apply function
    rotate probe inputs, and the spec must do the same.

    Args:
        cfg: a config.json dict or path; its ``model_type`` must be one transformers knows.
    Returns:
        the `RopeSpec` (as `RopeSpec.from_hf_config` would give, the verified table aside).
    Raises:
        ValueError: transformers does not know the model type, or the spec differs from the
            model's code (or the probe cannot run it), with the reason.
    """
    import transformers

    from ..hf_config import load_config

    data = load_config(cfg)
    model_type = data.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise ValueError(f"model_type {model_type!r} is not one transformers {transformers.__version__} knows")
    root = transformers.AutoConfig.for_model(**data)
    kind = select_part(root.to_dict(), part)[0]
    rows = [r for r in probe_config(root) if r.layer_type == layer_type and r.part == (part or kind)]
    if not rows:
        raise ValueError(f"transformers' {model_type} has no rotary for part {part!r} and layer type {layer_type!r}")
    bad = [r for r in rows if r.rule != "exact"]
    if bad:
        raise ValueError(f"{model_type}: checked against transformers {transformers.__version__}, the spec is not exact: "
                         f"{bad[0].rule} ({bad[0].detail})")
    return RopeSpec(**spec_fields(data, part, layer_type, verified_only=False))


def coverage(model_types: list[str] | None = None, progress=None) -> list[Row]:
    """Rows for ``model_types`` (default: `rotary_model_types`)."""
    rows = []
    for model_type in model_types or rotary_model_types():
        if progress:
            progress(model_type)
        rows.extend(probe_model_type(model_type))
    return rows


def rule_exact_types(rows: list[Row], kind: str = "text") -> list[str]:
    """Model types of ``kind`` ("text" or "vision") whose every row of that kind the reading
    rule gets exact: what ``architectures.VERIFIED_TEXT`` / ``VERIFIED_VISION`` may hold."""
    by: dict = {}
    for r in rows:
        row_kind, _, config_type = r.config_type.partition(":")
        # A type is judged on its own rows and its nested parts' (a VLM's "<type>_text", Dia's
        # "dia_encoder", T5Gemma's "t5_gemma_module"): a composite model that embeds a Qwen2
        # decoder next to a rotary of its own (an audio clock) says nothing of Qwen2.
        if row_kind == kind and config_type.replace("_", "").startswith(r.model_type.replace("_", "")):
            by.setdefault(config_type, set()).add(r.rule)
    return sorted(m for m, rules in by.items() if m and rules == {"exact"})


def rule_exact_text_types(rows: list[Row]) -> list[str]:
    """`rule_exact_types` of the text rows."""
    return rule_exact_types(rows, "text")


def probed_types(rows: list[Row], kind: str = "text") -> set[str]:
    """Every model type of ``kind`` the rows judged (exact or not)."""
    return {r.config_type.partition(":")[2] for r in rows if r.config_type.partition(":")[0] == kind} - {""}


def summary(rows: list[Row]) -> dict:
    """Counts per status."""
    out = {s: 0 for s in ("exact", "refused", "wrong", "superseded", "unprobed")}
    for r in rows:
        out[r.status] += 1
    return out


def format_rows(rows: list[Row]) -> str:
    """A Markdown table, one line per row."""
    lines = ["| model_type | part | layer type | rotary class | status | detail |", "|---|---|---|---|---|---|"]
    for r in rows:
        detail = r.detail.replace("|", "/").replace("\n", " ")[:400]
        lines.append(f"| {r.model_type} | {r.part} | {r.layer_type or ''} | {r.rotary_class} | {r.status} | {detail} |")
    return "\n".join(lines)
