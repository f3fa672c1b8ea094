"""Tests of rope_export.validate.structure: PASS means every constant of the graph, not a sample."""

# Each tampered graph here changes values no numeric case hits (a table row, one ulp of a
# frequency, a plugin attribute onnxruntime ignores): the structural check fails it, naming the constant.

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import rope_export as rx
from rope_export.cli import main
from rope_export.export import build_onnx, read_graph
from rope_export.validate.structure import check_structure

pytest.importorskip("onnxruntime")


def _save(model, path) -> str:
    onnx.save(model, path)
    return str(path)


def _edit_initializer(model, name_prefix: str, edit) -> None:
    for t in model.graph.initializer:
        if t.name.startswith(name_prefix):
            a = numpy_helper.to_array(t).copy()
            edit(a)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            return
    raise AssertionError(f"no initializer {name_prefix!r}")


@pytest.fixture(scope="module")
def graphs():
    return {(p, f): build_onnx(rx.load_preset(p), form=f) for p, f in
            [("mistral-7b", "table"), ("mistral-7b", "fused"), ("qwen2-vl-7b", "plugin"), ("qwen2-vl-7b", "table"),
             ("gpt-oss-20b", "fused")]}


def _tampered(graphs, key, change):
    model = onnx.ModelProto()
    model.CopyFrom(graphs[key])
    change(model)
    return model


def _row_1000_is_row_1001(a):
    a[1000] = a[1001]


def _flip_sin_at_20000(a):
    a[20000, 3] = -a[20000, 3]


def _slowest_freq_one_ulp_up(a):
    a[-1] = np.nextafter(a[-1], np.float32(1))


def _plugin_attribute(name, value):
    def change(model):
        for node in model.graph.node:
            for attr in node.attribute:
                if attr.name == name:
                    attr.i = value
    return change


def _scaling_one_ulp_up(model):
    # gpt-oss's YaRN attention scaling is a float32 scalar constant multiplying cos and sin.
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size == 1 and abs(float(a.reshape(-1)[0]) - rx.load_preset("gpt-oss-20b").attention_scaling) < 1e-6:
            t.CopyFrom(numpy_helper.from_array(np.nextafter(a, np.float32(2)), t.name))
            return
    raise AssertionError("no attention-scaling constant")


def _guard_row_is_row_0(a):
    a[-1] = a[0]  # positions past the table would read position 0's row, silently


def _guard_bound_one_up(model):
    # The guard's upper bound: the int64 scalar equal to the table's rows (less its NaN row).
    rows = next(t.dims[0] for t in model.graph.initializer if t.name == "cos_table") - 1
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.int64 and a.shape == () and int(a) == rows:
            t.CopyFrom(numpy_helper.from_array(np.int64(rows + 1), t.name))
            return
    raise AssertionError("no guard bound")


TAMPERS = {
    "the guard row made finite": (("mistral-7b", "table"), lambda m: _edit_initializer(m, "cos_table", _guard_row_is_row_0),
                                  r"initializer 'cos_table' differs from the spec's at index \[\d+, 0\]"),
    "the guard's bound one past the table": (("mistral-7b", "table"), _guard_bound_one_up,
                                             r"initializer 'val_\d+' differs from the spec's at index \[\]"),
    "table row 1000 := row 1001": (("mistral-7b", "table"), lambda m: _edit_initializer(m, "cos_table", _row_1000_is_row_1001),
                                  r"initializer 'cos_table' differs from the spec's at index \[1000, "),
    "one sin value at row 20000 negated": (("mistral-7b", "table"), lambda m: _edit_initializer(m, "sin_table", _flip_sin_at_20000),
                                          r"initializer 'sin_table' differs from the spec's at index \[20000, 3\]"),
    "an M-RoPE stream's row 3000": (("qwen2-vl-7b", "table"),
                                   lambda m: _edit_initializer(m, "cos_table_1", lambda a: a.__setitem__(3000, a[3001])),
                                   r"initializer 'cos_table_1' differs from the spec's at index \[3000, "),
    "slowest inv_freq one ulp up": (("mistral-7b", "fused"), lambda m: _edit_initializer(m, "rope.inv_freq", _slowest_freq_one_ulp_up),
                                    r"initializer 'rope.inv_freq' differs from the spec's at index \[63\]"),
    "gpt-oss attention scaling one ulp up": (("gpt-oss-20b", "fused"), _scaling_one_ulp_up, r"differs from the spec's"),
    "plugin head_dim=64": (("qwen2-vl-7b", "plugin"), _plugin_attribute("head_dim", 64),
                           r"MultiAxisRotary.*attribute 'head_dim' is 64, the spec implies 128"),
    "plugin num_heads=64": (("qwen2-vl-7b", "plugin"), _plugin_attribute("num_heads", 64),
                            r"attribute 'num_heads' is 64, the spec implies"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_a_constant_no_case_samples_fails_naming_it(graphs, tmp_path, name):
    key, change, message = TAMPERS[name]
    path = _save(_tampered(graphs, key, change), tmp_path / "t.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and pytest.approx(0) != result.constants
    assert __import__("re").search(message, result.detail), result.detail
    report = rx.validate(path, seed=1)
    assert not report.passed and report.structure["status"] == "fail"
    assert "structure: FAIL" in report.table()


def test_every_form_passes_structurally(tmp_path):
    """One graph per form (tests/validate/test_run.py holds every preset's default graph to it)."""
    cases = [("mistral-7b", "decomposed"), ("gpt-oss-20b", "contrib"), ("llama-4-scout", "plugin"),
             ("phi-3-mini-128k", "fused"), ("pixtral-12b", "table")]
    for preset, form in cases:
        path = rx.export_onnx(rx.load_preset(preset), tmp_path / f"{preset}-{form}.onnx", form=form, dtype="float16")
        result = check_structure(onnx.load(path), read_graph(path))
        assert result.status == "pass" and result.constants > 0, (preset, form, result)


def test_another_structure_is_said_not_to_apply_and_numbers_decide(graphs, tmp_path):
    model = onnx.ModelProto()
    model.CopyFrom(graphs[("mistral-7b", "fused")])
    producer = next(n for n in model.graph.node if "q_rot" in n.output)
    producer.output[list(producer.output).index("q_rot")] = "q_rot_raw"
    model.graph.node.append(helper.make_node("Identity", ["q_rot_raw"], ["q_rot"]))
    path = _save(model, tmp_path / "rewritten.onnx")
    report = rx.validate(path, seed=2)
    assert report.structure["status"] == "not applicable" and "nodes" in report.structure["detail"]
    assert report.passed and "structure: not applicable" in report.table()
    # Required: a graph whose constants were not all proven FAILS, and says why.
    strict = rx.validate(path, seed=2, require_structure=True)
    assert not strict.passed and "constants not proven (required)" in strict.table()
    assert main(["validate", path, "--seed", "2", "--require-structure"]) == 1
    assert rx.validate(rx.export_onnx(rx.load_preset("mistral-7b"), tmp_path / "plain.onnx"), seed=2,
                       require_structure=True).passed
    # No metadata at all, the spec given: rebuilt as its nodes say (fused, opset 23), every constant checked.
    bare = onnx.ModelProto()
    bare.CopyFrom(graphs[("mistral-7b", "fused")])
    del bare.metadata_props[:]
    path = _save(bare, tmp_path / "bare.onnx")
    report = rx.validate(path, rx.load_preset("mistral-7b"), seed=2)
    assert report.structure["status"] == "pass" and report.passed
    # Metadata relabelled to another form and opset: rebuilt as its nodes say, and said so.
    relabelled = onnx.ModelProto()
    relabelled.CopyFrom(graphs[("mistral-7b", "table")])
    for prop in relabelled.metadata_props:
        if prop.key == "rope_export.form":
            prop.value = "fused"
    _edit_initializer(relabelled, "cos_table", _row_1000_is_row_1001)
    path = _save(relabelled, tmp_path / "relabelled.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and "cos_table" in result.detail, result


def test_a_given_spec_that_overrides_the_graphs_own_is_said_and_checked(graphs, tmp_path, capsys):
    path = _save(graphs[("mistral-7b", "fused")], tmp_path / "mistral.onnx")
    assert main(["validate", path, "--preset", "llama-3.1-8b", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    assert "spec: the one given" in out and "not the graph's own" in out and "structure: FAIL" in out


def _looping_graph(graphs, tmp_path) -> str:
    """A graph with rope_export's metadata whose q_rot waits on a Loop of 2^62 iterations."""
    model = onnx.ModelProto()
    model.CopyFrom(graphs[("mistral-7b", "fused")])
    g = model.graph
    body = helper.make_graph(
        [helper.make_node("Add", ["x_in", "one"], ["x_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", onnx.TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", onnx.TensorProto.FLOAT, [])],
        [helper.make_tensor("one", onnx.TensorProto.FLOAT, [], [0.0])])
    producer = next(n for n in g.node if "q_rot" in n.output)
    producer.output[list(producer.output).index("q_rot")] = "q_rot_raw"
    g.initializer.extend([numpy_helper.from_array(np.array(2**62, dtype=np.int64), "trips"),
                          numpy_helper.from_array(np.array(True), "go"), numpy_helper.from_array(np.array(0.0, dtype=np.float32), "x0")])
    g.node.extend([helper.make_node("Loop", ["trips", "go", "x0"], ["spun"], body=body),
                   helper.make_node("Add", ["q_rot_raw", "spun"], ["q_rot"])])
    return _save(model, tmp_path / "loop.onnx")


def test_a_graph_that_never_finishes_fails_per_case(graphs, tmp_path, capsys):
    import time

    path = _looping_graph(graphs, tmp_path)
    start = time.monotonic()
    report = rx.validate(path, seed=1, case_timeout=1.0)
    assert time.monotonic() - start < 60
    ran = [r for r in report.results if r.status != "unavailable"]
    assert not report.passed and ran and all(r.status == "fail" and "case time limit" in r.detail for r in ran)
    assert "not run" in ran[-1].detail and time.monotonic() - start < 30  # one case waits out the limit, not each
    assert main(["validate", path, "--case-timeout", "0.5", "--seed", "1"]) == 1
    assert "ran past 0.5 s" in capsys.readouterr().out


def _tables_as_constant_nodes(model):
    """Move cos_table and sin_table into Constant nodes of the same names, row 20000 sign-flipped."""
    for name in ("cos_table", "sin_table"):
        tensor = next(t for t in model.graph.initializer if t.name.startswith(name))
        a = numpy_helper.to_array(tensor).copy()
        a[20000] = -a[20000]
        model.graph.initializer.remove(tensor)
        model.graph.node.insert(0, helper.make_node("Constant", [], [tensor.name],
                                                    value=numpy_helper.from_array(a, tensor.name)))


def test_constants_moved_into_constant_nodes_are_still_compared(graphs, tmp_path):
    path = _save(_tampered(graphs, ("mistral-7b", "table"), _tables_as_constant_nodes), tmp_path / "t.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and "'cos_table'" in result.detail and "[20000" in result.detail, result.detail
    assert main(["validate", path]) == 1


def test_a_moved_length_rule_threshold_is_named(tmp_path):
    """Phi-3's LongRoPE switch at 4096 moved to 3000, with an intermediate renamed so the node
    structure differs: the scalar threshold is still compared by name."""
    model = build_onnx(rx.load_preset("phi-3-mini-128k"))
    threshold = next(t for t in model.graph.initializer
                     if not t.dims and numpy_helper.to_array(t).item() == 4096)
    threshold.CopyFrom(numpy_helper.from_array(np.array(3000, dtype=numpy_helper.to_array(threshold).dtype), threshold.name))
    first = model.graph.node[0]
    old = first.output[0]
    first.output[0] = "renamed"
    for node in model.graph.node[1:]:
        node.input[:] = ["renamed" if i == old else i for i in node.input]
    path = _save(model, tmp_path / "t.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and repr(threshold.name) in result.detail and "3000" in result.detail, result.detail


def test_the_switch_comparison_is_held_on_both_sides(tmp_path):
    """'>=' turned into '>' at LongRoPE's switch: no constant changes (structure not applicable),
    and only a case whose largest position is exactly 4096 differs: it is run."""
    model = build_onnx(rx.load_preset("phi-3-mini-128k"))
    node = next(n for n in model.graph.node if n.op_type == "GreaterOrEqual")
    node.op_type = "Greater"
    path = _save(model, tmp_path / "gt.onnx")
    report = rx.validate(path, seed=3)
    assert not report.passed
    failed = {c.case for c in report.results if c.status != "pass"}
    assert failed == {"length rule switch, up to 4096"}, failed


def test_a_spec_that_contradicts_its_own_scaling_fails(tmp_path):
    """inv_freq[5] x 1.01 in the initializer and in the metadata alike: the graph matches its
    metadata bit for bit, but the metadata's frequencies are not what its rope_theta gives."""
    model = build_onnx(rx.load_preset("mistral-7b"), form="fused")
    _edit_initializer(model, "rope.inv_freq", lambda a: a.__setitem__(5, a[5] * np.float32(1.01)))
    entry = next(e for e in model.metadata_props if e.key == "rope_export.spec")
    data = json.loads(entry.value)
    data["inv_freq"][5] = float(np.float32(data["inv_freq"][5]) * np.float32(1.01))
    entry.value = json.dumps(data)
    path = _save(model, tmp_path / "t.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and "contradicts itself: inv_freq[5]" in result.detail, result.detail
    assert main(["validate", path]) == 1


def test_every_spec_rope_export_builds_agrees_with_its_own_scaling():
    """No false alarm: every preset (and every verified transformers config, in tests marked hf)."""
    from rope_export.validate.structure import spec_contradiction

    assert {p: spec_contradiction(rx.load_preset(p)) for p in rx.list_presets()} == dict.fromkeys(rx.list_presets())


@pytest.mark.hf
def test_every_verified_transformers_config_agrees_with_its_own_scaling():
    transformers = pytest.importorskip("transformers")
    from rope_export.architectures import VERIFIED_TEXT
    from rope_export.hf_config import layer_types_of
    from rope_export.validate.structure import spec_contradiction

    transformers.logging.set_verbosity_error()
    checked, wrong = 0, []
    for model_type in VERIFIED_TEXT:
        try:
            cfg = transformers.AutoConfig.for_model(model_type).to_dict()
            kinds = layer_types_of(cfg) or [None]
        except Exception:  # noqa: BLE001 - a type this release lacks
            continue
        for layer_type in kinds:
            try:
                spec = rx.RopeSpec.from_hf_config(cfg, part="text", layer_type=layer_type)
            except ValueError:
                continue
            checked += 1
            if spec_contradiction(spec):
                wrong.append((model_type, layer_type, spec_contradiction(spec)))
    assert checked >= 180 and not wrong, (checked, wrong)  # 5.23: 212 specs, 5.25: 219


@pytest.mark.parametrize("field,value,message", [("rope_theta", "1000000.0", "rope_theta '1000000.0' is not a finite"),
                                                 ("rope_theta", None, "rope_theta None is not a finite"),
                                                 ("rope_type", "Default", "rope_type 'Default' is not one")])
def test_scaling_fields_that_cannot_be_checked_are_not_trusted(tmp_path, field, value, message):
    """The self-consistency check cannot be dodged by making the scaling fields unreadable."""
    model = build_onnx(rx.load_preset("mistral-7b"), form="fused")
    entry = next(e for e in model.metadata_props if e.key == "rope_export.spec")
    data = json.loads(entry.value)
    data["scaling"][field] = value
    entry.value = json.dumps(data)
    path = _save(model, tmp_path / "t.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and message in result.detail, result.detail


def test_an_unused_decoy_does_not_stand_in_for_the_frequencies_the_graph_uses(tmp_path):
    """The used inv_freq renamed and one ulp off, a correct copy added as an unused initializer:
    only constants the graph consumes are compared."""
    model = build_onnx(rx.load_preset("mistral-7b"), form="fused")
    used = next(t for t in model.graph.initializer if t.name == "rope.inv_freq")
    good = numpy_helper.to_array(used).copy()
    bad = good.copy()
    bad[-1] = np.nextafter(bad[-1], np.float32(1))
    used.CopyFrom(numpy_helper.from_array(bad, "freqs"))
    for node in model.graph.node:
        node.input[:] = ["freqs" if i == "rope.inv_freq" else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(good, "decoy"))
    path = _save(model, tmp_path / "t.onnx")
    result = check_structure(onnx.load(path), read_graph(path))
    assert result.status == "fail" and "'freqs'" in result.detail, result.detail
