"""TensorRT: every graph parsed and built by a real TensorRT-family builder (TensorRT-RTX builds
ahead of time without a GPU); engines run only where CUDA and TensorRT are, else skip with why."""

from __future__ import annotations

import ast
import json
import pathlib
import sys

import onnx
import pytest
import torch

import rope_export as rx
from rope_export.cli import main
from rope_export.export.plugin_form import node_attributes
from rope_export.tensorrt import INSTALL_HINT, PARSER_FIELDS, PLUGIN_FIELDS, PLUGIN_INPUTS, tensorrt_unavailable

REASON = tensorrt_unavailable()
needs_builder = pytest.mark.skipif(REASON is not None, reason=f"no TensorRT builder here: {REASON}")
PLUGIN_SOURCE = pathlib.Path(rx.__file__).parent / "tensorrt" / "plugin.py"

# Every preset x {auto, fused fp32/fp16/bf16, decomposed opset 17, contrib, plugin, table}.
FORMS = [("auto", 23, "float32"), ("fused", 23, "float32"), ("fused", 23, "float16"), ("fused", 23, "bfloat16"),
         ("decomposed", 17, "float32"), ("contrib", 23, "float32"), ("plugin", 23, "float32"), ("table", 23, "float32")]


def test_plugin_fields_match_the_onnx_node(tmp_path):
    """The plugin registers exactly the inputs and fields the plugin-form node carries (parser
    fields aside), in the order TensorRT passes them."""
    path = rx.export_onnx(rx.load_preset("qwen2-vl-7b"), tmp_path / "p.onnx", form="plugin")
    model = onnx.load(path)
    node = model.graph.node[0]
    names = [a.name for a in node.attribute]
    assert names == list(PLUGIN_FIELDS) + list(PARSER_FIELDS)
    assert list(node_attributes(rx.load_preset("qwen2-vl-7b"), 4)) == names
    assert list(model.functions[0].input) == list(PLUGIN_INPUTS)
    assert {i.name for i in model.graph.initializer} == {"inv_freq", "axis_of_pair"}
    source = PLUGIN_SOURCE.read_text()
    for head in ("def _describe(", "def _compile(", "def _run("):
        signature = source[source.index(head):source.index(")", source.index("attention_scaling", source.index(head)))]
        order = [signature.index(f"{f}:") for f in PLUGIN_INPUTS + PLUGIN_FIELDS]
        assert order == sorted(order), head


def test_plugin_module_is_loadable_by_the_plugin_package():
    """What made it fail on real TensorRT: string annotations (the decorators call issubclass on
    them), a missing return annotation on the AOT implementation, scalar attributes (the parser
    hands one-element numpy arrays), no autotune."""
    tree = ast.parse(PLUGIN_SOURCE.read_text())
    assert not any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    decorated = {f.name: [ast.unparse(d) for d in f.decorator_list] for f in functions.values() if f.decorator_list}
    assert any("autotune" in d for ds in decorated.values() for d in ds), decorated
    for name, fn in functions.items():
        if not fn.decorator_list:
            continue
        assert fn.returns is not None, name
        for arg in fn.args.args:
            if arg.arg in PLUGIN_FIELDS:
                assert ast.unparse(arg.annotation).startswith("npt.NDArray"), (name, arg.arg)


def test_missing_tensorrt_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx")
    assert main(["build-engine", path, "--out", str(tmp_path / "m.plan")]) == 2
    err = capsys.readouterr().err
    assert err.count("rope-export[trt]") == 1 and not (tmp_path / "m.plan").exists()
    assert main(["check-trt", path]) == 2 and INSTALL_HINT in capsys.readouterr().err


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    cache = {}

    def get(preset, form, opset, dtype):
        key = (preset, form, opset, dtype)
        if key not in cache:
            cache[key] = rx.export_onnx(rx.load_preset(preset), root / f"{preset.replace(':', '_')}-{form}-{dtype}.onnx",
                                        form=form, opset=opset, dtype=dtype)
        return cache[key]

    return get


@needs_builder
@pytest.mark.parametrize("preset", rx.list_presets())
def test_every_preset_form_and_dtype_parses_and_builds(graphs, preset):
    from rope_export.tensorrt.check import check_graphs

    spec = rx.load_preset(preset)
    paths = []
    for form, opset, dtype in FORMS:
        if form == "table" and (spec.num_axes != 1 or spec.length_rule is not None):
            continue
        if form == "plugin" and spec.length_rule is not None:
            continue
        paths.append(graphs(preset, form, opset, dtype))
    for result in check_graphs(paths, compute_capability="SM89"):
        assert result.passed, result.to_dict()
        assert result.build.parsed and result.build.built and result.build.engine
        assert result.plugin_layers == 0
        assert result.build.rotary_layers == (0 if result.form == "decomposed" else 2), result.to_dict()


@needs_builder
def test_bad_graphs_fail_with_the_parsers_message(tmp_path, capsys):
    from rope_export.tensorrt.check import check_graphs

    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx", form="fused")
    model = onnx.load(path)
    for node in model.graph.node:
        if node.op_type == "RotaryEmbedding":
            for attr in node.attribute:
                if attr.name == "rotary_embedding_dim":
                    attr.i = 7  # odd and not a head_dim divisor
    onnx.save(model, tmp_path / "bad_dim.onnx")
    model = onnx.load(path)
    model.graph.node[-1].op_type = "NoSuchRotary"
    model.graph.node[-1].domain = "made.up"
    model.opset_import.append(onnx.helper.make_opsetid("made.up", 1))
    onnx.save(model, tmp_path / "unknown_op.onnx")
    results = check_graphs([str(tmp_path / "bad_dim.onnx"), str(tmp_path / "unknown_op.onnx")])
    assert not results[0].passed and results[0].build.errors, results[0].to_dict()
    assert not results[1].passed and not results[1].build.parsed
    assert any("NoSuchRotary" in e for e in results[1].build.errors), results[1].build.errors
    assert main(["check-trt", str(tmp_path / "unknown_op.onnx")]) == 1
    assert "NoSuchRotary" in capsys.readouterr().out
    assert main(["check-trt", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["rotary_layers"] == 2 and report[0]["tensorrt"].startswith("TensorRT")


@needs_builder
def test_build_engine_cli_writes_an_engine_for_a_named_gpu(tmp_path, capsys):
    path = rx.export_onnx(rx.load_preset("qwen2-vl-7b"), tmp_path / "q.onnx", form="fused", dtype="float16")
    assert main(["build-engine", path, "--out", str(tmp_path / "q.plan"), "--fp16", "--compute-capability", "SM89"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "q.plan").stat().st_size > 1000 and "SM89" in out and "2 ROTARY_EMBEDDING" in out
    assert main(["build-engine", path, "--out", str(tmp_path / "x.plan"), "--compute-capability", "SM1"]) == 2
    assert "is not one of" in capsys.readouterr().err and not (tmp_path / "x.plan").exists()


@pytest.mark.skipif(REASON is not None or not torch.cuda.is_available(),
                    reason=f"running an engine needs CUDA and TensorRT (builder: {REASON or 'present'}; "
                           f"CUDA: {torch.cuda.is_available()})")
@pytest.mark.parametrize("form", ["fused", "plugin"])
def test_engine_runs_and_matches_torch(tmp_path, form):
    from rope_export.tensorrt.engine import Profile, build_engine

    spec = rx.load_preset("qwen2-vl-7b")
    path = rx.export_onnx(spec, tmp_path / "m.onnx", form=form)
    build_engine(path, str(tmp_path / "m.plan"), profile=Profile((1, 2, 4), (1, 64, 256)), plugin=form == "plugin",
                 compute_capability="current")
    report = rx.validate(path, engine=tmp_path / "m.plan", seed=1)
    assert report.passed, report.table()


def test_validator_engine_runner_without_cuda_or_file(tmp_path, capsys):
    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx", form="fused")
    assert main(["validate", path, "--engine", str(tmp_path / "missing.plan"), "--seed", "1"]) == 2
    assert "no such engine file" in capsys.readouterr().err
    if torch.cuda.is_available() and REASON is None:
        pytest.skip("this machine runs engines: the unavailable path cannot be shown here")
    fake_plan = tmp_path / "m.plan"
    fake_plan.write_bytes(b"not an engine")
    report = rx.validate(path, engine=fake_plan, seed=1)
    engine_rows = [r for r in report.results if r.provider == "tensorrt-engine"]
    assert engine_rows and engine_rows[0].status == "unavailable" and not report.passed
    assert rx.validate(path, engine=fake_plan, seed=1, allow_missing=True).passed
    assert main(["validate", path, "--engine", str(fake_plan), "--seed", "1"]) == 1


def test_onnxruntime_sessions_never_fall_back_silently(monkeypatch):
    """GPU providers: no CPU placement behind our back (session option), no retry on another
    provider (disable_fallback), CUDA libraries preloaded; all checked against a recording fake."""
    import types

    from rope_export.validate.runners import OnnxRuntimeRunner

    calls = []

    class Options:
        log_severity_level = 0

        def add_session_config_entry(self, key, value):
            calls.append((key, value))

    class Session:
        def __init__(self, model, sess_options, providers):
            self.providers = providers

        def disable_fallback(self):
            calls.append("disable_fallback")

        def get_providers(self):
            return self.providers

    fake = types.SimpleNamespace(__version__="x", SessionOptions=Options, InferenceSession=Session,
                                 get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
                                 preload_dlls=lambda: calls.append("preload_dlls"))
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    runner = OnnxRuntimeRunner(b"model", "cuda")
    assert runner.ran_on == "CUDAExecutionProvider" and not runner.unavailable
    assert calls == ["preload_dlls", ("session.disable_cpu_ep_fallback", "1"), "disable_fallback"]
    calls.clear()
    OnnxRuntimeRunner(b"model", "cpu")
    assert calls == ["disable_fallback"]
