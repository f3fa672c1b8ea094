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


# A stand-in for TensorRT's compiled core, written here: TensorRT-RTX's core under the name
# NVIDIA's plugin package imports, plus the one class RTX 1.7 lacks. RTX has no AOT plugin
# classes, so the package takes its JIT-only path and the AOT implementation is left out.
_STAND_IN = '''
import tensorrt_rtx as _rtx
__version__ = _rtx.__version__
for _name in dir(_rtx):
    if _name != "plugin" and not _name.startswith("__"):
        globals()[_name] = getattr(_rtx, _name)
class ISymExpr:
    pass
'''
_PROBE = '''
import sys, types
import numpy as np
import tensorrt as trt
import tensorrt.plugin as trtp
from tensorrt.plugin import _export, _lib
src = open(sys.argv[1]).read()
a, b = src.index("@trtp.aot_impl(PLUGIN_ID)"), src.index("@trtp.impl(PLUGIN_ID)")
mod = types.ModuleType("rope_export.tensorrt.plugin_under_test")
mod.__package__ = "rope_export.tensorrt"
sys.modules[mod.__name__] = mod
exec(compile(src[:a] + src[b:], sys.argv[1], "exec"), mod.__dict__)
desc = _lib.QDP_REGISTRY["rope_export::MultiAxisRotary"]
print("numpy", np.__version__)
print("aot_enabled", _export.IS_AOT_ENABLED)
print("attrs", {k: str(v) for k, v in desc.input_attrs.items()})
print("impl", desc.impl_func is not None, "autotune", desc.autotune_func is not None)
creator = trt.get_plugin_registry().get_creator("MultiAxisRotary", "1", "rope_export")
print("creator", creator is not None)
# The parser's field loading: each INT / FLOAT attribute of the exported node as a one-element
# int32 / float32 array, handed to the creator; the plugin's kernel constants come out of them.
import onnx
node = onnx.load(sys.argv[2]).graph.node[0]
fields = []
for attr in node.attribute:
    if attr.name in desc.input_attrs:
        if attr.type == onnx.AttributeProto.INT:
            fields.append(trt.PluginField(attr.name, np.array([attr.i], dtype=np.int32), trt.PluginFieldType.INT32))
        else:
            fields.append(trt.PluginField(attr.name, np.array([attr.f], dtype=np.float32), trt.PluginFieldType.FLOAT32))
plugin = creator.create_plugin("MultiAxisRotary", "rope_export", trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD)
a = plugin.attrs
print("constants", mod._constants(a["rotary_dim"], a["interleaved"], a["num_heads"], a["head_dim"], a["attention_scaling"],
                                  accurate_trig=False))
'''


@needs_builder
def test_plugin_registers_through_nvidias_plugin_package_on_a_stand_in_core(tmp_path):
    """NVIDIA's own tensorrt.plugin package (from the tensorrt_cu13_bindings wheel, downloaded
    here, never committed) over the stand-in core: the descriptor, autotune and JIT
    implementation register under numpy >= 2.4, the attributes are numpy arrays, the creator
    lands in TensorRT-RTX's registry, and the exported node's attributes, loaded as the ONNX
    parser loads them (one-element int32/float32 arrays), give the kernel constants of the spec."""
    import subprocess
    import zipfile

    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp_path),
                          "tensorrt_cu13_bindings"], capture_output=True, text=True, timeout=300)
    wheels = list(tmp_path.glob("tensorrt_cu13_bindings-*.whl"))
    if got.returncode or not wheels:
        pytest.skip(f"NVIDIA's bindings wheel could not be downloaded: {got.stderr[-300:]}")
    shim = tmp_path / "shim" / "tensorrt"
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [n for n in wheel.namelist() if n.startswith("tensorrt_bindings/plugin/") and n.endswith(".py")]
        for name in members:
            target = shim / "plugin" / pathlib.Path(name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(name))
    (shim / "__init__.py").write_text(_STAND_IN)
    spec = rx.load_preset("qwen3-vl-8b")  # interleaved sections, 32 q heads
    graph = rx.export_onnx(spec, tmp_path / "p.onnx", form="plugin", num_q_heads=32, num_kv_heads=8)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "shim")}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(PLUGIN_SOURCE), graph], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert tuple(int(v) for v in lines["numpy"].split(".")[:2]) >= (2, 4)
    assert lines["aot_enabled"] == "False"  # RTX 1.7: no AOT plugin classes, so this path stays unproven
    attrs = eval(lines["attrs"])  # noqa: S307 - our own probe's output
    assert set(attrs) == set(PLUGIN_FIELDS) and all("numpy.ndarray" in v for v in attrs.values())
    assert "float32" in attrs["attention_scaling"] and "int32" in attrs["rotary_dim"]
    assert lines["impl"] == "True autotune True" and lines["creator"] == "True"
    from rope_export.tensorrt.kernel import plugin_constants

    want = plugin_constants(num_heads=32, head_dim=spec.head_dim, rotary_dim=spec.rotary_dim, interleaved=False,
                            attention_scaling=spec.attention_scaling, accurate_trig=False)
    assert eval(lines["constants"]) == want  # noqa: S307
