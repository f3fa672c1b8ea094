"""What rope_export knows of each transformers model family, one record per family.

Each fact was read in the family's modeling or configuration file and is held to that code by
`rope_export.hf.coverage` (tools/hf_coverage.py) on the releases `proven.py` lists. A record's
key is a ``model_type``; its facts also cover the family's nested parts, ``"<type>_text"``
(a VLM's decoder) and ``"<type>_vision"`` (its vision encoder), as transformers 5 names them.

Plain data, no imports beyond the standard library.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Family", "FAMILIES", "CHECKED_BY_TESTS"]


@dataclasses.dataclass(frozen=True)
class Family:
    """One family's facts; every field defaults to "like Llama".

    Attributes:
        pairing: which dims a text rotary pairs: "half" (i, i + P: rotate_half),
            "interleaved" (2i, 2i + 1: rotate_every_two, a repeat_interleave'd cos/sin) or
            "interleaved_to_half" (interleaved pairs written de-interleaved: an MLA attention
            that always calls apply_rotary_pos_emb_interleave).
        mrope: how M-RoPE sections split the pairs: "" (none, or contiguous sections),
            "interleaved" (t, h, w round robin: Qwen3-VL), "alternating" (h and w pair by pair,
            t last: ERNIE 4.5-VL), "2d" (every token (row, column), alternating: NeoMME).
        section: the reference code's mrope_section when the config names none.
        vision: the 2D layout of its vision encoder (`hf_config` reads it): "qwen_vl",
            "pixtral", "llama4", "step3", "kimi", "thw" or "sam_memory".
        refused / refused_vision: why no spec can describe its decoder's / encoder's rotary.
        key_names: {its key: the standard key} (transformers' attribute_map).
        head_dim_key: the config key of its attention head width, where that is not
            hidden_size / num_attention_heads.
        rotary_flag: the config flag without which it has no rotary.
        uses: one rotary applied two ways, {use: (apply function, layout, head width key)}.
        top_level_rope: files of older releases keep the decoder's rope fields at the top level.
        nested_theta: the nested object its own files keep rope_theta in (DBRX: attn_config).
        legacy_labels: {rope_type label in its files: what its reference code runs}.
        config_fix: fields its published checkpoints set that its default config lacks, so
            the coverage probe builds a config its own code runs (the family's decoder config,
            "<type>" and "<type>_text").
        rope_labels: the keys its per-layer rope_parameters uses where they are not its layer
            types (transformers' ``_rope_type_labels``).
        since: the first release whose code follows these facts; the code of older releases
            rotates otherwise (a bug fixed there), `since_note` says how.
        source: where a fact not in transformers' code comes from (a checkpoint's config.json).
    """

    pairing: str = "half"
    mrope: str = ""
    section: tuple[int, ...] = ()
    vision: str = ""
    refused: str = ""
    refused_vision: str = ""
    key_names: dict = dataclasses.field(default_factory=dict)
    head_dim_key: str = ""
    rotary_flag: str = ""
    uses: dict = dataclasses.field(default_factory=dict)
    top_level_rope: bool = False
    nested_theta: str = ""
    legacy_labels: dict = dataclasses.field(default_factory=dict)
    config_fix: dict = dataclasses.field(default_factory=dict)
    rope_labels: tuple[str, ...] = ()
    since: str = ""
    since_note: str = ""
    source: str = ""


_I = "interleaved"
_DEINTERLEAVE = "interleaved_to_half"
# DeepSeek V3.2 / AXK2: the MLA attention de-interleaves its q_pe / k_pe (apply_rotary_pos_emb_interleave);
# the sparse-attention indexer rotates the first qk_rope_head_dim dims of its index_head_dim heads
# in half pairs (apply_rotary_pos_emb). use -> (apply function, layout, config key of the head width).
_MLA_AND_INDEXER = {"attention": ("apply_rotary_pos_emb_interleave", _DEINTERLEAVE, "qk_rope_head_dim"),
                    "indexer": ("apply_rotary_pos_emb", "half", "index_head_dim")}
# GLM-4.1V / 4.5V checkpoints: partial_rotary_factor 0.5 with mrope_section [8, 12, 12]
# (zai-org/GLM-4.1V-9B-Thinking and zai-org/GLM-4.5V config.json).
_GLM_PARTIAL = {"rope_parameters": {"partial_rotary_factor": 0.5}}
_HY_V4_SINCE = ("transformers 5.23 and 5.24 rotate (i, i + P) pairs with rotate_half; 5.25 rotates DeepSeek's "
                "interleaved pairs and writes them de-interleaved (apply_rotary_pos_emb_interleave), the layout its "
                "MLA weights were trained with")

FAMILIES: dict[str, Family] = {
    # ------------------------------------------------------------- interleaved pairs
    **{t: Family(pairing=_I) for t in (
        "gptj", "codegen", "cohere", "cohere2", "cohere2_moe", "ernie4_5", "ernie4_5_moe", "glm", "glm4", "helium",
        "moonshine_streaming", "openai_privacy_filter", "pe_audio_encoder", "pe_audio_video_encoder",
        "pe_video_encoder", "llama4", "deepseek_v2",
        # BLT: cos/sin repeat_interleave'd, and its own rotate_half pairs (2i, 2i+1)
        "blt", "blt_patcher", "blt_local_encoder", "blt_local_decoder", "blt_global_transformer")},
    # Moonshine's encoder and decoder share one rotary built from the decoder's head count.
    "moonshine": Family(pairing=_I, key_names={"decoder_num_attention_heads": "num_attention_heads"}),
    "glm_ocr": Family(pairing=_I, section=(8, 12, 12), vision="qwen_vl"),
    "glm4v": Family(pairing=_I, section=(8, 12, 12), vision="qwen_vl", config_fix=_GLM_PARTIAL),
    # not glm4v_moe (GLM-4.5V): its apply function is rotate_half; published head_dim 128 (the
    # default 4096 / 96 heads gives 42)
    "glm4v_moe": Family(section=(8, 12, 12), vision="qwen_vl", config_fix={**_GLM_PARTIAL, "head_dim": 128}),
    "glm_image": Family(section=(8, 12, 12), config_fix=_GLM_PARTIAL),
    "ernie4_5_vl_moe": Family(pairing=_I, mrope="alternating", section=(22, 22, 20), vision="qwen_vl"),
    # ------------------------------------------- MLA: interleaved pairs, written de-interleaved
    **{t: Family(pairing=_DEINTERLEAVE) for t in ("longcat_flash", "glm_moe_dsa", "mistral_large4", "bailing_hybrid")},
    "dots3_note": Family(pairing=_DEINTERLEAVE),
    "dots3_note_vision_encoder": Family(vision="qwen_vl"),
    "hy_v4": Family(pairing=_DEINTERLEAVE, since="5.25.0", since_note=_HY_V4_SINCE),
    "hy_v4_vl": Family(pairing=_DEINTERLEAVE, mrope="interleaved", section=(24, 20, 20), since="5.25.0",
                       since_note=_HY_V4_SINCE),
    "deepseek_v32": Family(uses=_MLA_AND_INDEXER),
    "axk2": Family(uses=_MLA_AND_INDEXER),
    # ------------------------------------------------------------------------ M-RoPE
    # Older files (transformers 4) are flat: their configuration files build text_config from
    # the top level when it is absent.
    **{t: Family(section=(16, 24, 24), vision="qwen_vl", top_level_rope=True) for t in ("qwen2_vl", "qwen2_5_vl", "paddleocr_vl")},
    "fuyu": Family(top_level_rope=True),
    "qwen2_5_omni": Family(section=(16, 24, 24)),
    "qwen2_5_omni_talker": Family(section=(16, 24, 24)),
    "qwen2_5_omni_vision_encoder": Family(vision="qwen_vl"),
    **{t: Family(mrope="interleaved", section=(24, 20, 20), vision="qwen_vl") for t in ("qwen3_vl", "qwen3_vl_moe", "cohere_compass")},
    "cosmos3_edge": Family(mrope="interleaved", section=(24, 20, 20)),
    "qwen3_omni_moe": Family(mrope="interleaved", section=(24, 20, 20)),
    # Qwen3-Omni-30B-A3B's thinker text: 32 query heads, 4 KV heads, head_dim 128 (the default
    # 2048 / 28 gives 73).
    "qwen3_omni_moe_text": Family(mrope="interleaved", section=(24, 20, 20),
                                  config_fix={"num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128},
                                  source="Qwen/Qwen3-Omni-30B-A3B-Instruct config.json"),
    "qwen3_omni_moe_talker_text": Family(mrope="interleaved", section=(24, 20, 20)),
    "qwen3_omni_moe_vision_encoder": Family(vision="qwen_vl"),
    **{t: Family(mrope="interleaved", section=(11, 11, 10), vision="qwen_vl") for t in ("qwen3_5", "qwen3_5_moe", "qwen4_exp")},
    # NeoMME: its config has a patch_size, yet it is the decoder: every token carries (row, column).
    "neomme": Family(mrope="2d"),
    # -------------------------------------------------------------- config key names
    "dbrx": Family(key_names={"n_heads": "num_attention_heads", "d_model": "hidden_size", "max_seq_len": "max_position_embeddings"},
                   nested_theta="attn_config"),
    "jetmoe": Family(head_dim_key="kv_channels"),
    # its rotary exists only with use_mem_rope (transformers' default: false)
    "zamba2": Family(head_dim_key="attention_head_dim", rotary_flag="use_mem_rope", config_fix={"use_mem_rope": True}),
    # Phi-3's reference code reads its legacy "yarn" label as LongRoPE.
    "phi3": Family(legacy_labels={"yarn": "longrope"}),
    # ---------------------------------------------------------------------- refused
    "nanochat": Family(refused="its rotate_half returns (x2, -x1): it rotates by minus the angle"),
    # The config documents rotary_dim (64) as the rotated dims; the rotary ignores it and rotates
    # head_dim * partial_rotary_factor (all 128).
    "minimax_m3_vl": Family(vision="thw", refused="its config's rotary_dim and its rotary disagree (its rotary rotates "
                                                  "head_dim * partial_rotary_factor, ignoring rotary_dim)"),
    "deepseek_v4": Family(rope_labels=("main", "compress"), refused="it rotates the trailing rope dims of each [nope | rope] head (and the attention output "
                                  "by minus the position); rope_export rotates the leading rotary_dim dims"),
    # XD-RoPE cuts the doubled table cat(freq, freq) into sections: with mrope_section
    # [16, 16, 16, 16] dims 0-31 follow stream 0 and their partners 64-95 stream 2.
    "hunyuan_vl": Family(refused="its M-RoPE splits the doubled cos/sin table cat(freq, freq) into sections, so the two "
                                 "dims of a rotated pair follow different position streams: not a rotation",
                         config_fix={"rope_parameters": {"mrope_section": [16, 16, 16, 16]}},
                         source="tencent/HunyuanOCR config.json: xdrope_section [16, 16, 16, 16]"),
    "esmfold2.atom_encoder": Family(refused="it rotates by atoms' 3D coordinates and space ids (float positions), not "
                                            "token indices"),
    "efficientloftr": Family(refused="its rotary is a fixed 2D grid of the feature map (forward(x), no positions), its "
                                     "width hidden_size * partial_rotary_factor (4.0) spread over the head"),
    # "float32 angles lose their phase at the positions a long context reaches" (its modeling file).
    "ergo": Family(refused="its rotary computes its angles in float64; rope_export, like the ONNX RotaryEmbedding op's "
                           "cos/sin inputs, rotates by float32 angles (measured: 0.033 apart at position 262149)"),
    # part="root": its own rotary, beside the Qwen2 decoder of its text_config
    "musicflamingo": Family(refused="it scales its window and time angles by each window's absolute timestamp (float "
                                    "seconds), not token indices"),
    "gemma4_vision": Family(refused_vision="it rotates each axis's half of the head with rotate_half inside that half "
                                           "(pairs i, i + D/4); RotaryEmbedding pairs i with i + D/2 or 2i with 2i + 1"),
    "eomt_dinov3": Family(refused_vision="its angles come from patch-centre coordinates normalised to [-1, 1] (float "
                                         "positions that depend on the image size), not patch indices"),
    "sam3_vit_model": Family(refused_vision="its global-attention layers rotate at patch indices scaled by window_size / "
                                            "grid (fractional), its windowed layers at integer ones"),
    # Cohere Compass's default text rope_parameters is {}: one entry for its full-attention layers
    # (a per-layer-type rotary), sections from its code.
    "cohere_compass_text": Family(mrope="interleaved", section=(24, 20, 20),
                                  config_fix={"rope_parameters": {"full_attention": {"rope_type": "default",
                                                                                     "rope_theta": 10000.0}}}),
    # ------------------------------------------------------------ vision encoders only
    **{t: Family(vision="pixtral") for t in ("pixtral", "llava", "mistral3")},
    "llama4_vision_model": Family(vision="llama4"),
    "inkling2_vision": Family(vision="llama4"),
    **{t: Family(vision="qwen_vl") for t in ("exaone4_5", "glm5_next", "lfm3_vl", "muse_glimmer", "muse_spark",
                                             "video_llama_3", "llava_onevision1_5", "ovis2_5", "mlcd_vision_model")},
    **{t: Family(vision="step3") for t in ("step3p5_vision", "step3p7")},
    "kimi_k25": Family(vision="kimi"),
    "lfm3": Family(rope_labels=("full_attention", "sliding_attention")),
    # SAM 2 video's memory attention (part="memory_attention"; the root config holds its fields).
    **{t: Family(vision="sam_memory") for t in ("sam2_video", "edgetam_video", "sam3_tracker_video")},
}
# Merged records: a family listed in two groups above keeps both groups' facts.
FAMILIES["llama4"] = dataclasses.replace(FAMILIES["llama4"], vision="llama4")

# Model types with no rotary class in some releases, checked by tests of their own there
# (GPT-J and CodeGen before transformers 5.25: a sinusoid table per attention).
CHECKED_BY_TESTS = {"gptj": "tests/hf/test_tables.py", "codegen": "tests/hf/test_tables.py"}
