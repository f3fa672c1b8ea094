"""Bit-level parity with the models' own code (transformers' rotary classes).

Every expected number here is produced at test time by transformers (a test extra),
never by rope_export. Tiny configs are built in the test; nothing is downloaded.
inv_freq must be torch.equal; cos/sin, which pass through torch's vectorised sin/cos on
differently shaped tensors, are compared to within 2 float32 ulps of 1.
"""

from __future__ import annotations

import pytest
import torch

import rope_export as rx
from rope_export.positions import patch_grid_positions, vision_position_ids

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

COS_ATOL = 2.5e-7  # 2 ulps of 1.0 in float32


def _module(spec):
    return rx.RotaryEmbedding(spec)


def _hf_text(config_cls, rotary_cls, **config_kwargs):
    config = config_cls(**config_kwargs)
    return config, rotary_cls(config)


def _positions(length, start=0):
    return torch.arange(start, start + length, dtype=torch.int64)[None]


# ----------------------------------------------------------------- 1D rope types
LLAMA = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_hidden_layers=1)

ROPE_PARAMETERS = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32, "rope_theta": 10000.0},
    "yarn-untruncated": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                         "original_max_position_embeddings": 32, "rope_theta": 150000.0},
    "yarn-mscale": {"rope_type": "yarn", "factor": 40.0, "mscale": 0.707, "mscale_all_dim": 0.707,
                    "original_max_position_embeddings": 16, "rope_theta": 10000.0},
    "yarn-attention-factor": {"rope_type": "yarn", "factor": 4.0, "attention_factor": 0.5, "beta_fast": 16,
                              "original_max_position_embeddings": 64, "rope_theta": 10000.0},
}


@pytest.mark.parametrize("case", sorted(ROPE_PARAMETERS))
def test_llama_family_inv_freq_bit_identical(case):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = dict(ROPE_PARAMETERS[case])
    config, hf = _hf_text(LlamaConfig, LlamaRotaryEmbedding, rope_parameters=dict(params), **LLAMA)
    spec = rx.RopeSpec.from_hf_config({**LLAMA, "model_type": "llama", "rope_parameters": params})
    mod = _module(spec)
    pos = _positions(40, start=3)
    assert torch.equal(mod.inv_freq_at(pos), hf.inv_freq), case
    assert spec.attention_scaling == pytest.approx(hf.attention_scaling, rel=0, abs=0)
    x = torch.zeros(1, 1, 40, spec.head_dim)
    cos_hf, sin_hf = hf(x, pos)
    cos, sin = mod.cos_sin(pos)
    torch.testing.assert_close(cos, cos_hf[..., : spec.num_pairs], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin, sin_hf[..., : spec.num_pairs], atol=COS_ATOL, rtol=0)


def test_old_style_rope_scaling_keys_read_the_same():
    # Older config.json files: rope_scaling {"type": ...} and a top-level rope_theta.
    new = rx.RopeSpec.from_hf_config({**LLAMA, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}})
    old = rx.RopeSpec.from_hf_config({**LLAMA, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert new.inv_freq == old.inv_freq


@pytest.mark.parametrize("length", [10, 256, 257, 700])
def test_dynamic_ntk_matches_reference_at_runtime_length(length):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    _, hf = _hf_text(LlamaConfig, LlamaRotaryEmbedding, rope_parameters=dict(params), **LLAMA)
    mod = _module(rx.RopeSpec.from_hf_config({**LLAMA, "rope_parameters": params}))
    pos = _positions(length)
    x = torch.zeros(1, 1, length, 32)
    cos_hf, _ = hf(x, pos)  # updates hf.inv_freq for this length
    assert torch.equal(mod.inv_freq_at(pos), hf.inv_freq)
    torch.testing.assert_close(mod.cos_sin(pos)[0], cos_hf[..., :16], atol=COS_ATOL, rtol=0)


def test_longrope_switches_tables_like_phi3():
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    short = [1.0 + 0.05 * i for i in range(16)]
    long = [1.0 + 1.5 * i for i in range(16)]
    cfg = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
               original_max_position_embeddings=64, rope_theta=10000.0, num_hidden_layers=1,
               rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long})
    hf = Phi3RotaryEmbedding(Phi3Config(**cfg))
    mod = _module(rx.RopeSpec.from_hf_config({**cfg, "model_type": "phi3"}))
    assert mod.spec.attention_scaling == hf.attention_scaling
    for length in (64, 65, 300, 10):
        pos = _positions(length)
        hf(torch.zeros(1, 1, length, 32), pos)
        assert torch.equal(mod.inv_freq_at(pos), hf.inv_freq), length


def test_proportional_zero_frequency_pairs():
    from transformers import LlamaConfig

    params = {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}
    config = LlamaConfig(rope_parameters=dict(params), **{**LLAMA, "head_dim": 64})
    inv_hf, attn = ROPE_INIT_FUNCTIONS["proportional"](config)
    spec = rx.RopeSpec.from_hf_config({**LLAMA, "head_dim": 64, "rope_parameters": params})
    assert torch.equal(torch.tensor(spec.inv_freq), inv_hf)
    assert spec.rotary_dim == 64 and spec.num_pairs == 32 and spec.inv_freq[8:] == (0.0,) * 24


def test_gpt_neox_partial_rotary():
    from transformers import GPTNeoXConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

    cfg = dict(hidden_size=256, num_attention_heads=4, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=128)
    hf = GPTNeoXRotaryEmbedding(GPTNeoXConfig(**cfg, num_hidden_layers=1))
    spec = rx.RopeSpec.from_hf_config({**cfg, "model_type": "gpt_neox"})
    assert spec.rotary_dim == 16 and torch.equal(torch.tensor(spec.inv_freq), hf.inv_freq)


def test_gptj_interleaved_sin_cos_table():
    from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions

    spec = rx.RopeSpec.from_hf_config({"model_type": "gptj", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_positions": 64})
    assert spec.layout == "interleaved" and spec.rotary_dim == 16
    table = create_sinusoidal_positions(64, 16)  # [pos, sin(8) | cos(8)]
    cos, sin = _module(spec).cos_sin(_positions(64))
    torch.testing.assert_close(sin[0], table[:, :8], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(cos[0], table[:, 8:], atol=COS_ATOL, rtol=0)


# ----------------------------------------------------------------------- M-RoPE
def _mrope_positions(batch=2, seq=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5000, (3, batch, seq), generator=g)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_mrope_text_cos_sin_match(family):
    if family == "qwen2_vl":
        from transformers import Qwen2VLTextConfig as C
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding as R
        rope = {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e6}
    elif family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLTextConfig as C
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding as R
        rope = {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e6}
    else:
        from transformers import Qwen3VLTextConfig as C
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding as R
        rope = {"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True, "rope_theta": 5e6}
    cfg = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096)
    hf = R(C(rope_parameters=dict(rope), num_hidden_layers=1, **cfg))
    spec = rx.RopeSpec.from_hf_config({**cfg, "model_type": family, "rope_parameters": rope})
    assert spec.num_axes == 3
    assert torch.equal(torch.tensor(spec.inv_freq), hf.inv_freq)
    pos = _mrope_positions()
    cos_hf, sin_hf = hf(torch.zeros(1, 1, 1, 32), pos)
    cos, sin = _module(spec).cos_sin(pos)
    torch.testing.assert_close(cos, cos_hf[..., :16], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin, sin_hf[..., :16], atol=COS_ATOL, rtol=0)
    # The second half of HF's table repeats the first (rotate_half layout).
    assert torch.equal(cos_hf[..., :16], cos_hf[..., 16:])


# ---------------------------------------------------------------- vision encoders
def _vision_case(family):
    T = transformers
    if family == "pixtral":
        from transformers.models.pixtral.modeling_pixtral import PixtralVisionRotaryEmbedding as R
        cfg = dict(hidden_size=256, num_attention_heads=4, head_dim=64, image_size=128, patch_size=16, rope_theta=10000.0)
        return T.PixtralVisionConfig(**cfg), R, {**cfg, "model_type": "pixtral"}
    if family == "qwen2_vl":
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding as R
        cfg = dict(embed_dim=320, hidden_size=512, num_heads=4, patch_size=14, spatial_merge_size=2)
        return T.Qwen2VLVisionConfig(**cfg), R, {"model_type": "qwen2_vl", "vision_config": cfg}
    if family == "qwen2_5_vl":
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionRotaryEmbedding as R
        cfg = dict(hidden_size=320, out_hidden_size=512, num_heads=4, patch_size=14, spatial_merge_size=2)
        return T.Qwen2_5_VLVisionConfig(**cfg), R, {"model_type": "qwen2_5_vl", "vision_config": cfg}
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionRotaryEmbedding as R
    cfg = dict(hidden_size=288, out_hidden_size=512, num_heads=4, patch_size=16, spatial_merge_size=2)
    return T.Qwen3VLVisionConfig(**cfg), R, {"model_type": "qwen3_vl", "vision_config": {**cfg, "model_type": "qwen3_vl"}}


@pytest.mark.parametrize("family", ["pixtral", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_vision_axial_rope_matches(family):
    config, R, ours = _vision_case(family)
    hf = R(config)
    spec = rx.RopeSpec.from_hf_config(ours, part="vision")
    P = spec.num_pairs
    inv = torch.tensor(spec.inv_freq)
    if family == "pixtral":
        assert torch.equal(inv, hf.inv_freq)
    else:  # one shared table for rows (first half) and columns (second half)
        assert torch.equal(inv[: P // 2], hf.inv_freq) and torch.equal(inv[P // 2 :], hf.inv_freq)
    grid = torch.tensor([[1, 6, 8], [2, 4, 4]])
    pos = vision_position_ids(grid, spatial_merge_size=2)  # [2, 1, N]
    hf_cos, hf_sin = hf(torch.zeros(1), pos[:, 0].T.contiguous())  # HF takes [N, 2]
    cos, sin = _module(spec).cos_sin(pos)
    torch.testing.assert_close(cos[0], hf_cos[:, :P], atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin[0], hf_sin[:, :P], atol=COS_ATOL, rtol=0)


def test_vision_position_ids_match_transformers():
    from transformers.vision_utils import get_vision_position_ids

    grid = torch.tensor([[1, 6, 8], [3, 4, 4]])
    ours = vision_position_ids(grid, spatial_merge_size=2)
    assert torch.equal(ours[:, 0].T, get_vision_position_ids(grid, 2))


def test_llama4_vision_complex_rotary_matches():
    from transformers import Llama4VisionConfig
    from transformers.models.llama4.modeling_llama4 import Llama4VisionRotaryEmbedding, vision_apply_rotary_emb

    cfg = dict(hidden_size=352, num_attention_heads=4, image_size=84, patch_size=14, rope_theta=10000.0)
    hf = Llama4VisionRotaryEmbedding(Llama4VisionConfig(**cfg))
    spec = rx.RopeSpec.from_hf_config({"model_type": "llama4", "vision_config": {**cfg, "model_type": "llama4_vision_model"}}, part="vision")
    assert spec.layout == "interleaved" and spec.head_dim == 88
    side = cfg["image_size"] // cfg["patch_size"]
    pos = patch_grid_positions(side, side, offset=1, cls_token="last")
    freqs = hf.freqs_ci[:, 0]  # [N, P] complex
    cos, sin = _module(spec).cos_sin(pos)
    torch.testing.assert_close(cos[0], freqs.real, atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin[0], freqs.imag, atol=COS_ATOL, rtol=0)
    # And the rotation itself against Meta's complex-number application.
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, side * side + 1, 4, 88, generator=g)  # Llama 4 vision: [B, S, H, D]
    k = torch.randn(1, side * side + 1, 4, 88, generator=g)
    q_hf, k_hf = vision_apply_rotary_emb(q, k, hf.freqs_ci)
    q_ours, k_ours = _module(spec)(q.transpose(1, 2), k.transpose(1, 2), pos)
    torch.testing.assert_close(q_ours.transpose(1, 2), q_hf, atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(k_ours.transpose(1, 2), k_hf, atol=2e-6, rtol=1e-6)


def test_mrope_position_ids_match_qwen2_vl_get_rope_index():
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


def test_mrope_position_ids_follow_the_trained_rule_after_long_videos():
    """A video with more temporal steps than merged rows/columns: the next text starts one past
    the block's largest position (trained rule); transformers 5.23 starts it earlier."""
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


# -------------------------------------------------------------- presets vs models
PRESET_CLASSES = {
    "llama-3.1-8b": ("LlamaConfig", "transformers.models.llama.modeling_llama", "LlamaRotaryEmbedding"),
    "mistral-7b": ("MistralConfig", "transformers.models.mistral.modeling_mistral", "MistralRotaryEmbedding"),
    "gpt-neox-20b": ("GPTNeoXConfig", "transformers.models.gpt_neox.modeling_gpt_neox", "GPTNeoXRotaryEmbedding"),
    "phi-3-mini-128k": ("Phi3Config", "transformers.models.phi3.modeling_phi3", "Phi3RotaryEmbedding"),
    "gpt-oss-20b": ("GptOssConfig", "transformers.models.gpt_oss.modeling_gpt_oss", "GptOssRotaryEmbedding"),
    "qwen2-vl-7b": ("Qwen2VLTextConfig", "transformers.models.qwen2_vl.modeling_qwen2_vl", "Qwen2VLRotaryEmbedding"),
    "qwen2.5-vl-7b": ("Qwen2_5_VLTextConfig", "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "Qwen2_5_VLRotaryEmbedding"),
}


@pytest.mark.parametrize("preset", sorted(PRESET_CLASSES))
def test_text_presets_inv_freq_equal_model_code(preset):
    import importlib

    config_name, module_name, rotary_name = PRESET_CLASSES[preset]
    cfg = {k: v for k, v in rx.preset_info(preset)["config"].items() if k not in ("vision_config", "model_type")}
    if cfg.get("rope_scaling", {}).get("type") == "su":
        # transformers 5.23 renames "su" only after validating, then rejects the file; same rule as "longrope".
        cfg["rope_scaling"] = {**cfg["rope_scaling"], "type": "longrope"}
    config = getattr(transformers, config_name)(**cfg)
    hf = getattr(importlib.import_module(module_name), rotary_name)(config)
    spec = rx.load_preset(preset)
    assert torch.equal(torch.tensor(spec.inv_freq), hf.inv_freq), preset
    assert spec.attention_scaling == hf.attention_scaling
    if spec.length_rule is not None and spec.length_rule.kind == "longrope":
        n = spec.length_rule.original_max_position_embeddings + 1
        hf(torch.zeros(1, 1, 1, spec.head_dim), _positions(n))
        assert torch.equal(torch.tensor(spec.length_rule.long_inv_freq), hf.inv_freq)


def test_qwen3_vl_preset_text_and_vision_equal_model_code():
    from transformers import Qwen3VLTextConfig, Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding, Qwen3VLVisionRotaryEmbedding

    cfg = rx.preset_info("qwen3-vl-8b")["config"]
    text = Qwen3VLTextRotaryEmbedding(Qwen3VLTextConfig(**{k: v for k, v in cfg["text_config"].items() if k != "model_type"}))
    vision = Qwen3VLVisionRotaryEmbedding(Qwen3VLVisionConfig(**{k: v for k, v in cfg["vision_config"].items() if k != "model_type"}))
    t, v = rx.load_preset("qwen3-vl-8b"), rx.load_preset("qwen3-vl-8b:vision")
    assert torch.equal(torch.tensor(t.inv_freq), text.inv_freq)
    assert torch.equal(torch.tensor(v.inv_freq[: v.num_pairs // 2]), vision.inv_freq)
    pos = _mrope_positions(1, 50, seed=3)
    cos_hf, _ = text(torch.zeros(1), pos)
    torch.testing.assert_close(rx.RotaryEmbedding(t).cos_sin(pos)[0], cos_hf[..., :64], atol=COS_ATOL, rtol=0)


@pytest.mark.parametrize("preset,config_name,rotary", [
    ("pixtral-12b", "PixtralVisionConfig", "transformers.models.pixtral.modeling_pixtral.PixtralVisionRotaryEmbedding"),
    ("qwen2-vl-7b:vision", "Qwen2VLVisionConfig", "transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VLVisionRotaryEmbedding"),
    ("qwen2.5-vl-7b:vision", "Qwen2_5_VLVisionConfig", "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLVisionRotaryEmbedding"),
])
def test_vision_presets_inv_freq_equal_model_code(preset, config_name, rotary):
    import importlib

    module_name, cls_name = rotary.rsplit(".", 1)
    vcfg = {k: v for k, v in rx.preset_info(preset)["config"]["vision_config"].items() if k != "model_type"}
    hf = getattr(importlib.import_module(module_name), cls_name)(getattr(transformers, config_name)(**vcfg))
    spec = rx.load_preset(preset)
    half = spec.num_pairs // 2
    expected = hf.inv_freq if preset.startswith("pixtral") else torch.cat([hf.inv_freq, hf.inv_freq])
    assert torch.equal(torch.tensor(spec.inv_freq), expected), preset
    assert len(spec.inv_freq) == 2 * half


def test_llama4_scout_preset_matches_model_code():
    from transformers import Llama4VisionConfig
    from transformers.models.llama4.modeling_llama4 import Llama4VisionRotaryEmbedding

    vcfg = {k: v for k, v in rx.preset_info("llama-4-scout")["config"]["vision_config"].items() if k != "model_type"}
    hf = Llama4VisionRotaryEmbedding(Llama4VisionConfig(**vcfg))
    spec = rx.load_preset("llama-4-scout")
    side = vcfg["image_size"] // vcfg["patch_size"]
    cos, sin = rx.RotaryEmbedding(spec).cos_sin(patch_grid_positions(side, side, offset=1, cls_token="last"))
    torch.testing.assert_close(cos[0], hf.freqs_ci[:, 0].real, atol=COS_ATOL, rtol=0)
    torch.testing.assert_close(sin[0], hf.freqs_ci[:, 0].imag, atol=COS_ATOL, rtol=0)
