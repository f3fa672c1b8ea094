"""Tests of rope_export.export.metadata: what a file says about itself, written, read back, and bounded when crafted."""

from __future__ import annotations

import json
import time

import onnx
import pytest

import rope_export as rx
from rope_export.cli import main
from rope_export.export import build_onnx

pytest.importorskip("onnxruntime")


def test_metadata_and_determinism(exported, tmp_path):
    spec = rx.load_preset("qwen3-vl-8b")
    path = exported("qwen3-vl-8b")
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert rx.RopeSpec.from_dict(meta["rope_export.spec"]) == spec
    assert meta["rope_export.version"] == rx.__version__ and meta["rope_export.form"] == "fused"
    again = rx.export_onnx(spec, tmp_path / "again.onnx")
    assert open(path, "rb").read() == open(again, "rb").read()


@pytest.mark.parametrize("meta, message", [
    ('{"head_dim": 20000000, "rotary_dim": 2, "inv_freq": [1.0]}', "head_dim must be a positive int <= 8192"),
    ("[1,2,3]", "not a valid spec"),
    ("null", "not a valid spec"),
    ('{"head_dim": 8, "rotary_dim": 8, "inv_freq": 5}', "not a valid spec"),
])
def test_crafted_metadata_exits_2_with_a_message(tmp_path, capsys, meta, message):
    model = build_onnx(rx.RopeSpec.standard(8), form="fused")
    for prop in model.metadata_props:
        if prop.key == "rope_export.spec":
            prop.value = meta
    onnx.save(model, tmp_path / "m.onnx")
    start = time.monotonic()
    assert main(["validate", str(tmp_path / "m.onnx")]) == 2
    assert message in capsys.readouterr().err and time.monotonic() - start < 30
    assert main(["inspect", str(tmp_path / "m.onnx")]) == 2


def test_sizes_read_from_files_are_bounded_before_anything_is_allocated(tmp_path, capsys):
    start = time.monotonic()
    for cfg in ({"hidden_size": 400000000, "num_attention_heads": 1}, {"hidden_size": 10**30, "num_attention_heads": 1}):
        with pytest.raises(ValueError, match="more than rope_export takes"):
            rx.RopeSpec.from_hf_config(cfg)
    with pytest.raises(ValueError, match="max_position_embeddings must be a positive int <= 2\\*\\*40"):
        rx.RopeSpec.from_hf_config({"hidden_size": 64, "num_attention_heads": 1, "max_position_embeddings": 2**63})
    model = build_onnx(rx.RopeSpec.standard(8), form="fused")
    for key, value, message in (("rope_export.spec", json.dumps({**rx.RopeSpec.standard(8).to_dict(), "num_axes": 5 * 10**6}),
                                 "num_axes must be a positive int <= 8"),
                                ("rope_export.table_length", "0", "table_length' metadata must be a positive int"),
                                ("rope_export.table_length", "-5", "table_length' metadata must be a positive int"),
                                ("rope_export.table_length", "1e30", "table_length' metadata must be a positive int"),
                                ("rope_export.spec", "[" * 100000 + "]" * 100000, "nested too deeply")):
        crafted = onnx.ModelProto()
        crafted.CopyFrom(model)
        for prop in crafted.metadata_props:
            if prop.key == key:
                prop.value = value
        if key not in {p.key for p in crafted.metadata_props}:
            entry = crafted.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(crafted, tmp_path / "m.onnx")
        assert main(["validate", str(tmp_path / "m.onnx")]) == 2
        assert message in capsys.readouterr().err, message
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' * 100000 + "1" + "}" * 100000)
    with pytest.raises(ValueError, match="nests its JSON too deeply"):
        rx.RopeSpec.from_hf_config(str(deep))
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("preset", ["gpt-j-6b", "qwen2-vl-7b"])
@pytest.mark.parametrize("external", [False, True])
def test_a_table_graph_without_metadata_is_read_by_its_guard(tmp_path, preset, external):
    """Without rope_export's metadata a table's length is the guard's bound, read from the graph's
    nodes: its tables end in a NaN row (one more than the positions they cover), and tables kept
    as external data are not read to find it."""
    from rope_export.export.metadata import guard_bound, read_graph

    model = build_onnx(rx.load_preset(preset), form="table", table_length=512)
    assert guard_bound(model) == 512
    del model.metadata_props[:]
    path = tmp_path / "t.onnx"
    onnx.save(model, path, save_as_external_data=external, all_tensors_to_one_file=True, location="t.data",
              size_threshold=1024)
    assert read_graph(str(path)).table_length == 512
    assert guard_bound(onnx.load(path, load_external_data=False)) == 512
    report = rx.validate(path, spec=rx.load_preset(preset), seed=2)
    assert report.passed and report.structure["status"] == "pass", report.table()
    assert any(r.case.startswith("past the table") for r in report.results)
