"""rope_export.cli: what a newcomer meets first — quick listings, progress, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import rope_export as rx
from rope_export.cli import main


@pytest.mark.parametrize("argv", [["presets"], ["inspect", "GRAPH"]])
def test_listing_commands_do_not_import_torch(argv, tmp_path):
    graph = tmp_path / "g.onnx"
    rx.export_onnx(rx.load_preset("mistral-7b"), graph, form="fused")
    argv = [str(graph) if a == "GRAPH" else a for a in argv]
    code = ("import sys; from rope_export.cli import main; code = main(%r); "
            "sys.exit(code or (3 if 'torch' in sys.modules else 0))" % argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # 3: torch was imported


def test_presets_describe_the_part_they_name(capsys):
    assert main(["presets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["qwen2-vl-7b"].endswith("(text)") and "M-RoPE" in lines["qwen2-vl-7b"]
    assert lines["qwen2-vl-7b:vision"].endswith("(vision)") and "M-RoPE" not in lines["qwen2-vl-7b:vision"]


def test_export_says_each_stage_and_validates_where_asked(tmp_path, capsys):
    stages = []
    rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "a.onnx", form="fused", progress=stages.append)
    assert [s.split(" (")[0] for s in stages] == ["building the fused graph", "checking the graph", f"writing {tmp_path / 'a.onnx'}"]
    report = tmp_path / "r.json"
    assert main(["export", "--preset", "mistral-7b", "--out", str(tmp_path / "b.onnx"), "--validate",
                 "--providers", "cpu", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["passed"] is True
    capsys.readouterr()
    assert main(["export", "--preset", "mistral-7b", "--out", str(tmp_path / "c.onnx"), "--json", str(report)]) == 2
    assert "apply to --validate" in capsys.readouterr().err
    # Progress is for terminals: a log (pytest's capture is not a tty) gets the result alone.
    assert main(["export", "--preset", "mistral-7b", "--out", str(tmp_path / "d.onnx"), "--form", "fused"]) == 0
    assert capsys.readouterr().err == ""


def test_vision_table_without_a_length_says_which_option(tmp_path, capsys):
    assert main(["export", "--preset", "qwen2-vl-7b:vision", "--form", "table", "--out", str(tmp_path / "v.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pass --table-length N)" in err and err.count("--table-length") == 1


def test_constructors_name_an_odd_head_dim_first():
    with pytest.raises(ValueError, match="head_dim must be even, got 127"):
        rx.RopeSpec.mrope(127, sections=[16, 24, 24], theta=1e6)
    with pytest.raises(ValueError, match="head_dim must be a multiple of 4 for 2D RoPE, got 66"):
        rx.RopeSpec.axial_2d(66)
    with pytest.raises(ValueError, match="positive int"):
        rx.RopeSpec.standard(0)
