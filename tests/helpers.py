"""Shared test data, tolerances and helpers (imported as tests.helpers; fixtures live in conftest.py files)."""

from __future__ import annotations

import dataclasses

import torch

import rope_export as rx
from rope_export.spec import LAYOUTS
from rope_export.validate import reference_error_bound

PRESETS = rx.list_presets()
EPS32 = 2.0**-24


TINY = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}
SCALING_SPECS = {
    # rope types no preset uses, from tiny configs
    "dynamic-ntk": {**TINY, "rope_scaling": {"type": "dynamic", "factor": 4.0}},
    "linear": {**TINY, "rope_scaling": {"type": "linear", "factor": 4.0}},
    "proportional": {**TINY, "rope_parameters": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 1e6}},
}


def all_specs():
    """Every preset and tiny scaling config, in every layout: (id, spec)."""
    out = []
    named = [(n, rx.load_preset(n)) for n in PRESETS]
    named += [(n, rx.RopeSpec.from_hf_config(c, name=n)) for n, c in SCALING_SPECS.items()]
    for name, spec in named:
        for layout in LAYOUTS:
            out.append((f"{name}-{layout}", dataclasses.replace(spec, layout=layout)))
    return out


def random_positions(spec, batch, seq, high, gen):
    """int64 positions; for multi-axis specs every axis draws its own values."""
    return torch.randint(0, int(high), spec.position_shape(batch, seq), generator=gen, dtype=torch.int64)


def pair_norm_max(x, spec):
    """Largest 2D norm over rotation pairs of x [..., D]."""
    idx = [spec.pair_dims(i) for i in range(spec.num_pairs)]
    a = x[..., [i for i, _ in idx]].double()
    b = x[..., [j for _, j in idx]].double()
    return float(torch.sqrt(a * a + b * b).max())


def float32_tolerance(spec, positions, x):
    """Allowed |module - float64 reference| for float32 angles (`reference_error_bound`): one
    ulp of the angle, 4 for dynamic NTK, whose table is itself a chain of float32 pow/div."""
    ulps = 4.0 if spec.length_rule is not None and spec.length_rule.kind == "dynamic" else 1.0
    return reference_error_bound(spec, positions, pair_norm_max(x, spec), angle_ulps=ulps)


# ----------------------------------------------- parity with transformers' own rotary classes
# Every expected number in those tests is produced at test time by transformers (a test extra),
# never by rope_export. inv_freq must be torch.equal; cos/sin, which pass through torch's
# vectorised sin/cos on differently shaped tensors, are compared to within 2 float32 ulps of 1.
COS_ATOL = 2.5e-7  # 2 ulps of 1.0 in float32
LLAMA_KWARGS = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    num_hidden_layers=1)


def hf_text_rotary(config_cls, rotary_cls, **config_kwargs):
    """(config, rotary module) of a transformers text config class built from ``config_kwargs``."""
    config = config_cls(**config_kwargs)
    return config, rotary_cls(config)


def arange_positions(length, start=0):
    """int64 positions start .. start + length - 1, one row: [1, length]."""
    return torch.arange(start, start + length, dtype=torch.int64)[None]


def random_mrope_positions(batch=2, seq=37, seed=0):
    """Three unequal M-RoPE position streams below 5000: [3, batch, seq]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5000, (3, batch, seq), generator=g)


def probe_rows(model_type):
    """The coverage probe's rows of one model type: {(part, layer_type): (status, detail)} (needs transformers)."""
    from rope_export.hf.coverage import probe_model_type

    return {(r.part, r.layer_type): (r.status, r.detail) for r in probe_model_type(model_type)}


# DeepSeek-V3's config.json rope fields (deepseek-ai/DeepSeek-V3), with a smaller context.
DEEPSEEK_V3 = {"model_type": "deepseek_v3", "hidden_size": 7168, "num_attention_heads": 128, "qk_rope_head_dim": 64,
               "qk_nope_head_dim": 128, "v_head_dim": 128, "max_position_embeddings": 4096, "rope_theta": 10000,
               "rope_interleave": True,
               "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096 // 40,
                                "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}


def deepseek_v3_spec(cfg=DEEPSEEK_V3):
    """The spec of a multi-head latent attention config (DeepSeek-V3's by default)."""
    return rx.RopeSpec.from_hf_config(cfg)


# ------------------------------------- tiny whole transformers models (tests/hf), from config dicts
HF_LLAMA = {"model_type": "llama", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 512,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64}, "rope_theta": 500000.0}
HF_QWEN2VL = {"model_type": "qwen2_vl", "text_config": {
    "model_type": "qwen2_vl_text", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
    "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}}}
HF_PIXTRAL = {"model_type": "pixtral", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 2,
              "image_size": 112, "patch_size": 14, "rope_theta": 10000.0}
HF_LLAMA4_VISION = {"model_type": "llama4", "vision_config": {
    "model_type": "llama4_vision_model", "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2,
    "image_size": 56, "patch_size": 14, "vision_output_dim": 64, "projector_input_dim": 64, "projector_output_dim": 64,
    "rope_theta": 10000.0}}
HF_CASES = {"llama": (HF_LLAMA, "text"), "qwen2-vl-text": (HF_QWEN2VL, "text"), "pixtral-vision": (HF_PIXTRAL, "vision"),
            "llama4-vision": (HF_LLAMA4_VISION, "vision")}
HF_LAYERS = 2


def build_hf_case(name):
    """A tiny random model of one of HF_CASES, HF_LAYERS layers (needs transformers)."""
    from rope_export.hf.export import tiny_model

    config, part = HF_CASES[name]
    return tiny_model(config, part, HF_LAYERS, full_width=True)


def run_onnx_bytes(data, names, args):
    """The first output of a serialized ONNX model on onnxruntime CPU, fed the inputs it takes."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    fed = {i.name for i in session.get_inputs()}
    return session.run(None, {n: a.numpy() for n, a in zip(names, args) if n in fed})[0]


def engine_skip_reason() -> str | None:
    """Why a TensorRT engine cannot run here (needs CUDA and a TensorRT builder); None where it can."""
    from rope_export.tensorrt import tensorrt_unavailable

    builder, cuda = tensorrt_unavailable(), torch.cuda.is_available()
    if builder is None and cuda:
        return None
    return f"running an engine needs CUDA and TensorRT (builder: {builder or 'present'}; CUDA: {cuda})"
