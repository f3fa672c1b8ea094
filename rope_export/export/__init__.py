"""ONNX export of a `RopeSpec` (`graph`), its forms (`forms`), the custom ops behind them
(`ops`), the plugin form (`plugin_form`) and the file's own description (`metadata`)."""

from .forms import FORMS, FUSED_OPSET, MIN_OPSET, form_refusal, forms_for, resolve_form
from .graph import ExportModule, build_onnx, example_inputs, export_onnx
from .metadata import SPEC_KEY, GraphInfo, read_graph, set_metadata

__all__ = ["export_onnx", "build_onnx", "example_inputs", "ExportModule", "FORMS", "MIN_OPSET", "FUSED_OPSET",
           "resolve_form", "form_refusal", "forms_for", "SPEC_KEY", "GraphInfo", "read_graph", "set_metadata"]
