"""Qwen-VL vision encoders with a dynamic image grid (rope_export.hf.vision_grid): the host-side
grid inputs against transformers' own bookkeeping, and exported encoders on onnxruntime against
transformers at image sizes the export never saw."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rope_export.positions import vision_grid_inputs

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.hf
torch = pytest.importorskip("torch")

import rope_export as rx  # noqa: E402
from rope_export.hf.export import export_hf, tiny_model  # noqa: E402
from rope_export.hf.vision_grid import METADATA_KEY, GridEncoder  # noqa: E402

GRIDS = ([[1, 8, 12]], [[1, 10, 14]], [[2, 6, 8], [1, 14, 4]], [[3, 16, 16], [1, 2, 2], [1, 34, 50]])
FAMILIES = {"qwen2-vl-7b": "Qwen2VisionTransformerPretrainedModel",
            "qwen2.5-vl-7b": "Qwen2_5_VisionTransformerPretrainedModel", "qwen3-vl-8b": "Qwen3VLVisionModel"}


def _transformers_inputs(grid, align_corners=True):
    from transformers import vision_utils as vu

    g = torch.tensor(grid)
    ref = {"position_ids": vu.get_vision_position_ids(g, 2), "cu_seqlens": vu.get_vision_cu_seqlens(g)}
    ref["window_index"], ref["cu_window_seqlens"] = vu.get_vision_window_index(g, 2, 112, 14)
    ref["interp_indices"], ref["interp_weights"] = vu.get_vision_interpolation_indices_and_weights(
        g, num_grid_per_side=48, mode="bilinear", align_corners=align_corners, spatial_merge_size=2)
    return {k: v.numpy() for k, v in ref.items()}


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_host_inputs_equal_transformers_bit_for_bit(grid, align_corners):
    ours = vision_grid_inputs(grid, spatial_merge_size=2, window_size=112, patch_size=14, num_grid_per_side=48,
                              align_corners=align_corners)
    want = _transformers_inputs(grid, align_corners)
    assert ours.keys() == want.keys()
    for key, value in want.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_host_inputs_need_no_torch():
    code = ("import sys; from rope_export.positions import vision_grid_inputs as f; "
            "out = f([[2, 6, 8]], spatial_merge_size=2, window_size=112, patch_size=14, num_grid_per_side=48); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(sorted(out))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "interp_weights" in done.stdout


@pytest.mark.parametrize("grid, kwargs, match", [
    ([[1, 5, 4]], {}, "multiples of spatial_merge_size"),
    ([[1, 0, 4]], {}, "positive"),
    ([[1.0, 4.0, 4.0]], {}, "integer"),
    ([1, 4, 4], {}, r"\[N, 3\]"),
    ([[1, 4, 4]], {"window_size": 112}, "go together"),
    ([[1, 4, 4]], {"num_grid_per_side": 48, "interpolation": "bicubic"}, "bilinear"),
])
def test_host_inputs_refuse_bad_input(grid, kwargs, match):
    with pytest.raises(ValueError, match=match):
        vision_grid_inputs(grid, spatial_merge_size=2, **kwargs)


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
