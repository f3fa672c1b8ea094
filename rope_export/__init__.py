"""rope_export: rotary position embeddings, exported right.

    import rope_export as rx
    spec = rx.load_preset("qwen2-vl-7b")           # or rx.RopeSpec.from_hf_config("config.json")
    rope = rx.RotaryEmbedding(spec)                # torch.nn.Module, explicit sin/cos
    q_rot, k_rot = rope(q, k, position_ids)        # q [B,Hq,S,D], k [B,Hk,S,D], positions [A,B,S]

Names load on first use, so ``rope-export --help`` does not import torch.
"""

import importlib

from ._version import __version__

# public name -> the module that defines it
_WHERE = {
    "RopeSpec": ".spec", "DynamicNTK": ".spec", "LongRopeSwitch": ".spec",
    "RotaryEmbedding": ".modules", "apply_rotary": ".modules",
    "export_onnx": ".export",
    "validate": ".validate", "ValidationReport": ".validate",
    "list_presets": ".presets", "load_preset": ".presets", "preset_info": ".presets",
    "hf": ".hf",
}

__all__ = [*_WHERE, "__version__"]


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'rope_export' has no attribute {name!r}")
    module = importlib.import_module(_WHERE[name], __name__)
    value = module if name == "hf" else getattr(module, name)
    globals()[name] = value  # the function, not the subpackage of the same name (validate)
    return value


def __dir__():
    return sorted(__all__)
