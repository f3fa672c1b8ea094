"""Tests of rope_export.validate.runners: the TensorRT engine runner and onnxruntime sessions that never fall back."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from onnx import numpy_helper
import torch

import rope_export as rx
from rope_export.bench import unguarded_table_graph
from rope_export.cli import main
from rope_export.tensorrt import tensorrt_unavailable
from tests.helpers import engine_skip_reason


REASON = tensorrt_unavailable()


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


def _needs_openvino():
    pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install -e ".[openvino]")')


@pytest.mark.parametrize("preset", rx.list_presets())
def test_every_preset_validates_on_openvino(files, preset):
    """OpenVINO's own runtime reads our ONNX, compiles it for its CPU in float32 (its default on
    CPUs with bf16 units is bfloat16: 8e-3 off) and passes every case; structure as elsewhere."""
    _needs_openvino()
    report = rx.validate(files[preset], providers=["openvino"], seed=0)
    assert report.passed, report.table()
    assert all(r.ran_on and r.ran_on.startswith("OpenVINO") and r.ran_on.endswith("CPU f32") for r in report.results)


def test_a_tampered_graph_fails_on_openvino(tmp_path):
    _needs_openvino()
    import onnx
    from onnx import numpy_helper

    from rope_export.export import build_onnx

    model = build_onnx(rx.load_preset("mistral-7b"), form="fused")
    t = next(t for t in model.graph.initializer if t.name.endswith("inv_freq"))
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1.001), t.name))
    onnx.save(model, tmp_path / "t.onnx")
    report = rx.validate(tmp_path / "t.onnx", providers=["openvino"], seed=0)
    assert not report.passed and any(r.provider == "openvino" and r.status == "fail" for r in report.results)


def test_openvino_names_and_devices():
    from rope_export.validate.runners import OpenVinoRunner, openvino_device

    assert [openvino_device(n) for n in ("openvino", "openvino:gpu", "OpenVINO:NPU", "cpu", "OpenVINOExecutionProvider")] \
        == ["CPU", "GPU", "NPU", None, None]
    _needs_openvino()
    runner = OpenVinoRunner("unused.onnx", "NOSUCHDEVICE")
    assert "has no NOSUCHDEVICE device here" in runner.unavailable


@pytest.mark.parametrize("preset", ["mistral-7b", "qwen2-vl-7b"])
@pytest.mark.parametrize("runner", ["cpu", "openvino", "tensorrt-engine"])
def test_positions_past_the_table_give_nan_on_every_runner(tmp_path, preset, runner):
    """Item 1 of issue 24: OpenVINO does not bound-check Gather (a table graph without the guard
    row gave finite values 3.16 off there); with it, every runner the validator has returns NaN
    for every token whose position leaves the table, and the validator's case says so."""
    path = rx.export_onnx(rx.load_preset(preset), tmp_path / "t.onnx", form="table", table_length=512)
    kwargs = {"providers": [runner]}
    if runner == "openvino":
        _needs_openvino()
    if runner == "tensorrt-engine":
        if engine_skip_reason() is not None:
            pytest.skip(engine_skip_reason())
        from rope_export.tensorrt.engine import Profile, build_engine

        build_engine(path, str(tmp_path / "t.plan"), profile=Profile((1, 1, 1), (2, 64, 256)), compute_capability="current")
        kwargs = {"providers": [], "engine": tmp_path / "t.plan"}
    report = rx.validate(path, seed=3, **kwargs)
    outside = [r for r in report.results if r.case.endswith("(NaN or refused)")]
    kinds = ["past the table", "negative positions", "far negative positions"] + \
        (["past the table on one axis"] if preset == "qwen2-vl-7b" else [])
    assert [r.case.removesuffix(" (NaN or refused)") for r in outside] == kinds, report.table()
    assert all(r.status == "pass" and r.detail == "NaN for every token" for r in outside), report.table()
    assert report.passed, report.table()


@pytest.mark.parametrize("preset", ["mistral-7b", "qwen2-vl-7b"])
def test_a_table_graph_without_the_guard_row_fails_past_its_end_where_gather_is_unchecked(tmp_path, preset):
    """The graph the guard replaced: the table's last row dropped and the positions fed straight
    to the lookup. onnxruntime refuses positions past the end itself (a pass), but its Gather
    wraps negative ones onto real rows (M-RoPE: a FAIL); OpenVINO reads another row for every
    kind (FAILs naming it)."""
    import onnx

    path = rx.export_onnx(rx.load_preset(preset), tmp_path / "t.onnx", form="table", table_length=512)
    onnx.save(unguarded_table_graph(onnx.load(path)), tmp_path / "bare.onnx")
    report = rx.validate(tmp_path / "bare.onnx", seed=3)
    verdicts = {r.case.removesuffix(" (NaN or refused)"): (r.status, r.detail) for r in report.results
                if r.case.endswith("(NaN or refused)")}
    assert verdicts["past the table"] == ("pass", "refused"), report.table()
    if preset == "qwen2-vl-7b":  # Gather: -1, -2 and -512 read rows 511, 510 and 0
        assert verdicts["negative positions"][0] == "fail" and not report.passed, report.table()
        assert "gave finite q_rot and k_rot" in verdicts["negative positions"][1]
    else:  # onnxruntime's RotaryEmbedding checks its position_ids itself
        assert report.passed, report.table()
    _needs_openvino()
    report = rx.validate(tmp_path / "bare.onnx", providers=["openvino"], seed=3)
    bad = [r for r in report.results if r.status != "pass"]
    assert bad and all(r.case.endswith("(NaN or refused)") for r in bad) and not report.passed, report.table()
    assert len(bad) == len([r for r in report.results if r.case.endswith("(NaN or refused)")])
    assert all("gave finite q_rot and k_rot" in r.detail for r in bad)


def test_a_guard_compared_in_int64_fails_on_openvino(tmp_path):
    """OpenVINO's CPU plugin compares int64 as int32: a guard comparing position_ids itself let
    2^32 + 1 read row 1 there (onnxruntime: NaN). rope_export's guard compares them in float32;
    the int64 version must FAIL on OpenVINO, or the case could not tell the two apart."""
    _needs_openvino()
    import onnx

    model = onnx.load(rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "t.onnx", form="table", table_length=512))
    cast = model.graph.node[0]
    assert cast.op_type == "Cast" and list(cast.input) == ["position_ids"]
    model.graph.node.remove(cast)
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node[:2]:  # GreaterOrEqual, Less: on the int64 positions, int64 bounds
        assert node.op_type in ("GreaterOrEqual", "Less") and node.input[0] == cast.output[0]
        node.input[0] = "position_ids"
        bound = constants[node.input[1]]
        bound.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bound).astype(np.int64), bound.name))
    onnx.save(model, tmp_path / "int64.onnx")
    assert rx.validate(tmp_path / "int64.onnx", seed=1).passed  # onnxruntime compares int64 as int64
    report = rx.validate(tmp_path / "int64.onnx", providers=["openvino"], seed=1)
    bad = {r.case for r in report.results if r.status != "pass"}
    assert bad == {"past the table (NaN or refused)", "far negative positions (NaN or refused)"}, report.table()
