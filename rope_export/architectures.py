"""What rope_export knows of each transformers architecture, in one place: how its config
describes the rotary (`rope_export.hf_config`), which rotary modules and apply functions
`rope_export.hf.patch` swaps, and which models export-hf builds.

Plain data, no imports: keys are ``model_type`` values and transformers class names.
"""

from __future__ import annotations

__all__ = [
    "INTERLEAVED_TEXT", "INTERLEAVED_MROPE", "DEFAULT_MROPE_SECTION", "VISION_FAMILIES",
    "ROTARY_CLASSES", "KEEPS_FLOAT32", "TEXT_TYPES", "VISION_TYPES", "VISION_CLASSES", "TEXT_OF", "VISION_OF",
]

# ---------------------------------------------------------------- config reading
# Text decoders that pair dims (2i, 2i+1) (GPT-J's rotate_every_two) instead of (i, i+P).
INTERLEAVED_TEXT = frozenset({"gptj", "codegen"})
# M-RoPE decoders whose sections interleave t, h, w round robin (Qwen3-VL).
INTERLEAVED_MROPE = frozenset({"qwen3_vl", "qwen3_vl_moe", "qwen3_vl_text", "qwen3_vl_moe_text"})
# The reference code's mrope_section when the config names none.
DEFAULT_MROPE_SECTION = {
    "qwen2_vl": [16, 24, 24], "qwen2_5_vl": [16, 24, 24], "qwen2_vl_text": [16, 24, 24], "qwen2_5_vl_text": [16, 24, 24],
    "qwen3_vl": [24, 20, 20], "qwen3_vl_moe": [24, 20, 20], "qwen3_vl_text": [24, 20, 20], "qwen3_vl_moe_text": [24, 20, 20],
}
# Vision encoder model_type (its own, or its VLM's) -> how its 2D rotary is laid out.
VISION_FAMILIES = {
    "pixtral": "pixtral", "llava": "pixtral", "mistral3": "pixtral",
    "llama4_vision_model": "llama4", "llama4": "llama4",
    "qwen2_vl": "qwen_vl", "qwen2_5_vl": "qwen_vl", "qwen3_vl": "qwen_vl", "qwen3_vl_moe": "qwen_vl",
    "qwen2_vl_vision": "qwen_vl", "qwen2_5_vl_vision": "qwen_vl", "qwen3_vl_vision": "qwen_vl",
    "qwen3_vl_moe_vision": "qwen_vl",
}

# ------------------------------------------------------------------------- patch
# Rotary class -> (input kind, module-level apply functions of its modeling file). Kinds:
# "text" ([B, S] positions), "mrope" ([3, B, S]), "vision_hw" ([N, 2] rows/columns per patch),
# "llama4_vision" (no positions: the fixed patch grid plus a class token).
_TEXT = ("text", ("apply_rotary_pos_emb",))
_MROPE = ("mrope", ("apply_rotary_pos_emb",))
_VISION_QWEN = ("vision_hw", ("apply_rotary_pos_emb_vision",))
ROTARY_CLASSES = {
    "LlamaRotaryEmbedding": _TEXT,
    "MistralRotaryEmbedding": _TEXT,
    "Qwen2RotaryEmbedding": _TEXT,
    "Phi3RotaryEmbedding": _TEXT,
    "GPTNeoXRotaryEmbedding": _TEXT,
    "Qwen2VLRotaryEmbedding": _MROPE,
    "Qwen2_5_VLRotaryEmbedding": _MROPE,
    "Qwen3VLTextRotaryEmbedding": _MROPE,
    "PixtralVisionRotaryEmbedding": ("vision_hw", ("apply_rotary_pos_emb",)),
    "Qwen2VLVisionRotaryEmbedding": _VISION_QWEN,
    "Qwen2_5_VLVisionRotaryEmbedding": _VISION_QWEN,
    "Qwen3VLVisionRotaryEmbedding": _VISION_QWEN,
    "Llama4VisionRotaryEmbedding": ("llama4_vision", ("vision_apply_rotary_emb",)),
}
# Rotary modules that return float32 cos/sin whatever the activation dtype.
KEEPS_FLOAT32 = frozenset({"Qwen2VLVisionRotaryEmbedding", "Qwen2_5_VLVisionRotaryEmbedding", "Qwen3VLVisionRotaryEmbedding"})

# --------------------------------------------------------------------- export-hf
TEXT_TYPES = ("llama", "mistral", "qwen2", "phi3", "gpt_neox", "qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text")
VISION_TYPES = ("pixtral", "llama4_vision_model", "qwen2_vl_vision", "qwen2_5_vl_vision", "qwen3_vl_vision")
# Vision encoders AutoModel does not map to their own class: model_type -> (modeling module, class).
VISION_CLASSES = {"llama4_vision_model": ("llama4.modeling_llama4", "Llama4VisionModel"),
                  "qwen2_vl_vision": ("qwen2_vl.modeling_qwen2_vl", "Qwen2VisionTransformerPretrainedModel")}
# A whole VLM's model_type -> the model_type of the part export-hf builds.
TEXT_OF = {"qwen2_vl": "qwen2_vl_text", "qwen2_5_vl": "qwen2_5_vl_text", "qwen3_vl": "qwen3_vl_text"}
VISION_OF = {"qwen2_vl": "qwen2_vl_vision", "qwen2_5_vl": "qwen2_5_vl_vision", "qwen3_vl": "qwen3_vl_vision",
             "llama4": "llama4_vision_model", "mistral3": "pixtral", "llava": "pixtral"}
