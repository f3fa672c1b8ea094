"""Tests of rope_export.hf.vision_grid: Qwen-VL vision encoders exported with a dynamic grid, against transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rope_export.positions import vision_grid_inputs

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf
torch = pytest.importorskip("torch")

import rope_export as rx  # noqa: E402
from rope_export.hf.export import export_hf, tiny_model  # noqa: E402
from rope_export.hf.vision_grid import METADATA_KEY, GridEncoder  # noqa: E402


FAMILIES = {"qwen2-vl-7b": "Qwen2VisionTransformerPretrainedModel",
            "qwen2.5-vl-7b": "Qwen2_5_VisionTransformerPretrainedModel", "qwen3-vl-8b": "Qwen3VLVisionModel"}


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_dynamo_export_with_dynamic_grid_matches_transformers(preset, tmp_path):
    """export-hf (dynamo): the patched encoder exports with the patch count dynamic, and
    onnxruntime fed by vision_grid_inputs matches transformers' own forward at two unseen grids
    (edge windows; a 2-frame video beside an image)."""
    out = tmp_path / "vision.onnx"
    report = export_hf(rx.preset_info(preset)["config"], out, part="vision", layers=2, compare_unpatched=False)
    assert report.model == FAMILIES[preset]
    assert report.passed and not report.errors, report.summary()
    assert len(report.checked_shapes) == 3
    assert report.rotary_nodes == 4  # q and k of both layers


def test_served_from_metadata_without_torch_inputs(tmp_path):
    """What a serving process does: read the recipe from the graph's metadata, build the grid
    inputs with numpy, run; the result equals transformers. Wrong host inputs are caught."""
    import onnxruntime as ort

    out = tmp_path / "vision.onnx"
    config = rx.preset_info("qwen2.5-vl-7b")["config"]
    assert export_hf(config, out, part="vision", layers=2, compare_unpatched=False).passed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    params = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert params == {"spatial_merge_size": 2, "window_size": 112, "patch_size": 14}
    model = tiny_model(config, "vision", 2)  # the same seed: the same weights export_hf used
    encoder = GridEncoder(model)
    grid = [[1, 12, 18]]
    pixels = encoder.example_args(grid, seed=7)[0]
    feeds = {"pixel_values": pixels.numpy(), **vision_grid_inputs(grid, **params)}
    with torch.no_grad():
        want = encoder.reference(pixels, grid)[0].numpy()
    got = session.run(None, feeds)[0]
    tol = 2e-5 * max(1.0, float(np.abs(want).max()))
    assert got.shape == want.shape and np.abs(got - want).max() <= tol
    # Rows and columns swapped, or the two frames of a video as one segment: visibly wrong.
    swapped = dict(feeds, position_ids=feeds["position_ids"][:, ::-1].copy())
    assert np.abs(session.run(None, swapped)[0] - want).max() > 10 * tol
    video = [[2, 6, 8]]
    pixels = encoder.example_args(video, seed=8)[0]
    feeds = {"pixel_values": pixels.numpy(), **vision_grid_inputs(video, **params)}
    with torch.no_grad():
        want = encoder.reference(pixels, video)[0].numpy()
    assert np.abs(session.run(None, feeds)[0] - want).max() <= 2e-5 * max(1.0, float(np.abs(want).max()))
    merged = dict(feeds, cu_seqlens=feeds["cu_seqlens"][[0, -1]])
    assert np.abs(session.run(None, merged)[0] - want).max() > 10 * tol


def test_legacy_exporter_takes_the_grid_inputs_too(tmp_path):
    report = export_hf(rx.preset_info("qwen3-vl-8b")["config"], tmp_path / "v.onnx", part="vision", layers=2,
                       exporter="legacy", compare_unpatched=False)
    assert report.passed, report.summary()
    import onnx

    outputs = [o.name for o in onnx.load(str(tmp_path / "v.onnx")).graph.output]
    assert outputs == ["image_embeds", "deepstack_0"]  # the narrowed encoder keeps a deepstack tap


def test_other_encoders_are_refused():
    model = tiny_model(rx.preset_info("pixtral-12b")["config"], "vision", 1)
    with pytest.raises(ValueError, match="not a Qwen-VL vision encoder"):
        GridEncoder(model)


def test_qwen3_vl_moe_encoder_patched_exported_and_matching():
    """Qwen3-VL-MoE's encoder (its own classes): patched rotary, grid inputs, two unseen grids."""
    import onnxruntime as ort
    from transformers.models.qwen3_vl_moe import modeling_qwen3_vl_moe as M

    vc = transformers.AutoConfig.for_model("qwen3_vl_moe").vision_config
    vc.depth, vc.hidden_size, vc.num_heads, vc.intermediate_size, vc.out_hidden_size = 2, 64, 2, 128, 64
    vc.deepstack_visual_indexes, vc._attn_implementation = [0], "eager"
    torch.manual_seed(0)
    visual = M.Qwen3VLMoeVisionModel(vc).eval()
    encoder = GridEncoder(visual)
    args = encoder.example_args([[1, 8, 12]])
    with rx.hf.patch(visual) as patched:
        assert [cls for _, cls, _ in patched.replaced] == ["Qwen3VLMoeVisionRotaryEmbedding"]
        program = torch.onnx.export(encoder, args, dynamo=True, opset_version=23, dynamic_shapes=encoder.dynamic_shapes(),
                                    input_names=encoder.input_names, output_names=encoder.output_names,
                                    verify=False, report=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for grid in ([[1, 10, 14]], [[2, 6, 8], [1, 14, 4]]):
        case = encoder.example_args(grid, seed=3)
        with torch.no_grad():
            wants = encoder.reference(case[0], grid)
        gots = session.run(None, dict(zip(encoder.input_names, (t.numpy() for t in case))))
        assert len(gots) == len(wants) == 2
        for got, want in zip(gots, wants):
            want = want.numpy()
            assert got.shape == want.shape and np.abs(got - want).max() <= 2e-5 * max(1.0, float(np.abs(want).max()))
