"""TensorRT glue: the fused ``MultiAxisRotary`` plugin and an engine builder.

Everything here imports ``tensorrt`` lazily. Written against TensorRT 10's documented Python
API (``tensorrt.plugin`` quick deployable plugins, TensorRT >= 10.7); not run on our machines,
which have no TensorRT builder (PyPI serves only the bindings and lean runtime as real wheels).
"""

from __future__ import annotations

INSTALL_HINT = 'pip install "rope-export[gpu]" (TensorRT >= 10.7 with its builder libraries, on a CUDA machine)'

# The plugin's inputs and attribute fields, in the order TensorRT passes them; the parser
# consumes plugin_namespace, plugin_version and aot itself. export.plugin_form writes all of them.
PLUGIN_INPUTS = ("x", "position_ids", "inv_freq", "axis_of_pair")
PLUGIN_FIELDS = ("rotary_dim", "interleaved", "num_heads", "head_dim", "attention_scaling")
PARSER_FIELDS = ("plugin_namespace", "plugin_version", "aot")


def require_tensorrt():
    """The ``tensorrt`` module, or RuntimeError saying what is missing and how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(f"TensorRT is not importable ({exc}); install it with: {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        raise RuntimeError(f"this tensorrt package has no builder (lean runtime only); install it with: {INSTALL_HINT}")
    return trt


def tensorrt_unavailable() -> str | None:
    """None when TensorRT can build engines here, else the reason."""
    try:
        trt = require_tensorrt()
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot build here"
        return str(exc)
    return None
