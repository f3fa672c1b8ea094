"""Tests of rope_export.cli: listings, progress, exit codes, one-line errors, files it reads and writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import onnx
import pytest

import rope_export as rx
from rope_export.cli import main
from rope_export.export import build_onnx, set_metadata


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


CLI = [sys.executable, "-m", "rope_export.cli"]


def _bad_graph(path):
    good = rx.load_preset("llama-3.1-8b")
    inv = list(good.inv_freq)
    inv[10] *= 1 + 1e-3
    model = build_onnx(rx.RopeSpec.from_dict({**good.to_dict(), "inv_freq": inv}), form="fused")
    set_metadata(model, good, "fused", "float32", 23)
    onnx.save(model, path)
    return str(path)


def test_closed_pipe_keeps_the_failing_exit_status(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _bad_graph(tmp_path / "bad.onnx")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(f"{sys.executable} -m rope_export.cli validate {path} --seed 1 | head -1; exit ${{PIPESTATUS[0]}}",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr[-500:]
    assert "Traceback" not in out.stderr


def test_inspect_escapes_control_characters(tmp_path, capsys):
    spec = rx.RopeSpec.standard(8, name="evil\x1b[2J\x07name")
    path = rx.export_onnx(spec, tmp_path / "e.onnx", form="fused")
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out
    assert main(["inspect", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["name"] == "evil\x1b[2J\x07name"


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    proc = subprocess.Popen(CLI + ["export", "--preset", "qwen2-vl-7b", "--form", "decomposed", "--out", str(tmp_path / "x.onnx")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the export finished before the signal")
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_small_things(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and rx.__version__ in capsys.readouterr().out
    assert main(["presets", "--json"]) == 0
    assert "qwen2-vl-7b" in json.loads(capsys.readouterr().out)
    assert main(["export", "--preset", "lama-3.1-8b", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "did you mean llama-3.1-8b" in capsys.readouterr().err
    assert main(["export", "--preset", "qwen2-vl-7b", "--opset", "17", "--form", "fused", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--form decomposed" in err and "form='" not in err
    for bad in (["bench", "--shape", "1x2048"], ["bench", "--heads", "4x2"], ["bench", "--repeat", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(bad)
        assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "(default: rope.onnx)" in capsys.readouterr().out


def test_no_command_writes_over_its_own_input(tmp_path):
    pytest.importorskip("onnxruntime")
    graph = str(rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "g.onnx", form="fused"))
    before = open(graph, "rb").read()
    assert main(["validate", graph, "--json", graph]) == 2
    assert open(graph, "rb").read() == before
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"hidden_size": 256, "num_attention_heads": 4}))
    text = config.read_text()
    assert main(["export", "--hf-config", str(config), "--out", str(config)]) == 2
    link = tmp_path / "link.onnx"
    link.symlink_to(config)
    assert main(["export", "--hf-config", str(config), "--out", str(link)]) == 2
    hard = tmp_path / "hard.onnx"
    os.link(config, hard)
    assert main(["export", "--hf-config", str(config), "--out", str(hard)]) == 2
    assert config.read_text() == text


def test_command_line_mistakes_are_one_line_exits(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    spec_args = ["export", "--preset", "mistral-7b"]
    cases = [
        (spec_args + ["--form", "table", "--table-length", "500000", "--out", str(tmp_path / "t.onnx")], "above the 64 MiB"),
        (spec_args + ["--form", "table", "--table-length", "30000000", "--force", "--out", str(tmp_path / "t.onnx")],
         "past the 1024 MiB"),
        (spec_args + ["--out", str(tmp_path / "x.json")], "must end in .onnx"),
        (spec_args + ["--out", str(tmp_path / "x.textproto")], "must end in .onnx"),
        (spec_args + ["--opset", "30", "--out", str(tmp_path / "o.onnx")], "opset must be an int from 17 to"),
        (["export", "--preset", "qwen2-vl-7b:vision", "--form", "table", "--out", str(tmp_path / "p.onnx")], "--table-length N"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        main(["validate", "x.onnx", "--seed", str(2**70)])
    assert "expected an integer in [0, 2**63)" in capsys.readouterr().err
    for target, message in ((tmp_path, "is a directory"), ("/dev/null", "not a regular file")):
        assert main(["validate", str(target)]) == 2
        assert message in capsys.readouterr().err


def test_a_name_the_terminal_cannot_encode_is_escaped_not_fatal(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "modèle-ρ.onnx"
    rx.export_onnx(rx.RopeSpec.standard(8), path, form="fused")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    out = subprocess.run([*CLI, "validate", str(path), "--seed", "1"], capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert b"PASSED" in out.stdout and b"mod\\xe8le" in out.stdout


def test_more_inputs_a_command_reads_are_never_written_over(tmp_path):
    """A config folder's config.json, a graph's external data: inputs too."""
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 256, "num_attention_heads": 4}))
    text = (folder / "config.json").read_text()
    (folder / "out.onnx").symlink_to(folder / "config.json")
    assert main(["export", "--hf-config", str(folder), "--out", str(folder / "out.onnx")]) == 2
    assert main(["plot", "--hf-config", str(folder), "--out", str(folder / "out.onnx")]) == 2
    assert (folder / "config.json").read_text() == text
    model = build_onnx(rx.load_preset("mistral-7b"), form="table")
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.data", size_threshold=1024)
    data = (tmp_path / "ext.data").read_bytes()
    assert main(["validate", str(tmp_path / "ext.onnx"), "--json", str(tmp_path / "ext.data")]) == 2
    assert (tmp_path / "ext.data").read_bytes() == data
    report = rx.validate(str(tmp_path / "ext.onnx"), seed=1)  # its external tables are checked too
    assert report.passed and report.structure["status"] == "pass" and report.structure["constants"] > 4_000_000


def test_a_report_never_replaces_the_commands_own_output(tmp_path):
    pytest.importorskip("onnxruntime")
    graph = rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "g.onnx", form="fused")
    out = subprocess.run(f"{sys.executable} -m rope_export.cli validate {graph} --json /dev/stdout > {tmp_path}/o.txt",
                         shell=True, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "is where this command prints" in out.stderr


def test_cli_export_inspect_and_errors(tmp_path, capsys):
    out = tmp_path / "pix.onnx"
    assert main(["export", "--preset", "pixtral-12b", "--out", str(out), "--dtype", "float16"]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RotaryEmbedding 2" in text and "input: position_ids int64 [2, batch, sequence]" in text
    assert "float16" in text and "pixtral-12b" in text
    assert main(["export", "--preset", "nope", "--out", str(tmp_path / "n.onnx")]) == 2
    assert main(["export", "--preset", "mistral-7b", "--opset", "22", "--form", "fused", "--out", str(tmp_path / "n.onnx")]) == 2
    assert main(["export", "--preset", "mistral-7b", "--out", str(tmp_path / "no" / "dir.onnx")]) == 2
    assert not (tmp_path / "n.onnx").exists()
    err = capsys.readouterr().err
    assert "unknown preset" in err and "needs opset >= 23" in err and "does not exist" in err
