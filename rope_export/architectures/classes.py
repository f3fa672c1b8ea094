"""What rope_export knows of transformers classes (keys are class names) and of the models
export-hf builds (keys are model_type values). Plain data."""

from __future__ import annotations

__all__ = ["XY_POSITIONS", "ROTARY_CLASSES", "KEEPS_FLOAT32", "VISION_TYPES", "VISION_CLASSES", "TEXT_OF", "VISION_OF",
           "LAYER_COUNT_KEY", "NARROWED_FIELDS", "NARROWING", "VISION_ENCODER_TYPES"]

# Vision encoders whose model_type does not say so ("..._vision"): a config of one is a vision part.
VISION_ENCODER_TYPES = frozenset({"pixtral", "llama4_vision_model"})

# Rotary classes whose position_ids are (x, y) = (column, row) per token (SAM 2 / SAM 3); ours
# are (row, column): the probe feeds them flipped.
XY_POSITIONS = frozenset({"Sam2VideoVisionRotaryEmbedding", "EdgeTamVideoVisionRotaryEmbedding",
                          "Sam3TrackerVideoVisionRotaryEmbedding", "Sam3ViTRotaryEmbedding"})

# ------------------------------------------------------------------------- patch
# Vision rotary classes -> (input kind, module-level apply functions of its modeling file). Kinds:
# "vision_hw" ([N, 2] rows/columns per patch), "llama4_vision" (no positions: the fixed patch
# grid plus a class token). Text rotaries need no entry: any whose config reads as a verified
# spec and whose apply function rotates as ours does is patched (rope_export.hf.patch).
_VISION_QWEN = ("vision_hw", ("apply_rotary_pos_emb_vision",))
ROTARY_CLASSES = {
    "PixtralVisionRotaryEmbedding": ("vision_hw", ("apply_rotary_pos_emb",)),
    "Qwen2VLVisionRotaryEmbedding": _VISION_QWEN,
    "Qwen2_5_VLVisionRotaryEmbedding": _VISION_QWEN,
    "Qwen3VLVisionRotaryEmbedding": _VISION_QWEN,
    "Qwen3VLMoeVisionRotaryEmbedding": _VISION_QWEN,
    "Llama4VisionRotaryEmbedding": ("llama4_vision", ("vision_apply_rotary_emb",)),
}
# Rotary modules that return float32 cos/sin whatever the activation dtype.
KEEPS_FLOAT32 = frozenset({"Qwen2VLVisionRotaryEmbedding", "Qwen2_5_VLVisionRotaryEmbedding", "Qwen3VLVisionRotaryEmbedding",
                           "Qwen3VLMoeVisionRotaryEmbedding"})

# --------------------------------------------------------------------- export-hf
VISION_TYPES = ("pixtral", "llama4_vision_model", "qwen2_vl_vision", "qwen2_5_vl_vision", "qwen3_vl_vision")
# Vision encoders AutoModel does not map to their own class: model_type -> (modeling module, class).
VISION_CLASSES = {"llama4_vision_model": ("llama4.modeling_llama4", "Llama4VisionModel"),
                  "qwen2_vl_vision": ("qwen2_vl.modeling_qwen2_vl", "Qwen2VisionTransformerPretrainedModel")}
# A whole VLM's model_type -> the model_type of the part export-hf builds.
TEXT_OF = {"qwen2_vl": "qwen2_vl_text", "qwen2_5_vl": "qwen2_5_vl_text", "qwen3_vl": "qwen3_vl_text"}
VISION_OF = {"qwen2_vl": "qwen2_vl_vision", "qwen2_5_vl": "qwen2_5_vl_vision", "qwen3_vl": "qwen3_vl_vision",
             "llama4": "llama4_vision_model", "mistral3": "pixtral", "llava": "pixtral"}
# The config key of the layer count, where it is not num_hidden_layers.
LAYER_COUNT_KEY = {t: "depth" for t in ("qwen2_vl_vision", "qwen2_5_vl_vision", "qwen3_vl_vision")}
# Fields a narrowed model keeps so that every kind of layer stays in it: {model_type: fields};
# a callable value takes the layer count. Qwen3-VL's deepstack taps; Qwen2.5-VL's full-attention
# blocks (the others attend within windows).
NARROWED_FIELDS = {"qwen3_vl_vision": {"deepstack_visual_indexes": lambda layers: [0]},
                   "qwen2_5_vl_vision": {"fullatt_block_indexes": lambda layers: [layers - 1]}}
# How export-hf narrows a model whose widths are tied together otherwise than hidden_size =
# heads * head_dim (`hf.export`): Zamba2's shared attention lives in its hybrid blocks and runs on
# [hidden, embeddings] (twice as wide); Llama 4 vision's pixel-shuffle projector takes
# hidden / ratio**2 features; Pixtral's width is hidden_size; other vision encoders' attention
# width is embed_dim (Qwen-VL: hidden_size is the merger's output).
NARROWING = {"zamba2": "hybrid_blocks", "llama4_vision_model": "pixel_shuffle", "pixtral": "hidden_width"}
