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
    # Named as the config names itself, never by its folder (a hub snapshot's folder is a hash).
    assert "wrote" in capsys.readouterr().out and rx.export.read_graph(tmp_path / "m.onnx").spec.name == "llama"
    (folder / "config.json").write_text(json.dumps({**BASE, "model_type": "llama", "_name_or_path": "org/My-Llama/"}))
    assert rx.RopeSpec.from_hf_config(str(folder)).name == "My-Llama"
    assert rx.RopeSpec.from_hf_config(str(folder), name="mine").name == "mine"


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


# ------------------------------------------------- issue 21: files, inputs, tracebacks
def test_no_command_writes_over_its_own_input(tmp_path):
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


def test_frequencies_stay_float32_whatever_the_module_is_cast_to():
    spec = rx.load_preset("phi-3-mini-128k")  # LongRoPE: two frequency tables
    q = torch.randn(1, 2, 5, spec.head_dim)
    pos = torch.arange(5)[None] * 9000
    want = rx.RotaryEmbedding(spec)(q, q, pos)
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        module = cast(rx.RotaryEmbedding(spec))
        assert module.inv_freq.dtype == module.long_inv_freq.dtype == torch.float32
        assert torch.equal(module(q, q, pos)[0], want[0])


def test_numbers_a_graph_cannot_hold_are_refused():
    from rope_export.positions import mrope_position_ids, vision_position_ids

    with pytest.raises(ValueError, match="finite in float32"):
        rx.RopeSpec(head_dim=4, rotary_dim=4, inv_freq=(1e39, 1.0))
    with pytest.raises(ValueError, match="attention_scaling must be a float32 number > 0"):
        rx.RopeSpec(head_dim=4, rotary_dim=4, inv_freq=(1.0, 0.5), attention_scaling=1e39)
    types = torch.tensor([[0] * 3 + [2] * 16])
    for interval in (float("nan"), 1e30, -1.0):
        with pytest.raises(ValueError, match="video_time_intervals"):
            mrope_position_ids(types, video_grid_thw=torch.tensor([[4, 4, 4]]), video_time_intervals=[interval])
    with pytest.raises(ValueError, match="grid_thw entries must be positive"):
        vision_position_ids(torch.tensor([[1, -2, 4]]), 2)
    with pytest.raises(ValueError, match="spatial_merge_size must be an int >= 1"):
        vision_position_ids(torch.tensor([[1, 2, 4]]), 0)


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


def test_command_line_mistakes_are_one_line_exits(tmp_path, capsys):
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


def test_validate_takes_a_provider_string_and_escapes_what_it_prints(tmp_path, capsys):
    sneaky = tmp_path / "\r\x1b[2KPASSED: model.onnx"
    rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "ok.onnx", form="fused")
    os.rename(tmp_path / "ok.onnx", sneaky)
    report = rx.validate(str(sneaky), providers="cpu", seed=1)
    assert report.passed and {r.provider for r in report.results} == {"cpu"}
    assert "\x1b" not in report.table() and "\\x1b[2K" in report.table()
    assert main(["validate", str(sneaky), "--seed", "1"]) == 0
    assert "\x1b" not in capsys.readouterr().out


def test_a_name_the_terminal_cannot_encode_is_escaped_not_fatal(tmp_path):
    path = tmp_path / "modèle-ρ.onnx"
    rx.export_onnx(rx.RopeSpec.standard(8), path, form="fused")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    out = subprocess.run([*CLI, "validate", str(path), "--seed", "1"], capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert b"PASSED" in out.stdout and b"mod\\xe8le" in out.stdout


def test_backends_that_cannot_do_something_say_which_can():
    rope = rx.RotaryEmbedding(rx.RopeSpec.standard(8))
    with pytest.raises(TypeError, match="not TorchScript-scriptable: export it with torch.onnx.export"):
        torch.jit.script(rope)
    triton = rx.RotaryEmbedding(rx.RopeSpec.standard(8), backend="triton")
    q = torch.randn(1, 1, 3, 8, requires_grad=True)
    with pytest.raises(ValueError, match="backend='triton' has no backward"):
        triton(q, q, torch.arange(3)[None])


def test_more_inputs_a_command_reads_are_never_written_over(tmp_path):
    """A config folder's config.json, a graph's external data: inputs too."""
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
    graph = rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "g.onnx", form="fused")
    out = subprocess.run(f"{sys.executable} -m rope_export.cli validate {graph} --json /dev/stdout > {tmp_path}/o.txt",
                         shell=True, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "is where this command prints" in out.stderr
