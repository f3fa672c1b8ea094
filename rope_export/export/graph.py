"""ONNX export of a `RopeSpec`: inputs ``q``, ``k``, ``position_ids``; outputs ``q_rot``, ``k_rot``.

The graph is produced by the torch dynamo exporter (``torch.onnx.export(dynamo=True)``): an
`ExportModule` computes cos/sin in float32 with `RotaryEmbedding.cos_sin` and rotates with
one of the custom ops of `rope_export.export.ops`, which the exporter translates through
onnxscript (fused, table, contrib), or with plain torch ops (decomposed). The plugin form is
built directly as an ONNX IR model (`plugin_form`). Batch and sequence are dynamic; heads and
head_dim are fixed at export time. Forms: `rope_export.export.forms`.

Example:
    >>> import rope_export as rx
    >>> path = rx.export_onnx(rx.load_preset("qwen2-vl-7b"), "/tmp/qwen2vl_rope.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._util import DTYPE_NAMES, atomic_write, check_output_path, printable, quiet_exporter, torch_dtype
from ..axes import stream_order
from ..modules import RotaryEmbedding, apply_rotary, deinterleave
from ..spec import RopeSpec
from .forms import check_table_size, resolve_form
from .metadata import set_metadata
from .ops import TRANSLATIONS, contrib_op, rotary_op, table_op

__all__ = ["export_onnx", "build_onnx", "ExportModule", "example_inputs", "cos_sin_table", "guarded_table",
           "guard_positions", "MAX_GRAPH_HEADS"]

# Heads a graph is traced with (the validator runs at most as many): far above any model's 128.
MAX_GRAPH_HEADS = 1024


class ExportModule(nn.Module):
    """The graph's computation as a torch module: `RotaryEmbedding.cos_sin` in float32 (or a
    cos/sin table for "table"), then the rotation: the fused, table or contrib op, or plain
    elementwise ops ("decomposed"). Not used for "plugin"."""

    def __init__(self, spec: RopeSpec, form: str, table_length: int | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.rope = RotaryEmbedding(spec)
        self.spec = spec
        self.form = form
        if form == "table":
            # Row l holds every pair's cos/sin at position l (`cos_sin_table`), rounded to the
            # activation dtype as the in-graph form rounds them; one more row of NaN is where
            # positions outside [0, table_length) are sent (`guard_positions`).
            self.table_length = table_length
            cos, sin = (torch.from_numpy(t).to(dtype) for t in guarded_table(spec, table_length))
            if spec.num_axes == 1:
                self.register_buffer("cos_table", cos, persistent=False)
                self.register_buffer("sin_table", sin, persistent=False)
            else:
                # Multi-axis: one table per position stream holding the pairs that follow it, in
                # the order the streams first appear (Llama 4 vision: columns first), so that
                # contiguous sections need no reordering; a token gathers each stream's row.
                streams, order = stream_order(spec.axis_of_pair)
                self.streams = streams
                for a in streams:
                    pairs = torch.tensor([i for i in order if spec.axis_of_pair[i] == a], dtype=torch.int64)
                    self.register_buffer(f"cos_table_{a}", cos[:, pairs].contiguous(), persistent=False)
                    self.register_buffer(f"sin_table_{a}", sin[:, pairs].contiguous(), persistent=False)
                if order != sorted(order):  # interleaved sections (Qwen3-VL): put the pairs back
                    self.register_buffer("pair_order", torch.argsort(torch.tensor(order, dtype=torch.int64)),
                                         persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor):
        inter, rot, layout = int(self.spec.layout == "interleaved"), self.spec.rotary_dim, self.spec.layout
        if layout == "interleaved_to_half":  # one Reshape/Transpose per input, then the half form
            q, k, layout = deinterleave(q, rot), deinterleave(k, rot), "half"
        if self.form == "table":
            position_ids = guard_positions(position_ids, self.table_length)
            if self.spec.num_axes == 1:  # the op looks rows up by position
                return (table_op(q, self.cos_table, self.sin_table, position_ids, inter, rot, q.shape[1]),
                        table_op(k, self.cos_table, self.sin_table, position_ids, inter, rot, k.shape[1]))
            # a Gather per stream
            positions = position_ids.unbind(0)
            cos = torch.cat([F.embedding(positions[a], getattr(self, f"cos_table_{a}")) for a in self.streams], -1)
            sin = torch.cat([F.embedding(positions[a], getattr(self, f"sin_table_{a}")) for a in self.streams], -1)
            order = getattr(self, "pair_order", None)
            if order is not None:
                cos, sin = cos.index_select(-1, order), sin.index_select(-1, order)
            return (rotary_op(q, cos, sin, inter, rot, q.shape[1]), rotary_op(k, cos, sin, inter, rot, k.shape[1]))
        cos, sin = self.rope.cos_sin(position_ids)
        if self.form == "decomposed":
            return apply_rotary(q, cos, sin, layout), apply_rotary(k, cos, sin, layout)
        # The rotary ops take cos/sin in the activation dtype; the angles stay float32.
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        if self.form == "contrib":
            # onnxruntime's com.microsoft.RotaryEmbedding looks cos/sin up by position: give it
            # this batch's per-token table and each token's row, so every variant fits it.
            batch, seq = cos.shape[0], cos.shape[1]
            index = torch.arange(batch * seq, device=cos.device).reshape(batch, seq)
            cos, sin = cos.reshape(batch * seq, -1), sin.reshape(batch * seq, -1)
            return (contrib_op(q, index, cos, sin, inter, rot, q.shape[1]), contrib_op(k, index, cos, sin, inter, rot, k.shape[1]))
        return (rotary_op(q, cos, sin, inter, rot, q.shape[1]), rotary_op(k, cos, sin, inter, rot, k.shape[1]))


def cos_sin_table(spec: RopeSpec, length: int):
    """float32 ``(cos, sin)``, each ``[length, P]``: row l holds pair i's cos/sin at position l, the
    angle ``float32(l) * inv_freq[i]`` computed in float32 as the spec says, its cos and sin
    correctly rounded (computed in float64, rounded once), ``attention_scaling`` applied in float32.

    Built with numpy, so every machine and every run writes the same bits (the structural check
    rebuilds them). torch's multi-threaded float32 cos is not that: on our CPU machine (torch 2.13,
    2 threads) one run in eight returned cos(1024) = 0.98720 instead of 0.98735 for the rows a
    worker thread computed.
    """
    import numpy as np

    angles = np.arange(length, dtype=np.float32)[:, None] * np.asarray(spec.inv_freq, dtype=np.float32)[None]
    cos, sin = np.cos(angles.astype(np.float64)).astype(np.float32), np.sin(angles.astype(np.float64)).astype(np.float32)
    if spec.attention_scaling != 1.0:
        scale = np.float32(spec.attention_scaling)
        cos, sin = cos * scale, sin * scale
    return cos, sin


def guarded_table(spec: RopeSpec, length: int):
    """`cos_sin_table` with one more row, ``length``, all NaN: ``(cos, sin)``, each float32
    ``[length + 1, P]``. `guard_positions` sends every position outside ``[0, length)`` there."""
    import numpy as np

    nan = np.full((1, spec.num_pairs), np.nan, dtype=np.float32)
    return tuple(np.concatenate([t, nan]) for t in cos_sin_table(spec, length))


def guard_positions(position_ids: torch.Tensor, length: int) -> torch.Tensor:
    """int64 positions (any shape) with every one outside ``[0, length)`` replaced by ``length``,
    the NaN row of a `guarded_table`.

    Why: ONNX's Gather calls an out-of-range index an error, but only some runtimes check
    (onnxruntime does; OpenVINO reads some other row and returns finite wrong values, measured
    3.16 off on gpt-j-6b's table). With the guard every runtime returns NaN for those tokens, and
    the guard costs five elementwise ops on the positions, none on q or k. The comparisons are in
    float32: OpenVINO's CPU plugin compares int64 as int32 (2^32 + 5 passed an int64 guard as 5),
    while its int64 -> float32 cast keeps the magnitude; rounding is monotonic, so no position
    outside the table compares inside (exact up to 2^24 rows; past that a position next to the
    end could read NaN, never another row).

        >>> guard_positions(torch.tensor([[0, 4, 5, -1, 2**32 + 1]]), 5)
        tensor([[0, 4, 5, 5, 5]])
    """
    at = position_ids.to(torch.float32)
    inside = (at >= 0) & (at < float(length))
    return torch.where(inside, position_ids, length)


def example_inputs(spec: RopeSpec, *, batch: int = 2, seq: int = 8, num_q_heads: int = 4, num_kv_heads: int = 2,
                   dtype: torch.dtype = torch.float32, high: int = 4096, seed: int = 0):
    """Random ``(q, k, position_ids)`` of the graph's input shapes: q ``[B, Hq, S, D]``, k
    ``[B, Hk, S, D]`` in ``dtype``, int64 positions in ``[0, high)`` that differ per axis."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, num_q_heads, seq, spec.head_dim, generator=g).to(dtype)
    k = torch.randn(batch, num_kv_heads, seq, spec.head_dim, generator=g).to(dtype)
    return q, k, torch.randint(0, high, spec.position_shape(batch, seq), generator=g, dtype=torch.int64)


def build_onnx(spec: RopeSpec, *, opset: int = 23, form: str = "auto", dtype: str = "float32",
               num_q_heads: int = 4, num_kv_heads: int = 2, table_length: int | None = None, force: bool = False,
               progress: Callable[[str], None] | None = None):
    """The checked `onnx.ModelProto` for a spec (see `export_onnx`), not written anywhere."""
    import onnx

    progress = progress or (lambda message: None)

    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {dtype!r}")
    form = resolve_form(form, opset, spec, dtype)
    if form == "table":
        table_length = table_length or spec.max_position_embeddings
        if isinstance(table_length, bool) or not isinstance(table_length, int) or table_length <= 0:
            raise ValueError(f"table_length must be a positive int (the spec names no max_position_embeddings: pass "
                             f"table_length=N), got {table_length!r}")
        check_table_size(spec, table_length, dtype, force)
    else:
        table_length = None
    for label, heads in (("num_q_heads", num_q_heads), ("num_kv_heads", num_kv_heads)):
        if isinstance(heads, bool) or not isinstance(heads, int) or not 0 < heads <= MAX_GRAPH_HEADS:
            raise ValueError(f"{label} must be a positive int <= {MAX_GRAPH_HEADS}, got {str(heads)[:40]}")
    progress(f"building the {form} graph" + (" (torch.onnx, dynamo exporter)" if form != "plugin" else ""))
    if form == "plugin":
        import onnx_ir as ir

        from .plugin_form import build_plugin_model

        model = ir.serde.serialize_model(build_plugin_model(spec, opset=opset, dtype=dtype, num_q_heads=num_q_heads,
                                                            num_kv_heads=num_kv_heads))
    else:
        model = _trace(spec, form, opset, torch_dtype(dtype), num_q_heads, num_kv_heads, table_length)
    set_metadata(model, spec, form, dtype, opset, table_length)
    model.doc_string = f"rope_export {form} rotary embedding: {spec.describe()}"
    progress("checking the graph (onnx.checker, full check)")
    onnx.checker.check_model(model, full_check=True)
    return model


def _trace(spec: RopeSpec, form: str, opset: int, dtype: torch.dtype, num_q_heads: int, num_kv_heads: int,
           table_length: int | None):
    module = ExportModule(spec, form, table_length, dtype).eval()
    # Trace at shapes no user runs (batch 3, seq 11) so nothing specialises on them.
    args = example_inputs(spec, batch=3, seq=11, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, dtype=dtype)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    rank = len(spec.position_shape(1, 1))  # B and S are the last two position axes
    dynamic = {"q": {0: batch, 2: seq}, "k": {0: batch, 2: seq}, "position_ids": {rank - 2: batch, rank - 1: seq}}
    with quiet_exporter():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, dynamic_shapes=dynamic, optimize=True,
            input_names=["q", "k", "position_ids"], output_names=["q_rot", "k_rot"],
            custom_translation_table=TRANSLATIONS if form != "decomposed" else None, verify=False, report=False,
        )
    if opset < 18:
        _drop_opset18_reduce_attributes(program.model)
    return program.model_proto


def _drop_opset18_reduce_attributes(ir_model) -> None:
    # The exporter writes ReduceMax's opset-18 attribute noop_with_empty_axes into opset-17
    # graphs, which the checker (and older runtimes) reject; at its default value 0 it is a no-op.
    for node in ir_model.graph.all_nodes():
        if node.op_type.startswith("Reduce") and "noop_with_empty_axes" in node.attributes:
            if node.attributes["noop_with_empty_axes"].value == 0:
                del node.attributes["noop_with_empty_axes"]


def export_onnx(spec: RopeSpec, path: str | os.PathLike, *, opset: int = 23, form: str = "auto",
                dtype: str = "float32", num_q_heads: int = 4, num_kv_heads: int = 2,
                table_length: int | None = None, force: bool = False,
                progress: Callable[[str], None] | None = None) -> str:
    """Export the rotary embedding of ``spec`` to an ONNX file.

    Args:
        spec: the rotary description.
        path: output file; written atomically (a failure leaves nothing at ``path``).
        opset: 17 to 25 (`forms.max_opset`); "fused", "table" and "plugin" need 23.
        form: "auto" | "fused" | "decomposed" | "table" | "contrib" | "plugin"
            (`rope_export.export.forms`).
        dtype: activation dtype of q/k and outputs: "float32" | "float16" | "bfloat16"
            (angles and sin/cos are float32 in every case).
        num_q_heads, num_kv_heads: Hq and Hk (fixed in the graph).
        table_length: rows of the cos/sin table for form "table" (default max_position_embeddings).
        force: write a table above `forms.TABLE_CAP_BYTES` (64 MiB; never above 1 GiB).
        progress: called with a short message as each stage starts (trace, check, write).
    Graph:
        inputs ``q`` [B, Hq, S, D], ``k`` [B, Hk, S, D], ``position_ids`` int64 [B, S] or
        [A, B, S]; outputs ``q_rot``, ``k_rot``; B and S dynamic. The spec is stored as JSON
        in the model's ``rope_export.spec`` metadata, with the package version and form
        (`rope_export.export.metadata`).
    Returns:
        the path written.
    Raises:
        ValueError: bad opset/form/dtype/heads, a table above the cap, a path not ending in .onnx;
        OSError: the directory is not writable.
    """
    path = os.fspath(path)
    check_output_path(path)  # before the export's work, not after
    if os.path.splitext(path)[1].lower() != ".onnx":
        # onnx picks a text format from a .json / .textproto suffix: only .onnx files read back as written.
        raise ValueError(f"the output file must end in .onnx (binary ONNX), got {path!r}")
    model = build_onnx(spec, opset=opset, form=form, dtype=dtype, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads,
                       table_length=table_length, force=force, progress=progress)
    if progress:
        progress(f"writing {printable(path)}")
    atomic_write(path, model.SerializeToString(deterministic=True))
    return path
