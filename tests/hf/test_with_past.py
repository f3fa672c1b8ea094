"""Tests of rope_export.hf.with_past (and the loop of rope_export.serving): decoders exported with a KV cache generate token for token as
transformers' generate(do_sample=False) does on the same weights, across length-rule switches,
with left padding, and with an image in a VLM's prompt; positions without rope_deltas fail."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf

from rope_export.cli import main  # noqa: E402
from rope_export.hf.with_past import check_generation, export_with_past  # noqa: E402
from rope_export.serving import METADATA_KEY, read_serving  # noqa: E402
from rope_export.presets import preset_info  # noqa: E402

STEPS = 16


def _config(name):
    """Configs whose decode crosses a length rule: original / trained length 16, prompt 11 + 16 tokens."""
    if name == "phi3-longrope-16":
        cfg = dict(preset_info("phi-3-mini-128k")["config"])
        scaling = dict(cfg.pop("rope_scaling", None) or cfg.pop("rope_parameters"))
        cfg["original_max_position_embeddings"] = scaling["original_max_position_embeddings"] = 16
        return {**cfg, "rope_scaling": scaling}
    if name == "llama-dynamic-16":
        cfg = {k: v for k, v in preset_info("llama-3.1-8b")["config"].items() if k != "rope_parameters"}
        return {**cfg, "max_position_embeddings": 16, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}
    if name in ("gemma3_text", "deepseek_v3"):  # per-layer rotaries with a sliding window; MLA
        return transformers.AutoConfig.for_model(name).to_dict()
    return preset_info(name)["config"]


@pytest.mark.parametrize("name", ["llama-3.1-8b", "phi3-longrope-16", "llama-dynamic-16", "gemma3_text", "deepseek_v3"])
def test_text_decoders_generate_like_transformers_with_left_padding(tmp_path, name):
    path = tmp_path / "decoder.onnx"
    model, kind = export_with_past(_config(name), path)
    report = check_generation(model, kind, path, steps=STEPS, batch=2)
    assert kind == "text" and report.passed, report.summary()
    assert report.first_difference is None and report.max_logit_diff <= report.tolerance
    assert len(report.tokens_onnx) == 2 and all(len(row) == STEPS for row in report.tokens_onnx)
    meta = read_serving(path)
    assert meta["positions"] == "text" and meta["tokens"] == "input_ids" and meta["layers"] == 2
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    assert names == ["input_ids", "attention_mask", "position_ids", "past_key_0", "past_value_0", "past_key_1",
                     "past_value_1"]
    # Phi-3's LongRoPE: transformers recomputes the cache when the sequence first passes 16
    assert meta["recompute_cache_at"] == (16 if name == "phi3-longrope-16" else None)
    if name == "phi3-longrope-16":
        assert "the cache reaches 16 (LongRoPE's switch: recomputed)" in report.prompt


def test_longrope_without_the_recompute_rule_is_caught(tmp_path):
    """A negative control: the same Phi-3 graph, its loop told nothing of the cache recompute,
    decodes past the switch with keys rotated by the short factors and fails."""
    path = tmp_path / "phi3.onnx"
    model, kind = export_with_past(_config("phi3-longrope-16"), path)
    proto = onnx.load(path)
    entry = next(e for e in proto.metadata_props if e.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "recompute_cache_at": None})
    onnx.save(proto, tmp_path / "no_recompute.onnx")
    report = check_generation(model, kind, tmp_path / "no_recompute.onnx", steps=STEPS)
    assert not report.passed and report.max_logit_diff > 100 * report.tolerance, report.summary()


@pytest.mark.parametrize("preset", ["qwen2-vl-7b", "qwen2.5-vl-7b"])
def test_vlm_decoders_generate_like_transformers_with_an_image_and_a_video(tmp_path, preset):
    path = tmp_path / "decoder.onnx"
    model, kind = export_with_past(_config(preset), path)
    report = check_generation(model, kind, path, steps=STEPS, batch=2)
    assert kind == "vlm" and report.passed, report.summary()
    assert "rope_deltas -31" in report.prompt and "video (temporal interval" in report.prompt
    assert "rows after the first left-padded by 4" in report.prompt
    meta = read_serving(path)
    assert meta["positions"] == "mrope" and meta["tokens"] == "inputs_embeds"
    # the image features came from the exported vision encoder, written beside the decoder
    assert meta["vision_graph"] == "decoder.vision.onnx" and (tmp_path / "decoder.vision.onnx").is_file()
    assert "image and video features from decoder.vision.onnx on onnxruntime" in report.prompt
    # Negative control: decode positions without rope_deltas (mlx-vlm #1527's bug) must fail.
    dropped = check_generation(model, kind, path, steps=STEPS, drop_rope_deltas=True)
    assert not dropped.passed and dropped.max_logit_diff > 100 * dropped.tolerance, dropped.summary()


def test_cli_with_past_generates_and_refuses_what_does_not_go_with_it(tmp_path, capsys):
    out = tmp_path / "llama.onnx"
    assert main(["export-hf", "--preset", "llama-3.1-8b", "--with-past", "--generate", "6", "--out", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["steps"] == 6 and report["first_difference"] is None
    for argv in (["--generate", "4"], ["--with-past", "--part", "vision"], ["--with-past", "--exporter", "legacy"],
                 ["--with-past", "--opset", "17"], ["--with-past", "--opset", "99"], ["--with-past", "--generate", "5000"],
                 ["--with-past", "--layers", "65"]):
        bad = tmp_path / "bad.onnx"
        assert _exit_status(["export-hf", "--preset", "qwen2-vl-7b", "--out", str(bad), *argv]) == 2, argv
        assert not bad.exists()
    with pytest.raises(ValueError, match="serving metadata"):
        read_serving(shutil.copy(out, tmp_path / "copy.onnx") and _strip(tmp_path / "copy.onnx"))


def _exit_status(argv):
    """main's return value, or the status argparse exits with for values it refuses itself."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _strip(path):
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, path)
    return path


def test_check_trt_builds_the_with_past_graph(tmp_path):
    from rope_export.tensorrt import tensorrt_unavailable
    from rope_export.tensorrt.check import check_graphs

    reason = tensorrt_unavailable()
    if reason is not None:
        pytest.skip(f"no TensorRT builder here: {reason}")
    path = tmp_path / "decoder.onnx"
    export_with_past(_config("qwen2-vl-7b"), path)
    (result,) = check_graphs([str(path)])
    assert result.form == "with-past" and result.passed, result.problems
    assert result.build.rotary_layers == 4  # q and k of both layers: TensorRT's native rotary
