"""Tests of rope_export.validate.report: the table and the strict JSON report."""

from __future__ import annotations

import json

import pytest

import rope_export as rx
from rope_export.cli import main

pytest.importorskip("onnxruntime")


def test_json_report_and_table(files, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["validate", files["qwen3-vl-8b"], "--providers", "cpu", "--json", str(out), "--seed", "3"]) == 0
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["seed"] == 3 and data["spec"]["num_axes"] == 3
    assert all(r["ran_on"] == "CPUExecutionProvider" for r in data["results"])
    text = capsys.readouterr().out
    assert "provider" in text and "image+video grid" in text


def test_json_is_strict_and_nothing_ran_is_said(files, tmp_path):
    import onnxruntime as ort

    report = rx.validate(files["mistral-7b"], providers=("cpu",), seed=5)
    data = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    refused = [r for r in data["results"] if r["case"].startswith("past the table")]
    assert refused and refused[0]["max_abs_err"] is None  # not NaN: strict JSON readers take it
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: a run where no provider ran cannot be shown here")
    nothing = rx.validate(files["mistral-7b"], providers=("cuda",), allow_missing=True, seed=5)
    assert not nothing.passed and "; no provider ran" in nothing.table().splitlines()[-1]
