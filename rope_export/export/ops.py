"""The rotary as small torch custom ops, and their onnxscript translations for the dynamo
exporter. Each op computes in torch what its ONNX node computes, so a module built from them
runs eagerly and exports to exactly one node per tensor.

* `rotary_op` -> ``RotaryEmbedding`` (opset 23) fed per-token cos/sin ``[B, S, P]``;
* `table_op` -> ``RotaryEmbedding`` looking rows of a ``[L, P]`` table up by position_ids;
* `contrib_op` -> onnxruntime's ``com.microsoft.RotaryEmbedding`` fed this batch's per-token
  table ``[B*S, P]`` and each token's row index.
"""

from __future__ import annotations

import torch

from ..modules import apply_rotary

__all__ = ["rotary_op", "table_op", "contrib_op", "TRANSLATIONS"]



@torch.library.custom_op("rope_export::rotary_embedding", mutates_args=())
def rotary_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: int, rotary_dim: int,
              num_heads: int) -> torch.Tensor:
    """x ``[B, H, S, D]``, cos/sin ``[B, S, rotary_dim // 2]`` -> rotated x (same shape and dtype)."""
    return apply_rotary(x, cos.to(torch.float32), sin.to(torch.float32), "interleaved" if interleaved else "half")


@rotary_op.register_fake
def _(x, cos, sin, interleaved, rotary_dim, num_heads):
    return torch.empty_like(x)


def _rotary_onnx(x, cos, sin, interleaved: int, rotary_dim: int, num_heads: int):
    from onnxscript import opset23 as op

    # num_heads is set on 4D inputs too: onnxruntime 1.23 rejects partial rotary without it.
    return op.RotaryEmbedding(x, cos, sin, interleaved=interleaved, rotary_embedding_dim=rotary_dim, num_heads=num_heads)


@torch.library.custom_op("rope_export::contrib_rotary_embedding", mutates_args=())
def contrib_op(x: torch.Tensor, token_index: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: int,
               rotary_dim: int, num_heads: int) -> torch.Tensor:
    """cos/sin are per-token tables ``[B*S, P]``; token_index ``[B, S]`` = b*S + s picks each token's row."""
    batch, seq = token_index.shape
    return rotary_op(x, cos[token_index.reshape(-1)].reshape(batch, seq, -1),
                     sin[token_index.reshape(-1)].reshape(batch, seq, -1), interleaved, rotary_dim, num_heads)


@contrib_op.register_fake
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
def table_op(x: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor, position_ids: torch.Tensor,
             interleaved: int, rotary_dim: int, num_heads: int) -> torch.Tensor:
    """cos/sin tables ``[L, P]`` looked up by position_ids ``[B, S]`` (each < L)."""
    return rotary_op(x, cos_table[position_ids], sin_table[position_ids], interleaved, rotary_dim, num_heads)


@table_op.register_fake
def _(x, cos_table, sin_table, position_ids, interleaved, rotary_dim, num_heads):
    return torch.empty_like(x)


def _table_onnx(x, cos_table, sin_table, position_ids, interleaved: int, rotary_dim: int, num_heads: int):
    from onnxscript import opset23 as op

    return op.RotaryEmbedding(x, cos_table, sin_table, position_ids, interleaved=interleaved,
                              rotary_embedding_dim=rotary_dim, num_heads=num_heads)


# The dynamo exporter's custom_translation_table for these ops.
TRANSLATIONS = {
    torch.ops.rope_export.rotary_embedding.default: _rotary_onnx,
    torch.ops.rope_export.contrib_rotary_embedding.default: _contrib_onnx,
    torch.ops.rope_export.table_rotary_embedding.default: _table_onnx,
}
