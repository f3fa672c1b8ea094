"""TensorRT: parse and build exported graphs (`engine`), the pipeline gate (`check`), and the
fused ``MultiAxisRotary`` plugin (`plugin`, `kernel`).

Either TensorRT family works: ``tensorrt`` (TensorRT >= 10.9 with its builder libraries, on a
CUDA machine) or ``tensorrt_rtx`` (TensorRT-RTX, ``pip install "rope-export[trt]"``), whose
ahead-of-time builder parses ONNX with the same onnx-tensorrt parser and builds engines without
a GPU for a named compute capability. Everything here imports them lazily.
"""

from __future__ import annotations

INSTALL_HINT = ('pip install "rope-export[trt]" (TensorRT-RTX: parses and builds without a GPU), or TensorRT >= 10.9 '
                'with its builder libraries on a CUDA machine')

# The plugin's inputs and attribute fields, in the order TensorRT passes them; the parser
# consumes plugin_namespace, plugin_version and aot itself. export.plugin_form writes all of them.
PLUGIN_INPUTS = ("x", "position_ids", "inv_freq", "axis_of_pair")
PLUGIN_FIELDS = ("rotary_dim", "interleaved", "num_heads", "head_dim", "attention_scaling")
PARSER_FIELDS = ("plugin_namespace", "plugin_version", "aot")


def require_tensorrt():
    """The TensorRT module to build with: ``tensorrt`` when it has a builder, else
    ``tensorrt_rtx``; RuntimeError saying what to install otherwise."""
    reasons = []
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            module = __import__(name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        if hasattr(module, "Builder"):
            return module
        reasons.append(f"{name}: no builder (lean runtime only)")
    raise RuntimeError(f"no TensorRT builder is importable ({'; '.join(reasons)}); install: {INSTALL_HINT}")


def flavor(trt) -> str:
    """"TensorRT 10.x" or "TensorRT-RTX 1.x": which family built or ran."""
    return f"{'TensorRT-RTX' if trt.__name__.startswith('tensorrt_rtx') else 'TensorRT'} {trt.__version__}"


def tensorrt_unavailable() -> str | None:
    """None when TensorRT can build engines here, else the reason."""
    try:
        trt = require_tensorrt()
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot build here"
        return str(exc)
    return None
