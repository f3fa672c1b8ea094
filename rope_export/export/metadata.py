"""What an exported file says about itself: the metadata keys `export_onnx` writes, and
`read_graph`, which reads them (and the graph's signature) back for the validator, the CLI
and TensorRT.

    >>> info = read_graph("rope.onnx")                    # doctest: +SKIP
    >>> info.spec.describe(), info.form, info.dtype, info.ops["RotaryEmbedding"]  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

from .._util import InputError
from .._version import __version__
from ..spec import RopeSpec

__all__ = ["SPEC_KEY", "VERSION_KEY", "FORM_KEY", "DTYPE_KEY", "OPSET_KEY", "TABLE_LENGTH_KEY", "set_metadata",
           "GraphInfo", "TensorInfo", "read_graph"]

SPEC_KEY = "rope_export.spec"
VERSION_KEY = "rope_export.version"
FORM_KEY = "rope_export.form"
DTYPE_KEY = "rope_export.dtype"
OPSET_KEY = "rope_export.opset"
TABLE_LENGTH_KEY = "rope_export.table_length"


def set_metadata(model, spec: RopeSpec, form: str, dtype: str, opset: int, table_length: int | None = None) -> None:
    """Replace ``model.metadata_props`` (an ``onnx.ModelProto``) with rope_export's keys."""
    props = {SPEC_KEY: spec.to_json(), VERSION_KEY: __version__, FORM_KEY: form, DTYPE_KEY: dtype, OPSET_KEY: str(opset)}
    if table_length is not None:
        props[TABLE_LENGTH_KEY] = str(table_length)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


@dataclass
class TensorInfo:
    """A graph input or output: element type name (``float``, ``int64``, ...) and dims
    (an int when static, the symbol's name when dynamic, None when unnamed)."""

    elem_type: str
    dims: list

    def describe(self) -> str:
        return f"{self.elem_type} [{', '.join('?' if d is None else str(d) for d in self.dims)}]"


@dataclass
class GraphInfo:
    """An ONNX file's rotary description, read without running it.

    ``spec`` is None when the file carries no ``rope_export.spec`` metadata; ``table_length``
    is the row count of a table-form graph's cos/sin table (metadata, else the table itself).
    """

    path: str
    spec: RopeSpec | None
    form: str
    dtype: str
    version: str | None
    table_length: int | None
    opsets: dict
    inputs: dict
    outputs: dict
    ops: collections.Counter
    metadata: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return sum(self.ops.values())

    def histogram(self) -> str:
        """``nodes: N  Op n, ...`` in op-name order."""
        return f"nodes: {self.num_nodes}  " + ", ".join(f"{op} {n}" for op, n in sorted(self.ops.items()))


def read_graph(path: str | os.PathLike) -> GraphInfo:
    """Read an ONNX file's metadata, signature and op histogram (external data not loaded).

    Raises:
        InputError: no such file, not an ONNX model, no graph, unreadable spec metadata.
    """
    import onnx

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise InputError(f"{path} is {'a directory' if os.path.isdir(path) else 'not a regular file'}, not an ONNX file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path} is empty, not an ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any decode failure means "not an ONNX model"
        raise InputError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise InputError(f"{path} is not an ONNX model with a graph")
    meta = {p.key: p.value for p in model.metadata_props}
    spec = None
    if SPEC_KEY in meta:
        try:
            spec = RopeSpec.from_dict(meta[SPEC_KEY])
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{path}: its '{SPEC_KEY}' metadata is not a valid spec "
                             f"({'nested too deeply' if isinstance(exc, RecursionError) else exc})") from None

    def tensors(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
            out[v.name] = TensorInfo(onnx.TensorProto.DataType.Name(t.elem_type).lower(), dims)
        return out

    table_length = _table_length(path, meta[TABLE_LENGTH_KEY]) if TABLE_LENGTH_KEY in meta else _table_rows(model)
    return GraphInfo(path=path, spec=spec, form=meta.get(FORM_KEY, "unknown"), dtype=meta.get(DTYPE_KEY, "float32"),
                     version=meta.get(VERSION_KEY), table_length=table_length,
                     opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
                     inputs=tensors(model.graph.input), outputs=tensors(model.graph.output),
                     ops=collections.Counter(n.op_type for n in model.graph.node), metadata=meta)


def _table_length(path: str, text: str) -> int:
    """The table_length metadata: a positive int no longer than a spec's positions go."""
    from ..spec import MAX_POSITIONS

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= MAX_POSITIONS:
        raise InputError(f"{path}: its '{TABLE_LENGTH_KEY}' metadata must be a positive int <= 2**40, got {text[:40]!r}")
    return value


def _table_rows(model) -> int | None:
    # A table-form graph without our metadata: the guard's bound (its positions at or past it go
    # to the NaN row), else the rows of the table its RotaryEmbedding reads by position_ids.
    bound = guard_bound(model)
    if bound is not None:
        return bound
    tables = {t.name: t.dims[0] for t in model.graph.initializer if len(t.dims) == 2}
    for node in model.graph.node:
        if node.op_type == "RotaryEmbedding" and node.domain in ("", "ai.onnx") and len(node.input) == 4 and node.input[3]:
            if node.input[1] in tables:
                return int(tables[node.input[1]])
    return None


def guard_nodes(model) -> list:
    """The ``Where(inside, position_ids, length)`` nodes of a graph: a table-form graph's guard
    (`export.graph.guard_positions`) has one."""
    return [n for n in model.graph.node if n.op_type == "Where" and len(n.input) == 3 and n.input[1] == "position_ids"]


def guard_bound(model) -> int | None:
    """The table length a table-form graph's guard holds positions below (the scalar its
    ``Where(inside, position_ids, length)`` sends the rest to; `export.graph.guard_positions`),
    read from the graph's nodes, not its tables (they may be external data); None without one."""
    from onnx import numpy_helper

    scalars = {t.name: t for t in model.graph.initializer if not t.dims and t.data_type == 7}  # int64
    scalars.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                    if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"})
    for node in guard_nodes(model):
        if node.input[2] in scalars:
            try:
                value = int(numpy_helper.to_array(scalars[node.input[2]]))
            except (TypeError, ValueError):
                return None
            return value if value > 0 else None
    return None
