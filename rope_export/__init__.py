"""rope_export: rotary position embeddings, exported right.

    import rope_export as rx
    spec = rx.load_preset("qwen2-vl-7b")           # or rx.RopeSpec.from_hf_config("config.json")
    rope = rx.RotaryEmbedding(spec)                # torch.nn.Module, explicit sin/cos
    q_rot, k_rot = rope(q, k, position_ids)        # q [B,Hq,S,D], k [B,Hk,S,D], positions [A,B,S]
"""

from . import hf
from ._version import __version__
from .export import export_onnx
from .modules import RotaryEmbedding, apply_rotary
from .presets import list_presets, load_preset, preset_info
from .spec import DynamicNTK, LongRopeSwitch, RopeSpec
from .validate import ValidationReport, validate

__all__ = [
    "RopeSpec",
    "DynamicNTK",
    "LongRopeSwitch",
    "RotaryEmbedding",
    "apply_rotary",
    "export_onnx",
    "validate",
    "ValidationReport",
    "list_presets",
    "load_preset",
    "preset_info",
    "hf",
    "__version__",
]
