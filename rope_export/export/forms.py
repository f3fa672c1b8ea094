"""The graph forms, and which form can represent which spec at which opset.

    "fused"       opset >= 23: the standard ``RotaryEmbedding`` op on q and on k, fed per-token
                  cos/sin [B, S, P] built in the graph from position_ids (the multi-axis
                  section split is one gather by axis_of_pair).
    "decomposed"  opset >= 17: plain elementwise ops (Slice/Mul/Sub/Add/Concat).
    "table"       opset >= 23, specs without a length rule: cos/sin rows precomputed for
                  positions 0 .. table_length - 1, no Sin/Cos at run time. One axis:
                  ``RotaryEmbedding`` looks them up by position_ids itself. Several (M-RoPE, 2D):
                  one table per position stream, a Gather per stream, the pairs put back in
                  order. Positions outside [0, table_length) give NaN for the pairs that
                  read them on every runtime: the tables hold one more row, of NaN, where five
                  ops on the positions send them (Gather's bound check is not every runtime's).
    "plugin"      opset >= 23, specs without a length rule: one ``MultiAxisRotary`` node
                  (domain rope_export) per tensor, defined as a model-local function; TensorRT
                  swaps in the fused plugin when registered (see `plugin_form`).
    "contrib"     onnxruntime only (opset >= 17): ``com.microsoft.RotaryEmbedding`` fed this
                  batch's per-token cos/sin table and each token's row index.
    "auto"        "decomposed" below opset 23; at 23+ "table" for specs without a length rule
                  whose max_position_embeddings is known and whose cos/sin tables fit
                  `TABLE_CAP_BYTES` (64 MiB) and need no pair reorder, measured faster on
                  onnxruntime CPU (tools/ort_forms.py: 1D and contiguous M-RoPE text); else
                  "fused" (any position, no table; vision encoders, whose positions have no
                  known bound; Qwen3-VL's interleaved sections, slower as a table).
"""

from __future__ import annotations

from .._util import FORM_NAMES, torch_dtype
from ..axes import stream_order
from ..spec import RopeSpec

__all__ = ["FORMS", "MIN_OPSET", "FUSED_OPSET", "TESTED_OPSET", "TABLE_CAP_BYTES", "TABLE_LIMIT_BYTES", "max_opset", "check_table_size",
           "resolve_form", "form_refusal", "forms_for",
           "table_bytes"]

FORMS = FORM_NAMES
MIN_OPSET = 17
FUSED_OPSET = 23  # the first opset with the standard RotaryEmbedding op
_NEEDS_FUSED_OPSET = ("fused", "table", "plugin")
# The largest cos/sin table "auto" embeds (Llama 3.1's 131072 x 64 float32 pairs); longer
# contexts (Gemma 3, Llama 4: up to 10M positions) get the in-graph form.
TABLE_CAP_BYTES = 64 << 20


# The ONNX file format (one protobuf) holds at most 2 GiB: no table may come near it, forced or not.
TABLE_LIMIT_BYTES = 1 << 30


# The newest opset every form is tested at: torch 2.13's exporter writes opsets 26-28 with
# RotaryEmbedding under an older domain version, which onnx's checker refuses.
TESTED_OPSET = 25


def max_opset() -> int:
    """The newest opset export writes: `TESTED_OPSET`, or the installed onnx package's newest
    when that is older (its checker refuses any later one)."""
    import onnx

    return min(TESTED_OPSET, onnx.defs.onnx_opset_version())


def check_table_size(spec: RopeSpec, length: int, dtype: str = "float32", force: bool = False) -> None:
    """Refuse an explicit table above `TABLE_CAP_BYTES` (what ``auto`` embeds at most) unless
    ``force``, and any above `TABLE_LIMIT_BYTES`, with the size in the message, before
    anything is allocated."""
    size = table_bytes(spec, length, dtype)
    if size > TABLE_LIMIT_BYTES or (size > TABLE_CAP_BYTES and not force):
        mib = size / 2**20
        if size > TABLE_LIMIT_BYTES:
            raise ValueError(f"table_length {length} makes {mib:,.0f} MiB of cos/sin tables, past the {TABLE_LIMIT_BYTES >> 20} "
                             "MiB an ONNX file can hold beside its graph: use form='fused' (--form fused: angles computed in the graph)")
        raise ValueError(f"table_length {length} makes {mib:,.0f} MiB of cos/sin tables, above the {TABLE_CAP_BYTES >> 20} MiB "
                         "cap (the most the automatic form choice embeds): pass force=True (--force) to write it, or "
                         "use form='fused' (--form fused)")


def table_bytes(spec: RopeSpec, length: int, dtype: str = "float32") -> int:
    """Bytes of a table-form graph's cos and sin tables: ``length x P`` each."""
    return 2 * int(length) * spec.num_pairs * torch_dtype(dtype).itemsize


def form_refusal(form: str, spec: RopeSpec) -> str | None:
    """Why ``form`` cannot represent ``spec`` exactly, or None when it can."""
    if form == "table" and spec.length_rule is not None:
        return "form 'table' needs a spec without a length rule (dynamic NTK / LongRoPE)"
    if form == "plugin" and spec.length_rule is not None:
        return "form 'plugin' supports specs without a length rule (dynamic NTK / LongRoPE)"
    if form == "plugin" and spec.layout == "interleaved_to_half":
        return "form 'plugin' does not de-interleave (layout 'interleaved_to_half'): use another form"
    return None


def forms_for(spec: RopeSpec, opset: int = FUSED_OPSET) -> list[str]:
    """The concrete forms (not "auto") that represent ``spec`` at ``opset``."""
    return [f for f in FORMS[1:] if form_refusal(f, spec) is None and (opset >= FUSED_OPSET or f not in _NEEDS_FUSED_OPSET)]


def resolve_form(form: str, opset: int, spec: RopeSpec | None = None, dtype: str = "float32") -> str:
    """The concrete form for ``form`` (see the module docstring for "auto").

    Raises:
        ValueError: unknown form, opset below 17, a form that needs opset 23 below it, or
            (with ``spec``) a form that cannot represent the spec.
    """
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= max_opset():
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {max_opset()} (the newest tested with the installed "
                         f"torch and onnx), got {opset!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "auto":
        if opset < FUSED_OPSET:
            return "decomposed"
        tableable = (spec is not None and form_refusal("table", spec) is None and spec.max_position_embeddings
                     and table_bytes(spec, spec.max_position_embeddings, dtype)
                     <= TABLE_CAP_BYTES
                     # Interleaved sections (Qwen3-VL) need a reorder Gather: measured slower than fused.
                     and stream_order(spec.axis_of_pair)[1] == list(range(spec.num_pairs)))
        return "table" if tableable else "fused"
    if form in _NEEDS_FUSED_OPSET and opset < FUSED_OPSET:
        raise ValueError(f"form {form!r} needs opset >= {FUSED_OPSET} (RotaryEmbedding); got opset {opset}: use form='decomposed'")
    reason = form_refusal(form, spec) if spec is not None else None
    if reason:
        raise ValueError(reason)
    return form
