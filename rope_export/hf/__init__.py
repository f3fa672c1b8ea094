"""Hugging Face transformers models with rope_export's rotary: `patch` (drop-in rotary for a
model, `rotary` the modules and functions it swaps in), `export` (export-hf: a small random
model of a config, patched, exported and checked) and `coverage` (every transformers rotary
architecture held against `RopeSpec.from_hf_config`)."""

from .patch import Patch, patch, rotary_kind, unpatch
from .rotary import HFRotary, LayeredRotary

__all__ = ["HFRotary", "LayeredRotary", "Patch", "patch", "unpatch", "rotary_kind"]
