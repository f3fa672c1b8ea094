"""What rope_export knows of each transformers architecture, in one place: how its config
describes the rotary (`rope_export.hf_config`), which rotary modules and apply functions
`rope_export.hf.patch` swaps, and which models export-hf builds.

Plain data, no imports: keys are ``model_type`` values and transformers class names.
"""

from __future__ import annotations

__all__ = [
    "INTERLEAVED_TEXT", "DEINTERLEAVING_MLA", "KEY_NAMES", "INTERLEAVED_MROPE", "ALTERNATING_MROPE", "ALTERNATING_2D_TEXT",
    "DEFAULT_MROPE_SECTION", "HEAD_DIM_KEY", "ROTARY_FLAG", "REFUSED_TEXT", "ROTARY_USES", "REFUSED_VISION",
    "VISION_FAMILIES", "XY_POSITIONS", "ROTARY_CLASSES", "KEEPS_FLOAT32", "VISION_TYPES", "VISION_CLASSES", "TEXT_OF", "VISION_OF", "VERIFIED_TEXT",
]

# ---------------------------------------------------------------- config reading
def _with_text(*types: str) -> set:
    # A VLM's text decoder is its own model_type with "_text" appended (transformers 5).
    return {t for m in types for t in (m, m + "_text")}


# Text decoders that pair dims (2i, 2i+1) (GPT-J's rotate_every_two, GLM's and Cohere's
# interleaved rotate_half, a repeat_interleave'd cos/sin) instead of (i, i+P). Each one was
# read in its modeling file and is checked by tools/hf_coverage.py.
INTERLEAVED_TEXT = frozenset({
    "gptj", "codegen", "cohere", "cohere2", "cohere2_moe", "ernie4_5", "ernie4_5_moe", "glm", "glm4", "helium",
    "moonshine_streaming", "openai_privacy_filter", "pe_audio_encoder", "pe_audio_video_encoder", "pe_video_encoder",
    "llama4", "llama4_text", "deepseek_v2", "moonshine",
    # BLT: cos/sin repeat_interleave'd, and its own rotate_half pairs (2i, 2i+1)
    "blt", "blt_patcher", "blt_local_encoder", "blt_local_decoder", "blt_global_transformer",
} | _with_text("glm_ocr", "glm4v", "ernie4_5_vl_moe"))  # not glm4v_moe (GLM-4.5V): its apply function is rotate_half
# Multi-head latent attention decoders whose attention always calls
# apply_rotary_pos_emb_interleave (no rope_interleave flag): layout "interleaved_to_half".
DEINTERLEAVING_MLA = frozenset(_with_text("longcat_flash", "glm_moe_dsa", "mistral_large4", "bailing_hybrid", "dots3_note"))
# M-RoPE decoders whose sections interleave t, h, w round robin (Qwen3-VL).
INTERLEAVED_MROPE = frozenset(_with_text("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "qwen4_exp", "cosmos3_edge",
                                         "qwen3_omni_moe", "cohere_compass") | {"qwen3_omni_moe_talker_text"})
# M-RoPE decoders whose h and w streams alternate pair by pair, t last (ERNIE 4.5-VL: it
# pre-permutes its frequencies so the alternation keeps them in order; axes.alternating_axes).
ALTERNATING_MROPE = frozenset(_with_text("ernie4_5_vl_moe"))
# Decoders whose every token carries (row, column) positions, the pairs alternating row,
# column (NeoMME; its config has a patch_size, yet it is the decoder).
ALTERNATING_2D_TEXT = frozenset({"neomme"})
# The reference code's mrope_section when the config names none.
DEFAULT_MROPE_SECTION = {
    **{t: [16, 24, 24] for t in _with_text("qwen2_vl", "qwen2_5_vl", "paddleocr_vl", "qwen2_5_omni") | {"qwen2_5_omni_talker"}},
    **{t: [24, 20, 20] for t in _with_text("qwen3_vl", "qwen3_vl_moe", "cosmos3_edge", "qwen3_omni_moe", "cohere_compass")
       | {"qwen3_omni_moe_talker_text"}},
    **{t: [11, 11, 10] for t in _with_text("qwen3_5", "qwen3_5_moe", "qwen4_exp")},
    **{t: [8, 12, 12] for t in _with_text("glm_ocr", "glm4v", "glm4v_moe", "glm_image")},
    **{t: [22, 22, 20] for t in _with_text("ernie4_5_vl_moe")},
}
# Model types that name the standard keys their own way (transformers' attribute_map):
# {their key: the standard key}.
KEY_NAMES = {
    "dbrx": {"n_heads": "num_attention_heads", "d_model": "hidden_size", "max_seq_len": "max_position_embeddings"},
    # Moonshine's encoder and decoder share one rotary built from the decoder's head count.
    "moonshine": {"decoder_num_attention_heads": "num_attention_heads"},
}
# Text decoders whose attention head is not hidden_size / num_attention_heads: the config key
# that gives it (the rotary dims are a share of it).
HEAD_DIM_KEY = {"jetmoe": "kv_channels", "zamba2": "attention_head_dim"}
# Decoders whose rotary exists only when a config flag is true: {model_type: flag} (refused, as
# having no rotary, when it is false or missing, as in transformers' own default).
ROTARY_FLAG = {"zamba2": "use_mem_rope"}
# Text decoders whose rotary no spec can describe, and why (from_hf_config refuses them).
REFUSED_TEXT = {
    "nanochat": "its rotate_half returns (x2, -x1): it rotates by minus the angle",
    # transformers 5.23: the config documents rotary_dim (64) as the rotated dims; the rotary
    # ignores it and rotates head_dim * partial_rotary_factor (all 128).
    **{t: "its config's rotary_dim and its rotary disagree (transformers 5.23 rotates head_dim * "
          "partial_rotary_factor, ignoring rotary_dim)" for t in _with_text("minimax_m3_vl")},
    "deepseek_v4": "it rotates the trailing rope dims of each [nope | rope] head (and the attention output by "
                   "minus the position); rope_export rotates the leading rotary_dim dims",
    # HunYuan-VL's XD-RoPE cuts the doubled table cat(freq, freq) into sections: with
    # mrope_section [16, 16, 16, 16] dims 0-31 follow stream 0 and their partners 64-95 stream 2.
    **{t: "its M-RoPE splits the doubled cos/sin table cat(freq, freq) into sections, so the two dims of a "
          "rotated pair follow different position streams: not a rotation" for t in _with_text("hunyuan_vl")},
    "esmfold2.atom_encoder": "it rotates by atoms' 3D coordinates and space ids (float positions), not token indices",
    "efficientloftr": "its rotary is a fixed 2D grid of the feature map (forward(x), no positions), its width "
                      "hidden_size * partial_rotary_factor (4.0) spread over the head",
    "musicflamingo": "it scales its window and time angles by each window's absolute timestamp (float seconds), "
                     "not token indices",
}
# Decoders whose one rotary is applied two ways: one spec per use, chosen with layer_type=.
# DeepSeek V3.2 / AXK2: the MLA attention de-interleaves its q_pe / k_pe (apply_rotary_pos_emb_interleave);
# the sparse-attention indexer rotates the first qk_rope_head_dim dims of its index_head_dim heads
# in half pairs (apply_rotary_pos_emb). use -> (apply function, layout, config key of the head width).
_MLA_AND_INDEXER = {"attention": ("apply_rotary_pos_emb_interleave", "interleaved_to_half", "qk_rope_head_dim"),
                    "indexer": ("apply_rotary_pos_emb", "half", "index_head_dim")}
ROTARY_USES = {"deepseek_v32": _MLA_AND_INDEXER, "axk2": _MLA_AND_INDEXER}
# Vision encoders whose rotary no spec can describe, and why (from_hf_config refuses them).
REFUSED_VISION = {
    "gemma4_vision": "it rotates each axis's half of the head with rotate_half inside that half (pairs i, i + D/4); "
                     "RotaryEmbedding pairs i with i + D/2 or 2i with 2i + 1",
    "eomt_dinov3": "its angles come from patch-centre coordinates normalised to [-1, 1] (float positions that depend "
                   "on the image size), not patch indices",
    "sam3_vit_model": "its global-attention layers rotate at patch indices scaled by window_size / grid (fractional), "
                      "its windowed layers at integer ones",
}
# Vision encoder model_type (its own, or its VLM's) -> how its 2D rotary is laid out.
VISION_FAMILIES = {
    "pixtral": "pixtral", "llava": "pixtral", "mistral3": "pixtral",
    "llama4_vision_model": "llama4", "llama4": "llama4",
    "qwen2_vl": "qwen_vl", "qwen2_5_vl": "qwen_vl", "qwen3_vl": "qwen_vl", "qwen3_vl_moe": "qwen_vl",
    "qwen2_vl_vision": "qwen_vl", "qwen2_5_vl_vision": "qwen_vl", "qwen3_vl_vision": "qwen_vl",
    "qwen3_vl_moe_vision": "qwen_vl",
    **{t: "qwen_vl" for m in ("qwen3_5", "qwen3_5_moe", "qwen4_exp", "glm4v", "glm4v_moe", "glm_ocr", "paddleocr_vl",
                              "cohere_compass", "ernie4_5_vl_moe", "exaone4_5", "glm5_next", "lfm3_vl", "muse_glimmer",
                              "muse_spark", "video_llama_3")
       for t in (m, m + "_vision")},
    **{t: "qwen_vl" for t in ("dots3_note_vision_encoder", "qwen2_5_omni_vision_encoder", "qwen3_omni_moe_vision_encoder")},
    "inkling2_vision": "llama4",
    **{t: "step3" for t in ("step3p5_vision", "step3p7")},
    **{t: "kimi" for t in ("kimi_k25", "kimi_k25_vision")},
    "mlcd_vision_model": "qwen_vl",
    **{t: "thw" for t in ("minimax_m3_vl", "minimax_m3_vl_vision")},
    # SAM 2 video's memory attention (part="memory_attention"; the root config holds its fields).
    **{t: "sam_memory" for t in ("sam2_video", "edgetam_video", "sam3_tracker_video")},
}

# Rotary classes whose position_ids are (x, y) = (column, row) per token (SAM 2 / SAM 3); ours
# are (row, column): the probe feeds them flipped.
XY_POSITIONS = frozenset({"Sam2VideoVisionRotaryEmbedding", "EdgeTamVideoVisionRotaryEmbedding",
                          "Sam3TrackerVideoVisionRotaryEmbedding", "Sam3ViTRotaryEmbedding"})

# ------------------------------------------------------------------------- patch
# Vision rotary classes -> (input kind, module-level apply functions of its modeling file). Kinds:
# "vision_hw" ([N, 2] rows/columns per patch), "llama4_vision" (no positions: the fixed patch
# grid plus a class token). Text rotaries need no entry: any whose config reads as a verified
# spec and whose apply_rotary_pos_emb rotates as ours does is patched (rope_export.hf.patch).
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

# Text decoders whose rotary `from_hf_config` reads exactly, checked against transformers 5.23's
# own rotary class and apply function on each one's default config (`python tools/hf_coverage.py
# --emit-verified` lists them; tests/test_hf_coverage.py holds this set to it in CI), plus GPT-J,
# which has no rotary class and is checked by tests/test_hf_parity.py. A flat VLM config (the
# text fields at top level, model_type "qwen2_vl") counts as its "<type>_text" decoder. Every
# other model_type is refused (docs/coverage.md).
VERIFIED_TEXT = frozenset({
    "afmoe", "apertus", "arcee", "aria_text", "axk1", "axk2", "bailing_hybrid", "bamba", "beam", "bitnet",
    "blt_global_transformer", "blt_local_decoder", "blt_local_encoder", "blt_patcher", "chameleon", "cohere",
    "cohere2", "cohere2_moe", "cohere_compass_text", "cosmos3_edge_text", "csm", "csm_depth_decoder_model",
    "cwm", "dbrx", "deepseek_ocr2_encoder", "deepseek_ocr2_text", "deepseek_v2", "deepseek_v3", "deepseek_v32",
    "dia_decoder", "dia_encoder", "diffllama", "diffusion_gemma_text", "doge", "dots1",
    "dots3_note_audio_encoder", "dots3_note_text", "embedding_gemma2_text", "emu3_text_model", "ernie4_5",
    "ernie4_5_moe", "ernie4_5_vl_moe_text", "esm", "esmc", "eurobert", "evolla",
    "evolla.protein_encoder_config", "exaone4", "exaone_moe", "falcon", "falcon_h1", "flex_olmo", "flint",
    "gemma", "gemma2", "gemma3_text", "gemma3n_text", "gemma4_text", "gemma4_unified_text", "glm", "glm4",
    "glm4_moe", "glm4_moe_lite", "glm4v_moe_text", "glm4v_text", "glm_image_text", "glm_moe_dsa",
    "glm_ocr_text", "glmasr_encoder", "gpt_neox", "gpt_neox_japanese", "gpt_oss", "gptj", "gradium_phonon_tts",
    "granite", "granite4_vision_text", "granite_docling_text", "granite_swa", "granitemoe", "granitemoe_swa",
    "granitemoehybrid", "granitemoeshared", "gte", "helium", "higgs_audio_v2", "hrm_text", "hunyuan_v1_dense",
    "hunyuan_v1_moe", "hy_v3", "hy_v4", "hyperclovax", "idefics", "jais2", "jetmoe", "jina_embeddings_v3",
    "kolibri1", "kyutai_speech_to_text", "laguna", "lasr_encoder", "lfm2", "lfm2_moe", "lfm3", "llama",
    "llama4_text", "longcat_flash", "mellum", "mimi", "mimi_decoder", "mimi_encoder", "mimo_v2_flash",
    "minicpm3", "minimax", "minimax_m2", "ministral", "ministral3", "mistral", "mistral4",
    "mistral_large4_text", "mixtral", "mllama_text_model", "modernbert", "modernbert-decoder", "molmo2_text",
    "moonshine", "moonshine_streaming", "moshi", "muse_glimmer_assistant", "muse_glimmer_text",
    "muse_spark_text", "nemotron", "nemotron3_5_transcribe_asr_audio", "nemotron3_5_transcribe_word_timestamp",
    "nemotron3_diarization_audio", "neomme", "neucodec", "nomic_bert", "olmo", "olmo2", "olmo3", "olmo_hybrid",
    "olmoe", "openai_privacy_filter", "paddleocr_vl_text", "pe_audio_encoder", "pe_audio_video_encoder",
    "pe_video_encoder", "persimmon", "phi", "phi3", "phi4_multimodal", "phimoe", "pocket_tts",
    "pocket_tts_audio_tokenizer", "pocket_tts_audio_tokenizer_decoder", "pocket_tts_audio_tokenizer_encoder",
    "qwen2", "qwen2_5_omni_dit", "qwen2_5_omni_talker", "qwen2_5_omni_text", "qwen2_5_vl_text", "qwen2_moe",
    "qwen2_vl_text", "qwen3", "qwen3_5_moe_text", "qwen3_5_text", "qwen3_moe", "qwen3_next",
    "qwen3_omni_moe.code2wav_config", "qwen3_omni_moe_talker_code_predictor", "qwen3_omni_moe_talker_text",
    "qwen3_omni_moe_text", "qwen3_vl_moe_text", "qwen3_vl_text", "qwen4_exp_text", "recurrent_gemma",
    "seed_oss", "smollm3", "solar_open", "stablelm", "starcoder2", "step3p5", "t5_gemma_module",
    "t5gemma2_decoder", "t5gemma2_text", "timesfm2_5", "ultrabert", "unlimited_ocr_text", "vaultgemma",
    "voxtral_realtime_encoder", "voxtral_realtime_text", "xcodec2", "youtu", "zamba2", "zaya",
})
