"""Tests of rope_export.positions: host-side position builders follow the models' rules (and transformers' code)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import rope_export as rx
from rope_export.positions import (decode_position_ids, mrope_position_ids, patch_grid_positions, text_position_ids,
                                  vision_grid_inputs, vision_position_ids)


def test_patch_grid_llama4_cls_token_is_unrotated():
    spec = rx.load_preset("llama-4-scout")
    pos = patch_grid_positions(24, 24, offset=1, cls_token="last")
    assert pos.shape == (2, 1, 577) and pos[:, 0, -1].tolist() == [0, 0] and int(pos[:, 0, :-1].min()) == 1
    x = torch.randn(1, 2, 577, spec.head_dim)
    out, _ = rx.RotaryEmbedding(spec)(x, x, pos)
    assert torch.equal(out[:, :, -1], x[:, :, -1])
    assert not torch.equal(out[:, :, 0], x[:, :, 0])


def test_vision_position_ids_block_major_order():
    pos = vision_position_ids(torch.tensor([[1, 2, 4]]), spatial_merge_size=2)[:, 0]
    # 2x2 windows: (0,0) (0,1) (1,0) (1,1) then (0,2) (0,3) (1,2) (1,3)
    assert pos.tolist() == [[0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 0, 1, 2, 3, 2, 3]]
    with pytest.raises(ValueError, match="divisible"):
        vision_position_ids(torch.tensor([[1, 3, 4]]), spatial_merge_size=2)


def test_mrope_positions_video_interval_and_errors():
    types = torch.tensor([[0] + [2] * 8 + [0]])
    pos = mrope_position_ids(types, video_grid_thw=torch.tensor([[2, 4, 4]]), video_time_intervals=[3.0])
    # t runs 1, 4 (interval 3); the next text starts one past the block's largest position
    # (the trained rule; transformers 5.23 would start it at 1 + max(h, w) = 3).
    assert pos[0, 0].tolist() == [0, 1, 1, 1, 1, 4, 4, 4, 4, 5]
    with pytest.raises(ValueError, match="more video runs"):
        mrope_position_ids(types)
    with pytest.raises(ValueError, match="does not match its grid"):
        mrope_position_ids(types, video_grid_thw=torch.tensor([[1, 4, 4]]))


def test_numbers_a_graph_cannot_hold_are_refused():
    from rope_export.positions import mrope_position_ids, vision_position_ids

    with pytest.raises(ValueError, match="finite in float32"):
        rx.RopeSpec(head_dim=4, rotary_dim=4, inv_freq=(1e39, 1.0))
    with pytest.raises(ValueError, match="attention_scaling must be a float32 number > 0"):
        rx.RopeSpec(head_dim=4, rotary_dim=4, inv_freq=(1.0, 0.5), attention_scaling=1e39)
    types = torch.tensor([[0] * 3 + [2] * 16])
    for interval in (float("nan"), 1e30, -1.0):
        with pytest.raises(ValueError, match="video_time_intervals"):
            mrope_position_ids(types, video_grid_thw=torch.tensor([[4, 4, 4]]), video_time_intervals=[interval])
    with pytest.raises(ValueError, match="grid_thw entries must be positive"):
        vision_position_ids(torch.tensor([[1, -2, 4]]), 2)
    with pytest.raises(ValueError, match="spatial_merge_size must be an int >= 1"):
        vision_position_ids(torch.tensor([[1, 2, 4]]), 0)


@pytest.mark.hf
def test_vision_position_ids_match_transformers():
    pytest.importorskip("transformers")
    from transformers.vision_utils import get_vision_position_ids

    grid = torch.tensor([[1, 6, 8], [3, 4, 4]])
    ours = vision_position_ids(grid, spatial_merge_size=2)
    assert torch.equal(ours[:, 0].T, get_vision_position_ids(grid, 2))


@pytest.mark.hf
def test_mrope_position_ids_match_qwen2_vl_get_rope_index():
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    from rope_export.positions import mrope_position_ids

    fake = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2)))
    fake.get_vision_position_ids = lambda *a, **k: Qwen2VLModel.get_vision_position_ids(fake, *a, **k)
    # text, image 1x4x6, text, video 2x4x4, text; a second row padded on the left.
    row = [0] * 3 + [1] * 6 + [0] * 2 + [2] * 8 + [0] * 4
    types = torch.tensor([row, [0, 0] + row[:-2]])
    mask = torch.ones_like(types)
    mask[1, :2] = 0
    images = torch.tensor([[1, 4, 6], [1, 4, 6]])
    videos = torch.tensor([[2, 4, 4], [2, 4, 4]])
    ids = torch.zeros_like(types)
    hf, _ = Qwen2VLModel.get_rope_index(fake, ids, types, images, videos, attention_mask=mask)
    ours = mrope_position_ids(types, images, videos, spatial_merge_size=2, attention_mask=mask)
    assert torch.equal(ours, hf)
    assert not torch.equal(ours[0], ours[1])  # a real grid: t, h and w differ


def _trained_rule_positions(runs, merge=2, intervals=()):
    """Qwen2-VL's reference rule, written out literally: text advances every axis by one; a
    vision block (t, h, w) sits at the running start; the next run starts at the block's
    largest position + 1. runs: [("text", n) | ("image"/"video", (t, h, w))]."""
    t_, h_, w_ = [], [], []
    start, videos = 0, iter(intervals)
    for kind, value in runs:
        if kind == "text":
            for i in range(value):
                t_.append(start + i), h_.append(start + i), w_.append(start + i)
            start += value
            continue
        t, h, w = value[0], value[1] // merge, value[2] // merge
        step = next(videos, 1.0) if kind == "video" else 1.0
        block = [(start + int(ti * step), start + hi, start + wi) for ti in range(t) for hi in range(h) for wi in range(w)]
        for a, b, c in block:
            t_.append(a), h_.append(b), w_.append(c)
        start = max(max(x) for x in block) + 1
    return torch.tensor([t_, h_, w_])[:, None]


@pytest.mark.hf
def test_mrope_position_ids_follow_the_trained_rule_after_long_videos():
    """A video with more temporal steps than merged rows/columns: the next text starts one past
    the block's largest position (trained rule); transformers 5.23 starts it earlier."""
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    from rope_export.positions import mrope_position_ids

    runs = [("text", 3), ("video", (6, 4, 4)), ("text", 4), ("image", (1, 4, 6)), ("text", 2)]
    types = torch.tensor([[0] * 3 + [2] * 24 + [0] * 4 + [1] * 6 + [0] * 2])
    ours = mrope_position_ids(types, torch.tensor([[1, 4, 6]]), torch.tensor([[6, 4, 4]]), spatial_merge_size=2)
    want = _trained_rule_positions(runs)
    assert torch.equal(ours, want)
    assert int(ours[0, 0, 3 + 24]) == 3 + 5 + 1  # the text after the video: t ran 3..8
    # Qwen2.5-VL's seconds-per-grid step stretches t; the rule is the same.
    ours25 = mrope_position_ids(types, torch.tensor([[1, 4, 6]]), torch.tensor([[6, 4, 4]]), spatial_merge_size=2,
                                video_time_intervals=[2.0])
    assert torch.equal(ours25, _trained_rule_positions(runs, intervals=[2.0]))

    fake = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2)))
    fake.get_vision_position_ids = lambda *a, **k: Qwen2VLModel.get_vision_position_ids(fake, *a, **k)
    hf, _ = Qwen2VLModel.get_rope_index(fake, torch.zeros_like(types), types, torch.tensor([[1, 4, 6]]),
                                        torch.tensor([[6, 4, 4]]), attention_mask=torch.ones_like(types))
    assert not torch.equal(hf, ours), "transformers now follows the trained rule: drop the divergence note"


GRIDS = ([[1, 8, 12]], [[1, 10, 14]], [[2, 6, 8], [1, 14, 4]], [[3, 16, 16], [1, 2, 2], [1, 34, 50]])


def _transformers_inputs(grid, align_corners=True):
    from transformers import vision_utils as vu

    g = torch.tensor(grid)
    ref = {"position_ids": vu.get_vision_position_ids(g, 2), "cu_seqlens": vu.get_vision_cu_seqlens(g)}
    ref["window_index"], ref["cu_window_seqlens"] = vu.get_vision_window_index(g, 2, 112, 14)
    ref["interp_indices"], ref["interp_weights"] = vu.get_vision_interpolation_indices_and_weights(
        g, num_grid_per_side=48, mode="bilinear", align_corners=align_corners, spatial_merge_size=2)
    return {k: v.numpy() for k, v in ref.items()}


@pytest.mark.hf
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_host_inputs_equal_transformers_bit_for_bit(grid, align_corners):
    pytest.importorskip("transformers")
    ours = vision_grid_inputs(grid, spatial_merge_size=2, window_size=112, patch_size=14, num_grid_per_side=48,
                              align_corners=align_corners)
    want = _transformers_inputs(grid, align_corners)
    assert ours.keys() == want.keys()
    for key, value in want.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.hf
def test_host_inputs_need_no_torch():
    code = ("import sys; from rope_export.positions import vision_grid_inputs as f; "
            "out = f([[2, 6, 8]], spatial_merge_size=2, window_size=112, patch_size=14, num_grid_per_side=48); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(sorted(out))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "interp_weights" in done.stdout


@pytest.mark.hf
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


def test_rope_deltas_and_decode_positions_by_hand():
    # 2 text tokens, a 1x4x6 image merged 2x2 (2x3 tokens), 2 text tokens: the image block starts
    # at 2 and spans rows 2..3, columns 2..4; text resumes at 5, so the last position is 6 and
    # 10 tokens used 7 positions: rope_deltas = 7 - 10 = -3.
    types = torch.tensor([[0, 0] + [1] * 6 + [0, 0]])
    pos, deltas = mrope_position_ids(types, torch.tensor([[1, 4, 6]]), return_deltas=True)
    assert pos.equal(mrope_position_ids(types, torch.tensor([[1, 4, 6]])))
    assert deltas.tolist() == [-3] and int(pos.max()) == 6
    # the next token after 10 cached ones sits at 10 - 3 = 7 on every axis, then 8, 9
    assert decode_position_ids(deltas, past_length=10, steps=3).tolist() == [[[7, 8, 9]]] * 3
    assert isinstance(decode_position_ids(deltas.numpy(), 10), np.ndarray)
    # left padding: the padded row's delta counts the padding as cache (transformers' rule)
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.int64), types], dim=1)
    mask = torch.tensor([[0, 0] + [1] * 10])
    _, padded_deltas = mrope_position_ids(padded, torch.tensor([[1, 4, 6]]), attention_mask=mask, return_deltas=True)
    assert padded_deltas.tolist() == [-5]
    with pytest.raises(ValueError, match="past_length"):
        decode_position_ids(deltas, past_length=-1)
    with pytest.raises(ValueError, match="steps"):
        decode_position_ids(deltas, past_length=3, steps=0)


def test_text_positions_follow_the_mask():
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert text_position_ids(mask).tolist() == [[0, 1, 2, 3], [1, 1, 0, 1]]
    assert text_position_ids(torch.from_numpy(mask)).dtype == torch.int64
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        text_position_ids(np.ones(4))


def test_position_rules_refuse_what_they_cannot_mean():
    for deltas in (np.array([-2.7]), np.array([[1]]), np.array(["3"]), np.array([2**40])):
        with pytest.raises(ValueError, match="rope_deltas"):
            decode_position_ids(deltas, past_length=4)
    with pytest.raises(ValueError, match="past_length"):
        decode_position_ids(np.array([0]), past_length=2**63 - 1)
    for mask in (np.array([[0.5, 1]]), np.array([[2, 1]]), np.array([[-1, 1]])):
        with pytest.raises(ValueError, match="0 and 1"):
            text_position_ids(mask)
    types = torch.tensor([[0, 0] + [1] * 6 + [0, 0]])
    with pytest.raises(ValueError, match="2 image grids given, token_types has 1 image runs"):
        mrope_position_ids(types, torch.tensor([[1, 4, 6], [1, 4, 6]]))
    with pytest.raises(ValueError, match="return_deltas"):
        mrope_position_ids(types, torch.tensor([[1, 4, 6]]), return_deltas="no")
    with pytest.raises(ValueError, match="0 and 1"):
        mrope_position_ids(types, torch.tensor([[1, 4, 6]]), attention_mask=torch.full((1, 10), 2))
    with pytest.raises(ValueError, match="no tokens"):
        mrope_position_ids(torch.zeros(1, 0, dtype=torch.long), return_deltas=True)
    # numpy token types are taken as they come
    assert mrope_position_ids(types.numpy(), torch.tensor([[1, 4, 6]])).equal(mrope_position_ids(types, torch.tensor([[1, 4, 6]])))
