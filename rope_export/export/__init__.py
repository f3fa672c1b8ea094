"""ONNX export of a `RopeSpec` (`graph`), its forms (`forms`), the custom ops behind them
(`ops`), the plugin form (`plugin_form`) and the file's own description (`metadata`)."""

import importlib

from .forms import FORMS, FUSED_OPSET, MIN_OPSET, form_refusal, forms_for, resolve_form
from .metadata import SPEC_KEY, GraphInfo, read_graph, set_metadata

_GRAPH = ("export_onnx", "build_onnx", "example_inputs", "ExportModule")  # import torch: loaded on first use

__all__ = ["export_onnx", "build_onnx", "example_inputs", "ExportModule", "FORMS", "MIN_OPSET", "FUSED_OPSET",
           "resolve_form", "form_refusal", "forms_for", "SPEC_KEY", "GraphInfo", "read_graph", "set_metadata"]


def __getattr__(name):
    if name not in _GRAPH:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".graph", __name__), name)
    globals()[name] = value
    return value
