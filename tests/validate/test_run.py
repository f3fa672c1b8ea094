"""Tests of rope_export.validate.run: the validator passes good graphs, fails perturbed ones, never passes silently."""

from __future__ import annotations

import dataclasses

import os

import numpy as np
import onnx
import pytest

import rope_export as rx
from rope_export.cli import main
from rope_export.export import build_onnx
from rope_export.validate import compare

pytest.importorskip("onnxruntime")


def _write_with_spec(model_spec, claimed_spec, path, **kw):
    """A graph computed from model_spec whose metadata claims claimed_spec."""
    from rope_export.export import set_metadata

    model = build_onnx(model_spec, form="fused", **kw)
    set_metadata(model, claimed_spec, "fused", kw.get("dtype", "float32"), kw.get("opset", 23))
    onnx.save(model, path)
    return str(path)


def test_every_exported_preset_validates_on_cpu(files):
    for preset, path in files.items():
        report = rx.validate(path, providers=("cpu",), seed=11)
        assert report.passed, (preset, report.table())
        assert report.structure["status"] == "pass" and report.structure["constants"] > 0, (preset, report.structure)
        ran = {r.ran_on for r in report.results}
        assert ran == {"CPUExecutionProvider"}
        cases = {r.case for r in report.results}
        if rx.load_preset(preset).num_axes > 1:
            assert any("grid" in c for c in cases), cases  # never text-only for multi-axis


@pytest.mark.parametrize("fault", ["inv_freq 1e-3", "swapped sections", "wrong layout", "no attention scaling"])
def test_validator_catches_perturbed_graphs(tmp_path, fault):
    if fault == "inv_freq 1e-3":
        good = rx.load_preset("llama-3.1-8b")
        inv = list(good.inv_freq)
        inv[10] *= 1 + 1e-3
        bad = dataclasses.replace(good, inv_freq=tuple(inv))
    elif fault == "swapped sections":
        good = rx.load_preset("qwen2-vl-7b")
        bad = rx.RopeSpec.mrope(128, [16, 24, 24][::-1], 1e6)
    elif fault == "wrong layout":
        good = rx.load_preset("gpt-j-6b")
        bad = good.with_layout("half")
    else:
        good = rx.load_preset("gpt-oss-20b")
        bad = dataclasses.replace(good, attention_scaling=1.0)
    path = _write_with_spec(bad, good, tmp_path / "bad.onnx")
    report = rx.validate(path, providers=("cpu",), seed=5)
    assert not report.passed, report.table()
    assert any(r.status == "fail" for r in report.results)
    # ...and the honest graph passes the same cases.
    ok = _write_with_spec(good, good, tmp_path / "good.onnx")
    assert rx.validate(ok, providers=("cpu",), seed=5).passed


def test_missing_provider_fails_unless_allowed(files, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the missing-provider path cannot be shown here")
    path = files["mistral-7b"]
    report = rx.validate(path, providers=("cuda", "cpu"), seed=1)
    assert not report.passed
    missing = [r for r in report.results if r.provider == "cuda"]
    assert missing and missing[0].status == "unavailable" and "CUDAExecutionProvider" in missing[0].detail
    assert rx.validate(path, providers=("cuda", "cpu"), seed=1, allow_missing=True).passed
    assert not rx.validate(path, providers=("cuda",), seed=1, allow_missing=True).passed  # nothing ran

    assert main(["validate", path, "--providers", "cuda,cpu", "--seed", "1"]) == 1
    assert main(["validate", path, "--providers", "cuda,cpu", "--allow-missing", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "unavailable: cuda (allowed)" in out and "PASSED" in out


def test_bad_inputs_exit_2(tmp_path, files, capsys):
    assert main(["validate", str(tmp_path / "nope.onnx")]) == 2
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf \x00\xff")
    assert main(["validate", str(junk)]) == 2
    # a graph without rope metadata and no spec given
    model = onnx.load(files["mistral-7b"])
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    assert main(["validate", str(bare)]) == 2
    assert "metadata" in capsys.readouterr().err
    assert main(["validate", str(bare), "--preset", "mistral-7b", "--seed", "2"]) == 0
    # mismatched input names
    renamed = onnx.load(files["mistral-7b"])
    renamed.graph.input[2].name = "pos"
    for node in renamed.graph.node:
        node.input[:] = ["pos" if i == "position_ids" else i for i in node.input]
    odd = tmp_path / "odd.onnx"
    onnx.save(renamed, odd)
    assert main(["validate", str(odd)]) == 2
    assert "position_ids" in capsys.readouterr().err


def test_bad_options_exit_2_before_anything_runs(files, capsys):
    path = files["mistral-7b"]
    # A typo is not a provider that is merely unavailable (--allow-missing would pass it).
    assert main(["validate", path, "--providers", "cpu,cdua", "--allow-missing"]) == 2
    err = capsys.readouterr().err
    assert "unknown provider 'cdua' (did you mean 'cuda'?)" in err
    assert main(["validate", path, "--providers", "gpu"]) == 2  # the extra's word, not a provider's
    assert "'gpu' (did you mean 'cuda'?)" in capsys.readouterr().err
    for bad in ("nan", "-1e-5", "inf"):
        with pytest.raises(SystemExit) as exit_:
            main(["validate", path, "--rtol", bad])
        assert exit_.value.code == 2
    with pytest.raises(rx.validate.ValidationInputError, match="finite number >= 0"):
        rx.validate(path, tolerances={"atol": float("nan")})
    with pytest.raises(rx.validate.ValidationInputError, match="keys rtol"):
        rx.validate(path, tolerances={"rtl": 1e-3})
    # A spec that does not fit the graph: said up front, not as every case's shape error.
    assert main(["validate", path, "--preset", "qwen2-vl-7b"]) == 2
    assert "position_ids has rank 2, but the spec has 3 position axes" in capsys.readouterr().err
    with pytest.raises(rx.validate.ValidationInputError, match="q's head_dim is 128, the spec's 64"):
        rx.validate(path, rx.load_preset("gpt-oss-20b"))


def test_one_provider_named_twice_runs_once(files):
    report = rx.validate(files["mistral-7b"], providers=("cpu", "CPUExecutionProvider", "cpu"), seed=4)
    assert report.passed and {r.provider for r in report.results} == {"cpu"}
    assert len(report.results) == len({r.case for r in report.results})


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


def test_bfloat16_on_cpu_says_to_use_cuda(tmp_path):
    path = rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "bf.onnx", form="fused", dtype="bfloat16")
    report = rx.validate(path, seed=1)
    assert not report.passed and "no bfloat16 kernels" in report.table()


def test_validate_takes_a_provider_string_and_escapes_what_it_prints(tmp_path, capsys):
    sneaky = tmp_path / "\r\x1b[2KPASSED: model.onnx"
    rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "ok.onnx", form="fused")
    os.rename(tmp_path / "ok.onnx", sneaky)
    report = rx.validate(str(sneaky), providers="cpu", seed=1)
    assert report.passed and {r.provider for r in report.results} == {"cpu"}
    assert "\x1b" not in report.table() and "\\x1b[2K" in report.table()
    assert main(["validate", str(sneaky), "--seed", "1"]) == 0
    assert "\x1b" not in capsys.readouterr().out


def _fix_shapes(path, out, batch, seq, position_seq=None):
    import onnx

    model = onnx.load(path)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        axes = (0, 2) if value.name in ("q", "k") else (len(dims) - 2, len(dims) - 1)
        for axis, size in zip(axes, (batch, position_seq if value.name == "position_ids" and position_seq else seq)):
            dims[axis].ClearField("dim_param")
            dims[axis].dim_value = size
    onnx.save(model, out)
    return str(out)


def test_a_graph_with_fixed_input_shapes_is_run_at_them(files, tmp_path, capsys):
    """A graph tool fixed its shapes (onnxsim --overwrite-input-shape): every case is cut or
    tiled to batch 1 x 48 tokens, the report says so, and the verdict stands on those."""
    path = _fix_shapes(files["mistral-7b"], tmp_path / "fixed.onnx", 1, 48)
    report = rx.validate(path, seed=1)
    assert report.passed, report.table()
    assert report.fixed_shape == {"batch": 1, "sequence": 48}
    assert all(r.status == "pass" for r in report.results)
    assert "shape: the graph fixes batch 1, sequence 48" in report.table()
    assert any("(as b1 s48)" in r.case for r in report.results)
    # q and position_ids fixing the sequence to different sizes: exit 2 naming the dimension
    bad = _fix_shapes(files["mistral-7b"], tmp_path / "bad.onnx", 1, 48, position_seq=40)
    assert main(["validate", bad]) == 2
    assert "fix the sequence dimension to different sizes [40, 48]" in capsys.readouterr().err


def test_a_cut_multi_axis_case_keeps_positions_where_the_axes_differ(tmp_path):
    from rope_export.export import export_onnx

    path = export_onnx(rx.load_preset("qwen2-vl-7b"), tmp_path / "q.onnx", form="fused")
    fixed = _fix_shapes(path, tmp_path / "q1.onnx", 1, 1)
    from rope_export.export import read_graph
    from rope_export.validate.cases import fit_case, fixed_shape, make_cases

    info = read_graph(fixed)
    grid = next(c for c in make_cases(info.spec, "float32", 2, 2, 0) if c.name.startswith("image+video grid"))
    cut = fit_case(grid, *fixed_shape(info))
    assert cut.position_ids.shape == (3, 1, 1) and len(set(cut.position_ids.flatten().tolist())) > 1
    assert rx.validate(fixed, seed=0).passed


def test_bad_openvino_devices_and_empty_fixed_sizes_exit_2(files, tmp_path, capsys):
    for name in ("openvino:foo", "openvino:", "openvino:AUTO"):
        assert main(["validate", files["mistral-7b"], "--providers", name]) == 2
        assert "unknown OpenVINO device" in capsys.readouterr().err
    zero = _fix_shapes(files["mistral-7b"], tmp_path / "zero.onnx", 0, 4)
    assert main(["validate", zero]) == 2
    assert "fixes the batch dimension to 0" in capsys.readouterr().err
