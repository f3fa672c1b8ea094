"""Structural parity: every constant and attribute of a graph rope_export wrote, held bit for
bit against what its spec implies, before any number runs.

Numeric cases only see the rows and positions they hit; a cos/sin table row, one ulp of an
``inv_freq`` entry or a plugin attribute nobody samples would pass them. So the graph is rebuilt
from the spec in its metadata, with the form, opset, dtype, head counts and table length it
records (`rope_export.export.build_onnx`, deterministic), and compared node by node; a graph
whose metadata names a form its nodes are not is rebuilt as its nodes say, and says so:

* ``pass``: same nodes, and every initializer, Constant, attribute and function equal, bit
  for bit (the cos/sin tables, correctly rounded sin and cos, to one unit in the last place:
  another platform's libm may round a value the other way; any float32 sin/cos carries that);
* ``fail``: the same structure with a different constant or attribute, named with its first
  differing index;
* ``not applicable``: a structure rope_export does not write for this spec (another exporter,
  a graph tool's rewrite, no metadata); the verdict then rests on the numeric cases alone,
  and the report says so.

    >>> check_structure("rope.onnx").status  # doctest: +SKIP
    'pass'
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

__all__ = ["StructureResult", "check_structure", "MAX_REBUILD_BYTES"]

# A rebuild allocates the graph's tables again: never more than the file's own tables hold,
# and never more than this (4x auto's table cap), whatever the metadata claims.
MAX_REBUILD_BYTES = 256 << 20


@dataclasses.dataclass
class StructureResult:
    """``status``: "pass" | "fail" | "not applicable"; ``detail`` says what differs or why the
    check does not apply; ``constants`` counts the values compared."""

    status: str
    detail: str = ""
    constants: int = 0
    nodes: int = 0
    tables: bool = False  # cos/sin tables were among the constants (held to one ulp)
    missing: list = dataclasses.field(default_factory=list)  # the spec's constants found nowhere in the graph

    def line(self) -> str:
        if self.status == "pass":
            note = f"; {self.detail}" if self.detail else ""
            tables = ", tables to one unit in the last place" if self.tables else ""
            return (f"structure: PASS ({self.nodes} nodes, {self.constants} constant values equal to the spec's, bit for "
                    f"bit{tables}{note})")
        if self.status == "fail":
            return f"structure: FAIL ({self.detail})"
        return f"structure: not applicable ({self.detail}); the verdict rests on the numeric cases"


class _Differs(Exception):
    """The graph's structure differs from the rebuild's (not applicable)."""


class _Wrong(Exception):
    """Same structure, a different constant or attribute (fail)."""


def check_structure(model, info, spec=None) -> StructureResult:
    """Compare ``model`` (an ``onnx.ModelProto``) with the graph rope_export writes for ``spec``
    (default: the graph's own, ``info.spec``; `read_graph`'s ``info`` gives form, dtype, opset,
    heads and table length)."""
    own = spec is None
    spec = spec if spec is not None else info.spec
    if spec is None:
        return StructureResult("not applicable", "the graph carries no rope_export spec and none was given")
    contradiction = spec_contradiction(spec) if own else None
    if contradiction:  # a graph and its metadata edited alike would otherwise pass as the preset it names
        return StructureResult("fail", f"the spec in its metadata contradicts itself: {contradiction}")
    ambiguous = _ambiguous(model)
    if ambiguous:
        return StructureResult("fail", f"{ambiguous}: a runtime picks one, no check can say which")
    try:
        heads = [info.inputs[n].dims[1] for n in ("q", "k")]
    except (KeyError, IndexError):
        return StructureResult("not applicable", "its q/k inputs are not [B, H, S, D]")
    if not all(isinstance(h, int) and 0 < h <= 1024 for h in heads):
        return StructureResult("not applicable", f"its q/k head counts are not fixed ({heads})")
    # What the metadata says it is, and, where that cannot be rebuilt or does not match, what its
    # nodes say it is (a relabelled or re-versioned graph still has every constant checked).
    said = _said(info)
    seen = _seen(model, info)
    notes = []
    expected = None
    for label, (form, opset, rows) in (("metadata", said), ("nodes", seen)):
        if form is None or (label == "nodes" and (form, opset, rows) == said):
            continue
        budget = min(MAX_REBUILD_BYTES, 2 * _bytes(model) + (1 << 20))
        if rows is not None and 2 * rows * spec.num_pairs * 4 > budget:
            notes.append(f"its table_length ({rows} rows) asks for more than its own tables hold")
            continue
        try:
            candidate = _rebuild(spec.to_json(), form, opset, info.dtype, heads[0], heads[1], rows)
        except Exception as exc:  # noqa: BLE001 - metadata rope_export cannot rebuild from
            notes.append(f"rope_export cannot rebuild form {form!r} at opset {opset} (as {'its metadata says' if label == 'metadata' else 'its nodes say'}) "
                         f"({type(exc).__name__}: {str(exc)[:120]})")
            continue
        if expected is None or _same_nodes(model, candidate):
            expected = candidate
        if label == "nodes" and expected is candidate and said[0] is not None and said != seen:
            notes.append(f"its metadata says form {said[0]!r} at opset {said[1]}, its nodes are form {form!r} at opset {opset}")
        if _same_nodes(model, candidate):
            break
    if expected is None:
        return StructureResult("not applicable", "; ".join(notes) or "no rope_export form to rebuild it as")
    result = StructureResult("pass", nodes=len(model.graph.node))
    try:
        _compare_model(model, expected, result)
    except _Differs as exc:
        # Not rope_export's structure; still, every table, frequency and index it writes must be
        # somewhere in the graph, equal, when a constant of its name or shape is there.
        found = StructureResult("not applicable", nodes=len(model.graph.node))
        try:
            _compare_constants(model, expected, found)
        except _Wrong as wrong:
            return StructureResult("fail", f"{wrong} (and its structure is not rope_export's: {exc})", found.constants,
                                   found.nodes)
        missing = (f"; not found (not checked): {', '.join(found.missing[:6])}" if found.missing else "")
        found.detail = (f"its structure is not what rope_export writes for its spec: {exc}; the {found.constants} "
                        "constant values of its tables, frequencies and indices found by name or shape among the "
                        f"constants it uses equal the spec's{missing}")
        return found
    except _Wrong as exc:
        return StructureResult("fail", str(exc), result.constants, result.nodes)
    if notes:  # the metadata lied about the form, yet every constant is the spec's
        result.detail = "; ".join(notes)
    return result


def spec_contradiction(spec) -> str | None:
    """Where a one-axis spec's frequencies are not what its own scaling fields give (rope_type,
    rope_theta, factors: `frequencies.ROPE_TYPES`, as transformers computes them over the rotary
    width or ``int(head_dim * partial_rotary_factor)``), what differs; None where they agree or
    the fields do not determine them (multi-axis and custom specs)."""
    from ..frequencies import ROPE_TYPES

    import math

    fields = spec.scaling_dict
    kind, theta = fields.get("rope_type"), fields.get("rope_theta", 1.0)
    if isinstance(kind, str) and kind not in ROPE_TYPES and kind.lower() in ROPE_TYPES:
        return f"rope_type {kind!r} is not one transformers names (it spells {kind.lower()!r})"
    if "rope_theta" in fields and (isinstance(theta, bool) or not isinstance(theta, (int, float))
                                   or not math.isfinite(theta) or theta <= 0):
        return f"rope_theta {theta!r} is not a finite number > 0"
    rule = ROPE_TYPES.get(kind)
    if spec.num_axes != 1 or rule is None:
        return None
    widths = {spec.rotary_dim}
    if isinstance(fields.get("partial_rotary_factor"), (int, float)) and fields["partial_rotary_factor"] > 0:
        widths.add(int(spec.head_dim * fields["partial_rotary_factor"]))
    first = None
    for width in sorted(widths):
        try:
            implied = rule(fields, spec.head_dim, width, spec.max_position_embeddings)
        except (ValueError, TypeError, KeyError, ZeroDivisionError, OverflowError):
            return None  # the fields alone do not say (a field rope_export fills in from elsewhere)
        values = tuple(float(v) for v in implied.inv_freq.tolist())
        if values == tuple(spec.inv_freq) and float(implied.attention_scaling) == spec.attention_scaling:
            return None
        if first is None:
            index = next((i for i, (a, b) in enumerate(zip(values, spec.inv_freq)) if a != b), None)
            first = (f"inv_freq[{index}] is {spec.inv_freq[index]!r}, its scaling fields ({fields.get('rope_type')}, "
                     f"rope_theta {fields.get('rope_theta')}) give {values[index]!r}" if index is not None and
                     len(values) == len(spec.inv_freq) else
                     f"{len(spec.inv_freq)} frequencies, its scaling fields give {len(values)}" if len(values) != len(spec.inv_freq)
                     else f"attention_scaling is {spec.attention_scaling!r}, its scaling fields give {implied.attention_scaling!r}")
    return first


def _said(info):
    """(form, opset, table rows) the metadata names; (None, None, None) where it names none."""
    try:
        opset = int(info.metadata["rope_export.opset"])
    except (KeyError, ValueError):
        return None, None, None
    form = info.form if info.form != "unknown" else None
    return form, opset, (info.table_length if form == "table" else None)


def _seen(model, info):
    """(form, opset, table rows) the graph's own nodes and constants say it is."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    tables = [t for t in model.graph.initializer if t.name.startswith("cos_table") and len(t.dims) == 2]
    if tables:
        from ..export.metadata import guard_bound

        return "table", opset, guard_bound(model) or int(tables[0].dims[0])
    if any(op == "MultiAxisRotary" for _, op in ops):
        return "plugin", opset, None
    if ("com.microsoft", "RotaryEmbedding") in ops:
        return "contrib", opset, None
    if any(op == "RotaryEmbedding" for _, op in ops):
        return "fused", opset, None
    return ("decomposed", opset, None) if opset is not None else (None, None, None)


def _same_nodes(model, expected) -> bool:
    return [(n.domain, n.op_type, n.overload, list(n.input), list(n.output)) for n in model.graph.node] == \
        [(n.domain, n.op_type, n.overload, list(n.input), list(n.output)) for n in expected.graph.node]


def _bytes(model) -> int:
    """The model's size, its external data's declared lengths included."""
    total = model.ByteSize()
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "length" and entry.value.isdigit():
                total += int(entry.value)
    return total


def _ambiguous(model) -> str:
    """A name two things share (initializers, functions): the graph's meaning depends on which wins."""
    import collections

    if len(model.graph.sparse_initializer):
        return "the graph holds sparse initializers (rope_export writes none; a runtime may let one shadow a dense one)"
    for what, names in (("initializer", [t.name for t in model.graph.initializer]),
                        ("function", [f"{f.domain}:{f.name}:{f.overload}" for f in model.functions]),
                        ("tensor produced", [o for n in model.graph.node for o in n.output if o])):
        twice = [n for n, count in collections.Counter(names).items() if count > 1]
        if twice:
            return f"{what} {twice[0]!r} appears twice"
    return ""


def _compare_constants(model, expected, result: StructureResult) -> None:
    """Each of the rebuild's initializers with more than one value (tables, inv_freq, index
    arrays) against the graph's of the same name, else of the same type and shape; and every
    function the graph defines must be one the rebuild defines, body and all (a function is code
    the spec must describe: another overload of MultiAxisRotary is not)."""
    bodies = {f.SerializeToString(deterministic=True) for f in expected.functions}
    for f in model.functions:
        if f.SerializeToString(deterministic=True) not in bodies:
            overload = f" (overload {f.overload!r})" if f.overload else ""
            raise _Wrong(f"function {f.domain}.{f.name}{overload} is not one rope_export writes for this spec")
    consumed = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}
    got = {name: t for name, t in _constants(model.graph).items() if name in consumed}  # an unused decoy proves nothing
    for want in _constants(expected.graph).values():
        match = got.get(want.name)
        if match is not None and match.data_type == want.data_type and list(match.dims) == list(want.dims):
            # by name, scalars too (a length rule's threshold is one)
            _compare_tensor(match, want, f"constant {want.name!r}", result)
            continue
        if _size(want) < 2:  # by shape only where a shape says something
            continue
        same = [t for t in got.values() if t.data_type == want.data_type and list(t.dims) == list(want.dims)]
        if not same:
            result.missing.append(want.name)
            continue
        errors = []
        for t in same:
            probe = StructureResult("fail")
            try:
                _compare_tensor(t, want, f"constant {t.name!r} (as the spec's {want.name!r})", probe)
                result.constants += probe.constants
                result.tables |= probe.tables
                break
            except (_Wrong, _Differs) as exc:
                errors.append(str(exc))
        else:
            raise _Wrong(errors[0])


def _constants(graph) -> dict:
    """{name: TensorProto} of a graph's initializers and Constant nodes (a graph tool may move
    a table from one to the other; both are constants the rotary depends on)."""
    from onnx import helper, numpy_helper

    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        attr = node.attribute[0] if len(node.attribute) == 1 else None
        if attr is None:
            continue
        if attr.name == "value":
            tensor = type(attr.t)()
            tensor.CopyFrom(attr.t)
        elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = helper.get_attribute_value(attr)
            dtype = np.float32 if "float" in attr.name else np.int64
            tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        else:
            continue
        tensor.name = node.output[0]
        out[tensor.name] = tensor
    return out


def _size(tensor) -> int:
    size = 1
    for d in tensor.dims:
        size *= int(d)
    return size


@functools.lru_cache(maxsize=4)
def _rebuild(spec_json: str, form: str, opset: int, dtype: str, heads_q: int, heads_k: int, rows):
    from ..export.graph import build_onnx
    from ..spec import RopeSpec

    return build_onnx(RopeSpec.from_dict(spec_json), opset=opset, form=form, dtype=dtype, num_q_heads=heads_q,
                      num_kv_heads=heads_k, table_length=rows)


def _compare_model(model, expected, result: StructureResult) -> None:
    got_opsets = {(o.domain or "ai.onnx", o.version) for o in model.opset_import}
    want_opsets = {(o.domain or "ai.onnx", o.version) for o in expected.opset_import}
    if got_opsets != want_opsets:
        raise _Differs(f"opset imports {sorted(got_opsets)}, rope_export writes {sorted(want_opsets)}")
    _compare_graph(model.graph, expected.graph, "graph", result)
    got_f = {(f.domain, f.name, f.overload): f for f in model.functions}
    want_f = {(f.domain, f.name, f.overload): f for f in expected.functions}
    if set(got_f) != set(want_f):
        raise _Differs(f"functions {sorted(got_f)}, rope_export writes {sorted(want_f)}")
    for key, fn in want_f.items():
        _compare_function(got_f[key], fn, result)


def _signature(values) -> list:
    return [(v.name, v.type.SerializeToString(deterministic=True)) for v in values]


def _compare_graph(got, want, where: str, result: StructureResult) -> None:
    # Nodes and constants first: a changed signature alone must not hide a changed attribute.
    _compare_nodes(got.node, want.node, where, result)
    got_init = {t.name: t for t in got.initializer}
    want_init = {t.name: t for t in want.initializer}
    if set(got_init) != set(want_init):
        extra, missing = sorted(set(got_init) - set(want_init)), sorted(set(want_init) - set(got_init))
        raise _Differs(f"{where}'s initializers differ (extra {extra[:3]}, missing {missing[:3]})")
    for name, tensor in want_init.items():
        _compare_tensor(got_init[name], tensor, f"initializer {name!r}", result)
    if _signature(got.input) != _signature(want.input) or _signature(got.output) != _signature(want.output):
        raise _Differs(f"{where}'s inputs or outputs (names, types, shapes) are not those rope_export writes")


def _compare_function(got, want, result: StructureResult) -> None:
    where = f"function {want.name!r}"
    if list(got.input) != list(want.input) or list(got.output) != list(want.output) \
            or list(got.attribute) != list(want.attribute):
        raise _Differs(f"{where}'s signature is not the one rope_export writes")
    _compare_nodes(got.node, want.node, where, result)


def _compare_nodes(got, want, where: str, result: StructureResult) -> None:
    if len(got) != len(want):
        raise _Differs(f"{where} has {len(got)} nodes, rope_export writes {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        label = f"{where} node {i} ({w.op_type} {w.name!r})"
        if (g.op_type, g.domain, g.overload, list(g.input), list(g.output)) != \
                (w.op_type, w.domain, w.overload, list(w.input), list(w.output)):
            raise _Differs(f"{where} node {i} is {_node_text(g)}, rope_export writes {_node_text(w)}")
        g_attrs, w_attrs = {a.name: a for a in g.attribute}, {a.name: a for a in w.attribute}
        if set(g_attrs) != set(w_attrs):
            raise _Wrong(f"{label} has attributes {sorted(g_attrs)}, the spec's graph {sorted(w_attrs)}")
        for name, attr in w_attrs.items():
            _compare_attribute(g_attrs[name], attr, f"{label} attribute {name!r}", result)


def _node_text(node) -> str:
    return f"{node.domain + '.' if node.domain else ''}{node.op_type}{list(node.input)} -> {list(node.output)}"


def _compare_attribute(got, want, label: str, result: StructureResult) -> None:
    import onnx

    if got.type != want.type:
        raise _Wrong(f"{label} is of type {got.type}, the spec's graph {want.type}")
    if want.type == onnx.AttributeProto.TENSOR:
        return _compare_tensor(got.t, want.t, label, result)
    if want.type == onnx.AttributeProto.GRAPH:
        return _compare_graph(got.g, want.g, label, result)
    result.constants += 1
    if got.SerializeToString(deterministic=True) != want.SerializeToString(deterministic=True):
        raise _Wrong(f"{label} is {_attribute_text(got)}, the spec implies {_attribute_text(want)}")


def _attribute_text(attr) -> str:
    import onnx

    if attr.ref_attr_name:
        return f"a reference to {attr.ref_attr_name!r}"
    try:
        return repr(onnx.helper.get_attribute_value(attr))[:120]
    except Exception:  # noqa: BLE001 - a malformed attribute: say what it holds
        return f"an unreadable attribute ({str(attr)[:80]!r})"


def _compare_tensor(got, want, label: str, result: StructureResult) -> None:
    """Bit for bit; the cos/sin tables (`export.cos_sin_table`: correctly rounded sin and cos,
    which another platform's libm may round one unit otherwise) within one unit in the last place."""
    from onnx import numpy_helper

    if got.data_type != want.data_type or list(got.dims) != list(want.dims):
        raise _Wrong(f"{label} has type {got.data_type} shape {list(got.dims)}, the spec's graph "
                     f"type {want.data_type} shape {list(want.dims)}")
    if got.data_location == 1 or want.data_location == 1:  # external data not loaded: the values are elsewhere
        raise _Differs(f"{label} keeps its values in an external file")
    try:
        a = numpy_helper.to_array(got)
    except Exception as exc:  # noqa: BLE001 - truncated or malformed data is a different constant
        raise _Wrong(f"{label} cannot be read as its declared type and shape ({type(exc).__name__}: {str(exc)[:80]})") from None
    b = numpy_helper.to_array(want)
    result.constants += int(b.size)
    ga = np.ascontiguousarray(a).reshape(-1).view(_UINT[a.dtype.itemsize]).astype(np.int64)
    wb = np.ascontiguousarray(b).reshape(-1).view(_UINT[b.dtype.itemsize]).astype(np.int64)
    ulps = 1 if b.dtype.kind == "f" and want.name.split("_table")[0] in ("cos", "sin") else 0
    result.tables |= bool(ulps)
    differs = np.flatnonzero(np.abs(ga - wb) > ulps)
    if differs.size:
        first = int(differs[0])
        index = np.unravel_index(first, b.shape) if b.ndim else ()
        within = " (beyond one unit in the last place)" if ulps else ""
        raise _Wrong(f"{label} differs from the spec's at index {list(map(int, index))}{within} "
                     f"({differs.size} of {b.size} values differ; graph {a.reshape(-1)[first].item()!r}, spec "
                     f"{b.reshape(-1)[first].item()!r})")


# Bit patterns as unsigned ints by item size: adjacent floats of one sign are one apart.
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
