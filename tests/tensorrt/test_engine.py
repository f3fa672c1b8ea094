"""Tests of rope_export.tensorrt.engine: engines built (and run where CUDA and TensorRT are), or what to install."""

from __future__ import annotations

import sys

import pytest

import rope_export as rx
from rope_export.cli import main
from rope_export.tensorrt import INSTALL_HINT, tensorrt_unavailable
from tests.helpers import engine_skip_reason


REASON = tensorrt_unavailable()


needs_builder = pytest.mark.skipif(REASON is not None, reason=f"no TensorRT builder here: {REASON}")


def test_missing_tensorrt_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    path = rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "m.onnx")
    assert main(["build-engine", path, "--out", str(tmp_path / "m.plan")]) == 2
    err = capsys.readouterr().err
    assert err.count("rope-export[trt]") == 1 and not (tmp_path / "m.plan").exists()
    assert main(["check-trt", path]) == 2 and INSTALL_HINT in capsys.readouterr().err


@needs_builder
def test_build_engine_cli_writes_an_engine_for_a_named_gpu(tmp_path, capsys):
    path = rx.export_onnx(rx.load_preset("qwen2-vl-7b"), tmp_path / "q.onnx", form="fused", dtype="float16")
    assert main(["build-engine", path, "--out", str(tmp_path / "q.plan"), "--fp16", "--compute-capability", "SM89"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "q.plan").stat().st_size > 1000 and "SM89" in out and "2 ROTARY_EMBEDDING" in out
    assert main(["build-engine", path, "--out", str(tmp_path / "x.plan"), "--compute-capability", "SM1"]) == 2
    assert "is not one of" in capsys.readouterr().err and not (tmp_path / "x.plan").exists()


@pytest.mark.skipif(engine_skip_reason() is not None, reason=str(engine_skip_reason()))
@pytest.mark.parametrize("form", ["fused", "plugin"])
def test_engine_runs_and_matches_torch(tmp_path, form):
    from rope_export.tensorrt.engine import Profile, build_engine

    spec = rx.load_preset("qwen2-vl-7b")
    path = rx.export_onnx(spec, tmp_path / "m.onnx", form=form)
    build_engine(path, str(tmp_path / "m.plan"), profile=Profile((1, 2, 4), (1, 64, 256)), plugin=form == "plugin",
                 compute_capability="current")
    report = rx.validate(path, engine=tmp_path / "m.plan", seed=1)
    assert report.passed, report.table()
