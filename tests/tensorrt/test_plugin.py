"""Tests of rope_export.tensorrt.plugin: the MultiAxisRotary plugin's fields, its module, and its registration."""

from __future__ import annotations

import ast
import pathlib
import sys

import onnx
import pytest

import rope_export as rx
from rope_export.export.plugin_form import node_attributes
from rope_export.tensorrt import PARSER_FIELDS, PLUGIN_FIELDS, PLUGIN_INPUTS, tensorrt_unavailable


REASON = tensorrt_unavailable()


needs_builder = pytest.mark.skipif(REASON is not None, reason=f"no TensorRT builder here: {REASON}")


PLUGIN_SOURCE = pathlib.Path(rx.__file__).parent / "tensorrt" / "plugin.py"


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
