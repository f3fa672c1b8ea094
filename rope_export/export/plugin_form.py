"""Plugin-form ONNX: one ``MultiAxisRotary`` node (domain ``rope_export``) per tensor.

The node takes ``(x, position_ids, inv_freq, axis_of_pair)``, the last two initializers shared
by the q and k nodes, and carries the scalars as attributes (``rotary_dim``, ``interleaved``,
``num_heads``, ``head_dim``, ``attention_scaling``) plus ``plugin_namespace`` /
``plugin_version`` and ``aot``. The file defines ``MultiAxisRotary`` as a model-local function whose body is the fused
graph (gather by axis_of_pair, float32 sin/cos, standard ``RotaryEmbedding``). The frequency
tables are inputs rather than attributes because TensorRT's ahead-of-time plugins receive
tensors as kernel pointers but do not keep attributes in the engine. So:

* onnxruntime (and any ONNX runtime) expands the function: the file validates on CPU;
* TensorRT's ONNX parser imports a node that has ``plugin_namespace`` as the registered
  plugin of that name when one is registered (the fused kernel), and otherwise expands the
  local function. Its parser matches plugins by op_type alone, hence the name is not
  ``RotaryEmbedding``; ``aot=1`` selects a Python plugin's ahead-of-time implementation.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .._util import torch_dtype
from ..spec import RopeSpec
from .forms import form_refusal

__all__ = ["OP_TYPE", "DOMAIN", "PLUGIN_VERSION", "plugin_function", "build_plugin_model", "node_attributes"]

OP_TYPE, DOMAIN, PLUGIN_VERSION = "MultiAxisRotary", "rope_export", "1"


def plugin_function(opset: int = 23) -> ir.Function:
    """The generic body: every spec-dependent number is an input or an attribute reference.
    ``opset``: the model's (a function must import the default domain at the model's version;
    the body's ops mean the same from 23 to 25)."""
    from onnxscript import opset23 as op
    from onnxscript import script
    from onnxscript.values import Opset

    @script(Opset(DOMAIN, 1))
    def MultiAxisRotary(x, position_ids, inv_freq, axis_of_pair, rotary_dim: int, interleaved: int, num_heads: int,
                        head_dim: int, attention_scaling: float):
        pos = op.Cast(position_ids, to=1)
        # [B, S] (one axis) or [A, B, S] -> [A, B, S] -> [B, S, A] -> gather each pair's stream.
        shape = op.Concat(op.Constant(value_ints=[-1]), op.Shape(pos, start=-2), axis=0)
        tok = op.Transpose(op.Reshape(pos, shape), perm=[1, 2, 0])
        angle = op.Mul(op.Gather(tok, axis_of_pair, axis=2), inv_freq)
        scale = op.Constant(value_float=attention_scaling)
        cos = op.CastLike(op.Mul(op.Cos(angle), scale), x)
        sin = op.CastLike(op.Mul(op.Sin(angle), scale), x)
        return op.RotaryEmbedding(x, cos, sin, interleaved=interleaved, rotary_embedding_dim=rotary_dim, num_heads=num_heads)

    function = ir.serde.deserialize_function(MultiAxisRotary.to_function_proto())
    function.opset_imports[""] = opset
    # The plugin-only attributes are declared too, so checkers accept them on the node.
    for name, value in (("plugin_namespace", DOMAIN), ("plugin_version", PLUGIN_VERSION), ("aot", 1)):
        function.attributes[name] = ir.Attr(name, ir.AttributeType.STRING if isinstance(value, str) else ir.AttributeType.INT, value)
    return function


def node_attributes(spec: RopeSpec, num_heads: int) -> dict:
    """The attributes a ``MultiAxisRotary`` node carries for this spec (the TensorRT plugin's
    attribute fields, then the parser's)."""
    return {
        "rotary_dim": spec.rotary_dim,
        "interleaved": int(spec.layout == "interleaved"),
        "num_heads": int(num_heads),
        "head_dim": spec.head_dim,
        "attention_scaling": float(spec.attention_scaling),
        "plugin_namespace": DOMAIN,
        "plugin_version": PLUGIN_VERSION,
        "aot": 1,
    }


def build_plugin_model(spec: RopeSpec, *, opset: int, dtype: str, num_q_heads: int, num_kv_heads: int) -> ir.Model:
    """The plugin-form graph as an ONNX IR model (`rope_export.export.build_onnx` checks and
    labels it)."""
    from onnx_ir.tensor_adapters import from_torch_dtype

    reason = form_refusal("plugin", spec)
    if reason:
        raise ValueError(reason)
    elem = from_torch_dtype(torch_dtype(dtype))
    batch, seq = ir.SymbolicDim("batch"), ir.SymbolicDim("sequence")
    pos_shape = list(spec.position_shape(batch, seq))

    def value(name, dt, shape):
        return ir.Value(name=name, type=ir.TensorType(dt), shape=ir.Shape(shape))

    q = value("q", elem, [batch, num_q_heads, seq, spec.head_dim])
    k = value("k", elem, [batch, num_kv_heads, seq, spec.head_dim])
    pos = value("position_ids", ir.DataType.INT64, pos_shape)
    inv_freq = ir.Value(name="inv_freq", const_value=ir.tensor(np.asarray(spec.inv_freq, dtype=np.float32)))
    axis_of_pair = ir.Value(name="axis_of_pair", const_value=ir.tensor(np.asarray(spec.axis_of_pair, dtype=np.int32)))
    for v in (inv_freq, axis_of_pair):
        v.type, v.shape = ir.TensorType(v.const_value.dtype), ir.Shape(v.const_value.shape)
    nodes, outputs = [], []
    for x, heads, out_name in ((q, num_q_heads, "q_rot"), (k, num_kv_heads, "k_rot")):
        node = ir.node(OP_TYPE, [x, pos, inv_freq, axis_of_pair], attributes=node_attributes(spec, heads), domain=DOMAIN, name=f"{out_name}_rotary")
        node.outputs[0].name = out_name
        node.outputs[0].type = ir.TensorType(elem)
        node.outputs[0].shape = ir.Shape(list(x.shape))
        nodes.append(node)
        outputs.append(node.outputs[0])
    graph = ir.Graph([q, k, pos], outputs, nodes=nodes, initializers=[inv_freq, axis_of_pair], opset_imports={"": opset, DOMAIN: 1}, name="rope_export_plugin")
    function = plugin_function(opset)
    return ir.Model(graph, ir_version=10, producer_name="rope_export", functions=[function])
