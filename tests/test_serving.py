"""Tests of rope_export.serving: the loop a server runs, on a hand-made graph whose logits say
which position each token sat at (logit argmax = position + 1), so the positions the loop feeds
are read back from the tokens it generates. The loop against real decoders: tests/hf/test_with_past.py."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rope_export.serving import METADATA_KEY, generate_onnx, read_serving

pytest.importorskip("onnxruntime")
VOCAB = 64


def _graph(path, meta=None):
    """input_ids, attention_mask, position_ids [B, S], one layer of past [B, 1, P, 1]: logits put
    their maximum at position + 1, the presents append each token's position to the cache."""
    table = numpy_helper.from_array(np.roll(np.eye(VOCAB, dtype=np.float32), 1, axis=1), "table")
    axes = numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "axes")
    nodes = [helper.make_node("Gather", ["table", "position_ids"], ["logits"], axis=0),
             helper.make_node("Cast", ["position_ids"], ["pos_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["pos_f", "axes"], ["new"]),
             helper.make_node("Concat", ["past_key_0", "new"], ["present_key_0"], axis=2),
             helper.make_node("Concat", ["past_value_0", "new"], ["present_value_0"], axis=2),
             helper.make_node("Identity", ["input_ids"], ["ids_unused"]),
             helper.make_node("Identity", ["attention_mask"], ["mask_unused"])]
    ints = lambda name, dims: helper.make_tensor_value_info(name, TensorProto.INT64, dims)  # noqa: E731
    floats = lambda name, dims: helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)  # noqa: E731
    graph = helper.make_graph(
        nodes, "fake", [ints("input_ids", ["batch", "sequence"]), ints("attention_mask", ["batch", "total"]),
                        ints("position_ids", ["batch", "sequence"]), floats("past_key_0", ["batch", 1, "past", 1]),
                        floats("past_value_0", ["batch", 1, "past", 1])],
        [floats("logits", ["batch", "sequence", VOCAB]), floats("present_key_0", ["batch", 1, "total", 1]),
         floats("present_value_0", ["batch", 1, "total", 1])], [table, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta or {"inputs": [], "outputs": ["logits", "present_key_0", "present_value_0"],
                                      "layers": 1, "tokens": "input_ids", "positions": "text", "recompute_cache_at": None})
    onnx.save(model, path)
    return str(path)


def test_text_positions_follow_the_mask_then_continue(tmp_path):
    path = _graph(tmp_path / "g.onnx")
    ids = np.zeros((2, 5), np.int64)
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    tokens, logits = generate_onnx(path, ids, mask, steps=4)
    # row 0 ends its prompt at position 4, row 1 (two padding slots) at 2: the next tokens sit at
    # 5, 6, 7, 8 and 3, 4, 5, 6, and each generated token is its position + 1
    assert tokens.tolist() == [[5, 6, 7, 8], [3, 4, 5, 6]] and logits.shape == (4, 2, VOCAB)
    # the caller's own positions are continued, not replaced by the mask's
    tokens, _ = generate_onnx(path, ids, mask, steps=2, position_ids=np.array([[30, 31, 32, 33, 34]] * 2))
    assert tokens.tolist() == [[35, 36], [35, 36]]


@pytest.mark.parametrize("kwargs,match", [
    ({"attention_mask": np.full((1, 3), 2)}, "0 and 1"),
    ({"attention_mask": np.array([[1, 1, 0]])}, "left padding only"),
    ({"attention_mask": np.ones((1, 4), np.int64)}, r"input_ids \[B, S\] ints matching"),
    ({"tokens": np.zeros((1, 3), np.float32)}, "ints"),
    ({"tokens": np.zeros((1, 0), np.int64), "attention_mask": np.ones((1, 0), np.int64)}, r"S >= 1"),
    ({"steps": 0}, "steps"),
    ({"rope_deltas": np.array([0])}, "M-RoPE"),
    ({"embed": lambda ids: ids}, "inputs_embeds"),
    ({"position_ids": np.zeros((3, 1, 3), np.int64)}, r"position_ids must be \[1, 3\]"),
    ({"providers": ["BogusExecutionProvider"]}, "not available here"),
    ({"providers": []}, "not available here"),
])
def test_bad_inputs_are_clear_errors(tmp_path, kwargs, match):
    path = _graph(tmp_path / "g.onnx")
    args = {"tokens": np.zeros((1, 3), np.int64), "attention_mask": np.ones((1, 3), np.int64), "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_onnx(path, **args)


@pytest.mark.parametrize("meta", ["not json", json.dumps([1]), json.dumps({"layers": 1}),
                                  json.dumps({"inputs": [], "outputs": ["a"], "layers": 1, "tokens": "input_ids",
                                              "positions": "text"}),
                                  json.dumps({"inputs": [], "outputs": ["a", "b", "c"], "layers": 1, "tokens": "input_ids",
                                              "positions": "text", "vision_graph": "../x.onnx"})])
def test_malformed_metadata_and_files_are_refused(tmp_path, meta):
    path = _graph(tmp_path / "g.onnx")
    model = onnx.load(path)
    model.metadata_props[0].value = meta
    onnx.save(model, path)
    with pytest.raises(ValueError, match="metadata is not what export-hf --with-past writes"):
        read_serving(path)
    (tmp_path / "x.onnx").write_text("not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        read_serving(tmp_path / "x.onnx")
    plain = helper.make_model(helper.make_graph([], "g", [], []))
    with pytest.raises(ValueError, match="no serving metadata"):
        read_serving(plain)
