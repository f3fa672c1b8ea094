"""Tests of rope_export.validate.polygraphy_data: Polygraphy fed real positions from the graph's spec."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import rope_export as rx
from rope_export.validate.polygraphy_data import feeds_for


def test_feeds_reach_far_positions_with_the_graphs_heads_and_no_refusal_case(files, tmp_path):
    for preset in ("mistral-7b", "qwen2-vl-7b"):
        path = files[preset]
        feeds = feeds_for(path, seed=3)
        spec = rx.load_preset(preset)
        assert len(feeds) >= 4 and all(set(f) == {"q", "k", "position_ids"} for f in feeds)
        assert max(int(f["position_ids"].max()) for f in feeds) >= spec.max_position_embeddings - 64
        assert all(f["q"].shape[-1] == spec.head_dim and f["q"].dtype.name == "float32" for f in feeds)
    # a table graph: positions stay inside the table (Polygraphy compares outputs, expects no errors)
    table = rx.load_preset("mistral-7b")
    from rope_export.export import export_onnx

    path = export_onnx(table, tmp_path / "mt.onnx", form="table", table_length=4096)
    assert max(int(f["position_ids"].max()) for f in feeds_for(path)) < 4096


def test_polygraphy_runs_the_graph_on_those_feeds(files, tmp_path):
    pytest.importorskip("polygraphy", reason="Polygraphy is not installed (pip install polygraphy)")
    script = subprocess.run([sys.executable, "-m", "rope_export.validate.polygraphy_data"], capture_output=True,
                            text=True, check=True).stdout.strip()
    inputs = tmp_path / "inputs.json"
    polygraphy = os.path.join(os.path.dirname(sys.executable), "polygraphy")  # its console script, beside python
    out = subprocess.run([polygraphy, "run", str(files["mistral-7b"]), "--onnxrt", "--data-loader-script", script,
                          "--save-inputs", str(inputs)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    from polygraphy.json import load_json

    saved = load_json(str(inputs))
    assert max(int(f["position_ids"].max()) for f in saved) >= 32768 - 64  # up to the table's end (auto: a table)


def test_a_graph_without_a_spec_is_a_clear_error(files, tmp_path):
    import onnx

    model = onnx.load(files["mistral-7b"])
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "g.onnx")
    with pytest.raises(ValueError, match="no rope_export.spec metadata"):
        feeds_for(str(tmp_path / "g.onnx"))


def test_seed_and_graph_overrides_are_checked(files, tmp_path, monkeypatch):
    from rope_export.validate import polygraphy_data as loader

    monkeypatch.setattr(sys, "argv", ["polygraphy", "run", files["mistral-7b"]])
    for bad in ("abc", "-1", str(2**70)):
        monkeypatch.setenv("ROPE_EXPORT_SEED", bad)
        with pytest.raises(ValueError, match="ROPE_EXPORT_SEED"):
            next(loader.load_data())
    monkeypatch.setenv("ROPE_EXPORT_SEED", "4")
    monkeypatch.setenv("ROPE_EXPORT_GRAPH", files["qwen2-vl-7b"])
    with pytest.raises(ValueError, match="would be compared on another"):
        next(loader.load_data())
    monkeypatch.delenv("ROPE_EXPORT_GRAPH")
    assert set(next(loader.load_data())) == {"q", "k", "position_ids"}
