"""Hostile and careless input: the validator never passes a wrong graph, files and the CLI
behave like a good Unix tool, bad config and module input is a ValueError naming the field."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import torch

import rope_export as rx
from rope_export.cli import main
from rope_export.export import build_onnx, read_graph, set_metadata
from rope_export.validate import compare

pytest.importorskip("onnxruntime")
CLI = [sys.executable, "-m", "rope_export.cli"]


def _bad_graph(path):
    good = rx.load_preset("llama-3.1-8b")
    inv = list(good.inv_freq)
    inv[10] *= 1 + 1e-3
    model = build_onnx(rx.RopeSpec.from_dict({**good.to_dict(), "inv_freq": inv}), form="fused")
    set_metadata(model, good, "fused", "float32", 23)
    onnx.save(model, path)
    return str(path)


# ------------------------------------------------------------------ validator
def test_closed_pipe_keeps_the_failing_exit_status(tmp_path):
    path = _bad_graph(tmp_path / "bad.onnx")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(f"{sys.executable} -m rope_export.cli validate {path} --seed 1 | head -1; exit ${{PIPESTATUS[0]}}",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr[-500:]
    assert "Traceback" not in out.stderr


def test_output_shape_and_dtype_are_checked_before_numbers(tmp_path):
    """A graph whose q_rot is [1, B, H, S, D] broadcasts against the reference: it must FAIL."""
    spec = rx.load_preset("mistral-7b")
    model = build_onnx(spec, form="fused")
    graph = model.graph
    for out in graph.output:
        if out.name == "q_rot":
            producer = next(n for n in graph.node if "q_rot" in n.output)
            producer.output[list(producer.output).index("q_rot")] = "q_rot_4d"
            graph.node.append(onnx.helper.make_node("Unsqueeze", ["q_rot_4d", "axes0"], ["q_rot"]))
            graph.initializer.append(onnx.numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"))
            out.type.tensor_type.shape.dim.insert(0, onnx.TensorShapeProto.Dimension(dim_value=1))
    onnx.save(model, tmp_path / "5d.onnx")
    report = rx.validate(tmp_path / "5d.onnx", seed=1)
    assert not report.passed
    assert any("shape" in r.detail for r in report.results), report.table()
    assert not compare(np.full(3, np.nan), np.full(3, np.nan), {"rtol": 1e-5, "atol": 1e-6})["ok"]  # NaN == NaN fails


def test_long_context_configs_validate_and_auto_caps_the_table(tmp_path):
    cfg = {"hidden_size": 5120, "num_attention_heads": 40, "max_position_embeddings": 10485760}  # Llama 4 text
    spec = rx.RopeSpec.from_hf_config(cfg)
    path = rx.export_onnx(spec, tmp_path / "long.onnx")
    assert read_graph(path).form == "fused"  # a 10M-row table would be 5 GB
    assert rx.validate(path, seed=3).passed
    assert read_graph(rx.export_onnx(rx.load_preset("llama-3.1-8b"), tmp_path / "l.onnx")).form == "table"


@pytest.mark.parametrize("meta, message", [
    ('{"head_dim": 20000000, "rotary_dim": 2, "inv_freq": [1.0]}', "exceed"),
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
    if message != "exceed":
        assert main(["inspect", str(tmp_path / "m.onnx")]) == 2


def test_inspect_escapes_control_characters(tmp_path, capsys):
    spec = rx.RopeSpec.standard(8, name="evil\x1b[2J\x07name")
    path = rx.export_onnx(spec, tmp_path / "e.onnx", form="fused")
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out
    assert main(["inspect", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["name"] == "evil\x1b[2J\x07name"


# ------------------------------------------------------------------------ files
def test_files_honour_the_umask_write_through_symlinks_and_refuse_special_files(tmp_path):
    old = os.umask(0o022)
    try:
        path = rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "a.onnx", form="fused")
    finally:
        os.umask(old)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    target, link = tmp_path / "target.onnx", tmp_path / "link.onnx"
    link.symlink_to(target)
    rx.export_onnx(rx.RopeSpec.standard(8), link, form="fused")
    assert link.is_symlink() and target.is_file()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        rx.export_onnx(rx.RopeSpec.standard(8), fifo, form="fused")
    assert main(["export", "--preset", "mistral-7b", "--out", "/dev/null"]) == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".rope_export-")]


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


# ----------------------------------------------------------------- config input
BASE = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}


@pytest.mark.parametrize("cfg, field", [
    ({**BASE, "rope_theta": float("inf")}, "rope_theta"),
    ({**BASE, "rope_theta": [1e6]}, "rope_theta"),
    ({**BASE, "head_dim": 128.7}, "head_dim"),
    ({**BASE, "rope_scaling": {"type": "dynamic", "factor": float("nan")}}, "factor"),
    ({**BASE, "rope_scaling": {"type": "dynamic", "factor": -1}}, "factor"),
    ({**BASE, "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 0}},
     "original_max_position_embeddings"),
    ({**BASE, "rope_scaling": "linear"}, "rope_scaling"),
    ({**BASE, "rope_scaling": [1, 2]}, "rope_scaling"),
    ({**BASE, "partial_rotary_factor": 1.5}, "partial_rotary_factor"),
])
def test_bad_config_fields_are_named(cfg, field):
    with pytest.raises(ValueError, match=field):
        rx.RopeSpec.from_hf_config(cfg)


def test_config_files_that_are_not_configs(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            rx.RopeSpec.from_hf_config(path)
    preset_file = os.path.join(os.path.dirname(rx.__file__), "..", "models", "mistral-7b.json")
    if os.path.exists(preset_file):
        with pytest.raises(ValueError, match="preset file"):
            rx.RopeSpec.from_hf_config(preset_file)
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**BASE, "model_type": "llama"}))
    assert main(["export", "--hf-config", str(folder), "--out", str(tmp_path / "m.onnx"), "--form", "fused"]) == 0
    assert "my-model:" in capsys.readouterr().out


# ---------------------------------------------------------------- module input
def test_rotary_module_refuses_mismatched_inputs():
    rope = rx.RotaryEmbedding(rx.RopeSpec.standard(8))
    q = torch.randn(1, 2, 5, 8)
    pos = torch.arange(5)[None]
    for bad_args, message in [((q, q, torch.zeros(3, 5, dtype=torch.int64)), "batch"),
                              ((q, q, torch.zeros(1, 1, dtype=torch.int64)), "positions per row"),
                              ((q.long(), q.long(), pos), "float32"),
                              ((q, q[:, :, :3], pos), "disagree")]:
        with pytest.raises(ValueError, match=message):
            rope(*bad_args)
    q2 = torch.randn(2, 2, 5, 8)  # batch-1 positions are shared: documented
    assert rope(q2, q2, pos)[0].shape == q2.shape
    longrope = rx.RotaryEmbedding(rx.load_preset("phi-3-mini-128k"))
    empty = torch.randn(1, 2, 0, 96)
    assert longrope(empty, empty, torch.zeros(1, 0, dtype=torch.int64))[0].shape == empty.shape


@pytest.mark.hf
def test_patch_refuses_the_rotary_itself_and_survives_deepcopy():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    model = transformers.LlamaModel(cfg)
    with pytest.raises(ValueError, match="patch the model that holds it"):
        rx.hf.patch(model.rotary_emb)
    original = modeling_llama.apply_rotary_pos_emb
    rx.hf.patch(model)
    twin = copy.deepcopy(model)
    rx.hf.unpatch(twin)
    assert type(twin.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    assert modeling_llama.apply_rotary_pos_emb is not original  # the original is still patched
    rx.hf.unpatch(model)
    assert modeling_llama.apply_rotary_pos_emb is original and type(model.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    model.to(torch.float32)  # no recursion


# ------------------------------------------------------------------------- CLI
def test_cli_small_things(tmp_path, capsys):
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


def test_bfloat16_on_cpu_says_to_use_cuda(tmp_path):
    path = rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "bf.onnx", form="fused", dtype="bfloat16")
    report = rx.validate(path, seed=1)
    assert not report.passed and "no bfloat16 kernels" in report.table()


def test_help_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, rope_export.cli as c; "
                          "c.build_parser().format_help(); print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
