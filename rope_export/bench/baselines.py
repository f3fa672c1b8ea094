"""What our paths are timed against: the HF-style torch module and its own dynamo export (the
baselines users have today), the bare ``RotaryEmbedding`` op fed precomputed cos/sin, and a
table graph without its guard row (what the guard costs)."""

from __future__ import annotations

import torch

from .._util import quiet_exporter
from ..export.graph import example_inputs
from ..spec import RopeSpec

__all__ = ["HFStyleRotary", "hf_baseline_graph", "op_alone_graph", "unguarded_table_graph"]


class HFStyleRotary(torch.nn.Module):
    """The rotary as transformers' code writes it, the baseline users run today. Half layout
    (Llama / Qwen2-VL): cat(freqs, freqs), cos/sin in the activation dtype, rotate_half with
    cat; M-RoPE recomposes sections with split + cat, 2D takes rows then columns. Interleaved
    layout (GPT-J's modeling code): cos/sin repeat_interleave'd, rotate_every_two as a stack
    of the odd and even dims.

    It assumes contiguous sections (and, for 2D, rows first): for interleaved M-RoPE (Qwen3-VL)
    and Llama 4 vision's columns-first grid it times the same amount of work but does not
    compute that model's rotation.
    """

    def __init__(self, spec: RopeSpec):
        super().__init__()
        self.register_buffer("inv_freq", torch.tensor(spec.inv_freq, dtype=torch.float32))
        self.sections = spec.scaling_dict.get("mrope_section") if spec.num_axes == 3 else None
        self.rot = spec.rotary_dim
        self.interleaved = spec.layout == "interleaved"

    @staticmethod
    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    @staticmethod
    def rotate_every_two(x):
        return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)

    def forward(self, q, k, position_ids):
        freqs = position_ids[..., None].float() * self.inv_freq
        if self.sections:
            freqs = torch.cat([m[i % 3] for i, m in enumerate(freqs.split(self.sections, dim=-1))], dim=-1)
        elif freqs.dim() == 4:  # 2D specs: rows then columns, as the vision encoders lay them out
            half = freqs.shape[-1] // 2
            freqs = torch.cat([freqs[0, ..., :half], freqs[1, ..., half:]], dim=-1)
        emb = freqs.repeat_interleave(2, dim=-1) if self.interleaved else torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(q.dtype)[:, None], emb.sin().to(q.dtype)[:, None]
        rotate = self.rotate_every_two if self.interleaved else self.rotate_half
        out = []
        for x in (q, k):
            xr, xp = x[..., : self.rot], x[..., self.rot :]
            out.append(torch.cat(((xr * cos) + (rotate(xr) * sin), xp), dim=-1))
        return tuple(out)


def hf_baseline_graph(spec: RopeSpec, path: str, hq: int, hk: int, dtype: torch.dtype):
    args = example_inputs(spec, batch=3, seq=11, num_q_heads=hq, num_kv_heads=hk, dtype=dtype)
    b, s = torch.export.Dim("batch"), torch.export.Dim("sequence")
    rank = len(spec.position_shape(1, 1))
    pos_axes = {rank - 2: b, rank - 1: s}
    with quiet_exporter():
        program = torch.onnx.export(HFStyleRotary(spec).eval(), args, dynamo=True, opset_version=23, optimize=True,
                                    dynamic_shapes={"q": {0: b, 2: s}, "k": {0: b, 2: s}, "position_ids": pos_axes},
                                    input_names=["q", "k", "position_ids"], output_names=["q_rot", "k_rot"])
    program.save(path)
    return path


def op_alone_graph(spec: RopeSpec, hq: int, hk: int, dtype: str):
    """Two RotaryEmbedding nodes fed cos/sin [B, S, P] as inputs: the op's own cost."""
    from onnx import TensorProto, helper

    t = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    attrs = dict(rotary_embedding_dim=spec.rotary_dim, interleaved=int(spec.layout == "interleaved"))
    nodes = [helper.make_node("RotaryEmbedding", [x, "cos", "sin"], [f"{x}_rot"], num_heads=h, **attrs)
             for x, h in (("q", hq), ("k", hk))]
    vi = helper.make_tensor_value_info
    inputs = [vi("q", t, ["B", hq, "S", spec.head_dim]), vi("k", t, ["B", hk, "S", spec.head_dim]),
              vi("cos", t, ["B", "S", spec.num_pairs]), vi("sin", t, ["B", "S", spec.num_pairs])]
    outputs = [vi("q_rot", t, ["B", hq, "S", spec.head_dim]), vi("k_rot", t, ["B", hk, "S", spec.head_dim])]
    return helper.make_model(helper.make_graph(nodes, "op_alone", inputs, outputs), opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def unguarded_table_graph(model):
    """A table-form graph (``onnx.ModelProto``, one axis or several) without its guard: the ops
    on the positions removed (the ``Where`` that sends positions outside the table to its NaN
    row and everything that only computes its condition), the tables' NaN row dropped, the
    lookups fed ``position_ids`` as given. The graph rope_export wrote before the guard;
    positions past its table read no row of theirs (onnxruntime refuses them, OpenVINO returns
    another row's values)."""
    from onnx import numpy_helper

    from ..export.metadata import guard_nodes

    where = guard_nodes(model)
    if len(where) != 1:
        raise ValueError(f"not a guarded table graph: {len(where)} Where nodes choose among its position_ids")
    producer = {o: n for n in model.graph.node for o in n.output}
    guard, todo = [where[0]], [where[0].input[0]]
    while todo:  # the condition's ops, back to the graph's inputs and constants
        node = producer.get(todo.pop())
        if node is not None and node not in guard:
            guard.append(node)
            todo.extend(node.input)
    for n in guard:
        model.graph.node.remove(n)
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == where[0].output[0]:
                n.input[i] = "position_ids"
    for t in model.graph.initializer:
        if t.name.startswith(("cos_table", "sin_table")):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:-1], t.name))
    return model
