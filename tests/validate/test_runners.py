"""Tests of rope_export.validate.runners: the TensorRT engine runner and onnxruntime sessions that never fall back."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import rope_export as rx
from rope_export.cli import main
from rope_export.tensorrt import tensorrt_unavailable


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
    if report.form == "table":  # OpenVINO does not bound-check Gather: the refusal case must fail, loudly
        bad = [r for r in report.results if r.status != "pass"]
        assert [r.case for r in bad] == ["past the table (must be refused)"], report.table()
        assert "OpenVINO does not bound-check Gather" in bad[0].detail
    else:
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
