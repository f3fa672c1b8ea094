"""Hugging Face transformers models with rope_export's rotary: `patch` (drop-in rotary for a
model, `rotary` the modules and functions it swaps in) and `export` (export-hf: a small random
model of a config, patched, exported and checked)."""

from ..architectures import ROTARY_CLASSES as SUPPORTED_ROTARY_CLASSES
from .patch import Patch, patch, unpatch
from .rotary import HFRotary

__all__ = ["HFRotary", "Patch", "patch", "unpatch", "SUPPORTED_ROTARY_CLASSES"]
