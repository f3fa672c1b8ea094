"""ONNX export of a `RopeSpec`: inputs ``q``, ``k``, ``position_ids``; outputs ``q_rot``, ``k_rot``.

Forms:
    "fused"       opset >= 23: the standard ``RotaryEmbedding`` op on q and on k, fed per-token
                  cos/sin [B, S, P] built in the graph from position_ids (the multi-axis
                  section split is one gather by axis_of_pair).
    "decomposed"  opset 17-22: plain elementwise ops (Slice/Mul/Sub/Add/Concat).
    "table"       opset >= 23, one-axis specs without a length rule: ``RotaryEmbedding`` looking
                  cos/sin up in a [table_length, P] table by position_ids (positions must
                  be < table_length; onnxruntime rejects larger ones).
    "plugin"      opset >= 23: one ``MultiAxisRotary`` node (domain rope_export) per tensor, defined
                  as a model-local function; TensorRT swaps in the fused plugin when registered
                  (see `rope_export.plugin_form`).
    "contrib"     onnxruntime only (opset >= 17): ``com.microsoft.RotaryEmbedding`` fed this
                  batch's per-token cos/sin table and each token's row index.
    "auto"        decomposed below opset 23; at 23+ table for one-axis specs without a length
                  rule (measured as fast or faster on onnxruntime CPU), else fused.

The graph is produced by the torch dynamo exporter (``torch.onnx.export(dynamo=True)``);
for "fused" the rotation is a small torch custom op that the exporter translates, through
onnxscript, into ``RotaryEmbedding``. Batch and sequence are dynamic; heads and head_dim
are fixed at export time.

Example:
    >>> import rope_export as rx
    >>> path = rx.export_onnx(rx.load_preset("qwen2-vl-7b"), "/tmp/qwen2vl_rope.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings

import onnx_ir as ir
import torch
from torch import nn

from .modules import RotaryEmbedding, apply_rotary
from .spec import RopeSpec

__all__ = ["export_onnx", "FORMS", "DTYPES", "ExportModule", "METADATA_SPEC_KEY"]

FORMS = ("auto", "fused", "decomposed", "contrib", "table", "plugin")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MIN_OPSET, FUSED_OPSET = 17, 23
METADATA_SPEC_KEY = "rope_export.spec"


# --------------------------------------------------------------------- fused op
@torch.library.custom_op("rope_export::rotary_embedding", mutates_args=())
def _rotary_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: int, rotary_dim: int,
               num_heads: int) -> torch.Tensor:
    pairs = rotary_dim // 2
    spec = RopeSpec(head_dim=x.shape[-1], rotary_dim=rotary_dim, inv_freq=(0.0,) * pairs,
                    layout="interleaved" if interleaved else "half")
    return apply_rotary(x, cos.to(torch.float32), sin.to(torch.float32), spec)


@_rotary_op.register_fake
def _(x, cos, sin, interleaved, rotary_dim, num_heads):
    return torch.empty_like(x)


def _rotary_onnx(x, cos, sin, interleaved: int, rotary_dim: int, num_heads: int):
    from onnxscript import opset23 as op

    # num_heads is set on 4D inputs too: onnxruntime 1.23 rejects partial rotary without it.
    return op.RotaryEmbedding(x, cos, sin, interleaved=interleaved, rotary_embedding_dim=rotary_dim, num_heads=num_heads)


@torch.library.custom_op("rope_export::contrib_rotary_embedding", mutates_args=())
def _contrib_op(x: torch.Tensor, token_index: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: int,
                rotary_dim: int, num_heads: int) -> torch.Tensor:
    # cos/sin are per-token tables [B*S, P]; token_index [B, S] = b*S + s picks each token's row.
    batch, seq = token_index.shape
    return _rotary_op(x, cos[token_index.reshape(-1)].reshape(batch, seq, -1),
                      sin[token_index.reshape(-1)].reshape(batch, seq, -1), interleaved, rotary_dim, num_heads)


@_contrib_op.register_fake
def _(x, token_index, cos, sin, interleaved, rotary_dim, num_heads):
    return torch.empty_like(x)


def _contrib_onnx(x, token_index, cos, sin, interleaved: int, rotary_dim: int, num_heads: int):
    from onnxscript.values import Opset

    _register_contrib_schema()
    msft = Opset("com.microsoft", 1)
    return msft.RotaryEmbedding(x, token_index, cos, sin, interleaved=interleaved, rotary_embedding_dim=rotary_dim,
                                num_heads=num_heads)


def _register_contrib_schema() -> None:
    # onnx knows no Microsoft ops; onnxscript needs a schema to emit one. Declare the inputs and
    # attributes of onnxruntime's com.microsoft.RotaryEmbedding (contrib_defs) once.
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has("RotaryEmbedding", "com.microsoft"):
        return
    schema = OpSchema(
        "RotaryEmbedding", "com.microsoft", 1,
        inputs=[OpSchema.FormalParameter("input", "T"), OpSchema.FormalParameter("position_ids", "M"),
                OpSchema.FormalParameter("cos_cache", "T"), OpSchema.FormalParameter("sin_cache", "T")],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], ""), ("M", ["tensor(int64)"], "")],
        attributes=[OpSchema.Attribute("interleaved", OpSchema.AttrType.INT, "", required=False),
                    OpSchema.Attribute("rotary_embedding_dim", OpSchema.AttrType.INT, "", required=False),
                    OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "", required=False),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "", required=False),
                    OpSchema.Attribute("is_packed_batching", OpSchema.AttrType.INT, "", required=False)],
    )
    onnx.defs.register_schema(schema)


@torch.library.custom_op("rope_export::table_rotary_embedding", mutates_args=())
def _table_op(x: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor, position_ids: torch.Tensor,
              interleaved: int, rotary_dim: int, num_heads: int) -> torch.Tensor:
    return _rotary_op(x, cos_table[position_ids], sin_table[position_ids], interleaved, rotary_dim, num_heads)


@_table_op.register_fake
def _(x, cos_table, sin_table, position_ids, interleaved, rotary_dim, num_heads):
    return torch.empty_like(x)


def _table_onnx(x, cos_table, sin_table, position_ids, interleaved: int, rotary_dim: int, num_heads: int):
    from onnxscript import opset23 as op

    return op.RotaryEmbedding(x, cos_table, sin_table, position_ids, interleaved=interleaved,
                              rotary_embedding_dim=rotary_dim, num_heads=num_heads)


class ExportModule(nn.Module):
    """The graph's computation as a torch module: `RotaryEmbedding.cos_sin` in float32, then
    the rotation, as the standard op ("fused") or as elementwise ops ("decomposed")."""

    def __init__(self, spec: RopeSpec, form: str, table_length: int | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.rope = RotaryEmbedding(spec)
        self.spec = spec
        self.form = form
        if form == "table":
            cos, sin = self.rope.cos_sin(torch.arange(table_length, dtype=torch.int64)[None])
            self.register_buffer("cos_table", cos[0].to(dtype), persistent=False)
            self.register_buffer("sin_table", sin[0].to(dtype), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor):
        inter, rot = int(self.spec.layout == "interleaved"), self.spec.rotary_dim
        if self.form == "table":
            # The op looks rows up by position; onnxruntime rejects positions past the table.
            return (_table_op(q, self.cos_table, self.sin_table, position_ids, inter, rot, q.shape[1]),
                    _table_op(k, self.cos_table, self.sin_table, position_ids, inter, rot, k.shape[1]))
        cos, sin = self.rope.cos_sin(position_ids)
        if self.form == "decomposed":
            return apply_rotary(q, cos, sin, self.spec), apply_rotary(k, cos, sin, self.spec)
        # The rotary ops take cos/sin in the activation dtype; the angles stay float32.
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        if self.form == "contrib":
            # onnxruntime's com.microsoft.RotaryEmbedding looks cos/sin up by position: give it
            # this batch's per-token table and each token's row, so every variant fits it.
            batch, seq = cos.shape[0], cos.shape[1]
            index = torch.arange(batch * seq, device=cos.device).reshape(batch, seq)
            cos, sin = cos.reshape(batch * seq, -1), sin.reshape(batch * seq, -1)
            return (_contrib_op(q, index, cos, sin, inter, rot, q.shape[1]), _contrib_op(k, index, cos, sin, inter, rot, k.shape[1]))
        return (_rotary_op(q, cos, sin, inter, rot, q.shape[1]), _rotary_op(k, cos, sin, inter, rot, k.shape[1]))


# ----------------------------------------------------------------------- export
def resolve_form(form: str, opset: int, spec: RopeSpec | None = None) -> str:
    """The concrete form. "auto": below opset 23 "decomposed"; at 23+ "table" for one-axis
    specs without a length rule whose max_position_embeddings is known (a table lookup measured
    as fast or faster than in-graph sin/cos on onnxruntime CPU: tools/table_vs_ingraph.py),
    else "fused"."""
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "auto":
        if opset < FUSED_OPSET:
            return "decomposed"
        tableable = spec is not None and spec.num_axes == 1 and spec.length_rule is None and spec.max_position_embeddings
        return "table" if tableable else "fused"
    if form in ("fused", "table", "plugin") and opset < FUSED_OPSET:
        raise ValueError(f"form {form!r} needs opset >= {FUSED_OPSET} (RotaryEmbedding); got opset {opset}: use form='decomposed'")
    return form


def example_inputs(spec: RopeSpec, *, batch: int = 2, seq: int = 8, num_q_heads: int = 4, num_kv_heads: int = 2,
                   dtype: torch.dtype = torch.float32, high: int = 4096, seed: int = 0):
    """Random (q, k, position_ids) of the graph's input shapes; positions differ per axis."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, num_q_heads, seq, spec.head_dim, generator=g).to(dtype)
    k = torch.randn(batch, num_kv_heads, seq, spec.head_dim, generator=g).to(dtype)
    shape = (batch, seq) if spec.num_axes == 1 else (spec.num_axes, batch, seq)
    return q, k, torch.randint(0, high, shape, generator=g, dtype=torch.int64)


def _set_metadata(model, spec: RopeSpec, form: str, dtype: str, opset: int) -> None:
    from . import __version__

    props = {METADATA_SPEC_KEY: spec.to_json(), "rope_export.version": __version__, "rope_export.form": form,
             "rope_export.dtype": dtype, "rope_export.opset": str(opset)}
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def build_onnx(spec: RopeSpec, *, opset: int = 23, form: str = "auto", dtype: str = "float32",
               num_q_heads: int = 4, num_kv_heads: int = 2, table_length: int | None = None):
    """The `onnx.ModelProto` for a spec (see `export_onnx`), not written anywhere."""

    form = resolve_form(form, opset, spec)
    if form == "table":
        if spec.num_axes != 1 or spec.length_rule is not None:
            raise ValueError("form 'table' needs a one-axis spec without a length rule (dynamic NTK / LongRoPE)")
        table_length = table_length or spec.max_position_embeddings
        if not isinstance(table_length, int) or table_length <= 0:
            raise ValueError(f"table_length must be a positive int (the spec has no max_position_embeddings), got {table_length!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    for label, heads in (("num_q_heads", num_q_heads), ("num_kv_heads", num_kv_heads)):
        if not isinstance(heads, int) or heads <= 0:
            raise ValueError(f"{label} must be a positive int, got {heads!r}")
    if form == "plugin":
        from .plugin_form import build_plugin_model

        model = ir.serde.serialize_model(build_plugin_model(spec, opset=opset, dtype=dtype, num_q_heads=num_q_heads,
                                                            num_kv_heads=num_kv_heads))
        return _finish(model, spec, form, dtype, opset)
    module = ExportModule(spec, form, table_length, DTYPES[dtype]).eval()
    # Trace at shapes no user runs (batch 3, seq 11) so nothing specialises on them.
    args = example_inputs(spec, batch=3, seq=11, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, dtype=DTYPES[dtype])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    pos_axes = {0: batch, 1: seq} if spec.num_axes == 1 else {1: batch, 2: seq}
    dynamic = {"q": {0: batch, 2: seq}, "k": {0: batch, 2: seq}, "position_ids": pos_axes}
    table = {torch.ops.rope_export.rotary_embedding.default: _rotary_onnx,
             torch.ops.rope_export.contrib_rotary_embedding.default: _contrib_onnx,
             torch.ops.rope_export.table_rotary_embedding.default: _table_onnx}
    with _quiet():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, dynamic_shapes=dynamic, optimize=True,
            input_names=["q", "k", "position_ids"], output_names=["q_rot", "k_rot"],
            custom_translation_table=table if form != "decomposed" else None, verify=False, report=False,
        )
    if opset < 18:
        _drop_opset18_reduce_attributes(program.model)
    model = program.model_proto
    return _finish(model, spec, form, dtype, opset, {"rope_export.table_length": str(table_length)} if form == "table" else None)


def _finish(model, spec: RopeSpec, form: str, dtype: str, opset: int, extra: dict | None = None):
    import onnx

    _set_metadata(model, spec, form, dtype, opset)
    for key, value in (extra or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"rope_export {form} rotary embedding: {spec.describe()}"
    onnx.checker.check_model(model, full_check=True)
    return model


def _drop_opset18_reduce_attributes(ir_model) -> None:
    # The exporter writes ReduceMax's opset-18 attribute noop_with_empty_axes into opset-17
    # graphs, which the checker (and older runtimes) reject; at its default value 0 it is a no-op.
    for node in ir_model.graph.all_nodes():
        if node.op_type.startswith("Reduce") and "noop_with_empty_axes" in node.attributes:
            if node.attributes["noop_with_empty_axes"].value == 0:
                del node.attributes["noop_with_empty_axes"]


@contextlib.contextmanager
def _quiet():
    # The exporter prints progress and warnings meant for its own developers.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(spec: RopeSpec, path: str | os.PathLike, *, opset: int = 23, form: str = "auto",
                dtype: str = "float32", num_q_heads: int = 4, num_kv_heads: int = 2,
                table_length: int | None = None) -> str:
    """Export the rotary embedding of ``spec`` to an ONNX file.

    Args:
        spec: the rotary description.
        path: output file; written atomically (a failure leaves nothing at ``path``).
        opset: 17..23+; "fused" needs 23.
        form: "auto" (see `resolve_form`) | "fused" | "decomposed" | "table" | "contrib" | "plugin"
            (see the module docstring).
        dtype: activation dtype of q/k and outputs: "float32" | "float16" | "bfloat16"
            (angles and sin/cos are float32 in every case).
        num_q_heads, num_kv_heads: Hq and Hk (fixed in the graph).
        table_length: rows of the cos/sin table for form "table" (default max_position_embeddings).
    Graph:
        inputs ``q`` [B, Hq, S, D], ``k`` [B, Hk, S, D], ``position_ids`` int64 [B, S] or
        [A, B, S]; outputs ``q_rot``, ``k_rot``; B and S dynamic. The spec is stored as JSON
        in the model's ``rope_export.spec`` metadata, with the package version and form.
    Returns:
        the path written.
    Raises:
        ValueError: bad opset/form/dtype/heads; OSError: the directory is not writable.
    """

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OSError(f"output directory does not exist: {directory}")
    if not os.access(directory, os.W_OK):
        raise OSError(f"output directory is not writable: {directory}")
    model = build_onnx(spec, opset=opset, form=form, dtype=dtype, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads,
                       table_length=table_length)
    atomic_write(path, model.SerializeToString(deterministic=True))
    return path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename:
    readers see the old file or the whole new one, and a failure leaves nothing at ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rope_export-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
