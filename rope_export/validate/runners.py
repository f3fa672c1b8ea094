"""Runners, one per backend, behind one protocol (after Polygraphy's ``BaseRunner``): the torch
module (the parity target), the float64 reference, onnxruntime pinned to one execution
provider, and a TensorRT engine.

A runner that cannot run here says why in ``unavailable`` (never raises for that), and
``ran_on`` reports what actually ran, read back from the runtime, never what was asked.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Protocol

import numpy as np
import torch

from .._util import DEFAULT_PROVIDERS, InputError
from ..modules import RotaryEmbedding
from ..reference import rotate
from ..spec import RopeSpec
from .cases import Case

__all__ = ["Runner", "TorchRunner", "ReferenceRunner", "OnnxRuntimeRunner", "OpenVinoRunner", "TensorRTEngineRunner",
           "PROVIDERS", "OPENVINO", "DEFAULT_PROVIDERS", "numpy_dtype", "openvino_device"]

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
# OpenVINO's own runtime (not onnxruntime's OpenVINO provider, which stays reachable by its full
# name OpenVINOExecutionProvider): "openvino" is its CPU device, "openvino:GPU" / "openvino:NPU"
# the devices it reports.
OPENVINO = "openvino"


class Runner(Protocol):
    """One backend. ``run(case)`` returns ``(q_rot, k_rot)`` as numpy arrays in the backend's own
    dtype (the reference runners: float32 / float64)."""

    name: str  # the report's row label
    ran_on: str | None  # what actually ran, as the backend reports it
    unavailable: str  # why it cannot run here ("" when it can)

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]: ...


class TorchRunner:
    """The parity target: `RotaryEmbedding` on CPU, in the graph's activation dtype."""

    name, ran_on, unavailable = "torch", f"torch {torch.__version__} CPU", ""

    def __init__(self, spec: RopeSpec):
        self.module = RotaryEmbedding(spec)

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            q, k = self.module(case.q, case.k, case.position_ids)
        return q.float().numpy(), k.float().numpy()


class ReferenceRunner:
    """Exact maths in float64 (`rope_export.reference`)."""

    name, ran_on, unavailable = "float64", "float64 reference", ""

    def __init__(self, spec: RopeSpec):
        self.spec = spec

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        return rotate(case.q, case.position_ids, self.spec).numpy(), rotate(case.k, case.position_ids, self.spec).numpy()


class OnnxRuntimeRunner:
    """One onnxruntime session pinned to one execution provider.

    Args:
        model: a file path or the serialized model bytes.
        provider: "cpu", "cuda", ... (`PROVIDERS`) or a full onnxruntime provider name.
        timeout: seconds one `run` may take; past it onnxruntime is told to stop and the run
            raises `TimeoutError` (None: no limit).
    """

    def __init__(self, model: str | bytes, provider: str, timeout: float | None = None):
        import onnxruntime as ort

        self.name, self.timeout = provider, timeout
        self.requested = PROVIDERS.get(provider, provider)
        self.session = None
        self.ran_on: str | None = None
        self.unavailable = ""
        if self.requested not in ort.get_available_providers():
            self.unavailable = f"{self.requested} is not in this onnxruntime build ({ort.__version__}: {', '.join(ort.get_available_providers())})"
            return
        if self.requested != PROVIDERS["cpu"] and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # the CUDA/cuDNN libraries the pip wheels ship, before the session needs them
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.requested != PROVIDERS["cpu"]:
            # Never place a node on the CPU behind our back when a GPU provider was asked for:
            # the session fails to load instead, and the report says so.
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        if isinstance(model, str) and not _utf8(model):
            # onnxruntime takes paths as UTF-8: a name that is not (bytes a filesystem allows) is read here.
            with open(model, "rb") as fh:
                model = fh.read()
        session = ort.InferenceSession(model, sess_options=options, providers=[self.requested])
        session.disable_fallback()  # a failing run raises instead of retrying on other providers
        self.ran_on = session.get_providers()[0]
        if self.ran_on != self.requested:
            self.unavailable = f"asked for {self.requested}, onnxruntime fell back to {self.ran_on}"
            return
        self.session = session

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def run_feeds(self, feeds: dict, outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run any graph: ``{input name: numpy array}`` -> its outputs, in graph order (or
        ``outputs``'), within `timeout`. A refused input raises onnxruntime's error, and only
        raises: nothing is logged (an expected refusal must not print as an error)."""
        import onnxruntime as ort

        options = ort.RunOptions()
        options.log_severity_level = 4  # the exception carries the message
        timer = None
        if self.timeout is not None:
            timer = threading.Timer(self.timeout, lambda: setattr(options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            return self.session.run(outputs, feeds, options)
        except Exception:
            if options.terminate:
                raise TimeoutError(f"ran past {self.timeout:g} s (the case time limit) and was stopped") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The outputs as the runtime returned them (shape and dtype unchanged: the comparator
        checks them before any number)."""
        feeds = {"q": _to_numpy(case.q), "k": _to_numpy(case.k), "position_ids": case.position_ids.numpy()}
        q, k = self.run_feeds(feeds, ["q_rot", "k_rot"])
        return q, k


def openvino_device(name: str) -> str | None:
    """The OpenVINO device a provider name asks for ("openvino" -> "CPU", "openvino:gpu" ->
    "GPU"), "" for an OpenVINO name with a device that is not CPU, GPU[.N] or NPU, or None for
    a name that is not OpenVINO's."""
    head, colon, device = name.partition(":")
    if head.lower() != OPENVINO:
        return None
    device = device.upper() if colon else "CPU"
    # its plain devices (GPU.1: the second GPU); AUTO / HETERO / MULTI pick devices themselves,
    # and a check must say which one ran
    return device if re.fullmatch(r"(CPU|GPU|NPU)(\.\d+)?", device) else ""


class OpenVinoRunner:
    """OpenVINO's runtime reading the ONNX file itself, compiled for one device (Intel CPUs,
    GPUs, NPUs). OpenVINO does not bound-check Gather: positions past a table give NaN only
    through the guard row rope_export writes (`export.graph.guard_positions`); a table graph
    without it gives finite wrong values there, which the "past the table" case FAILS."""

    def __init__(self, path: str, device: str = "CPU"):
        self.name = OPENVINO if device == "CPU" else f"{OPENVINO}:{device.lower()}"
        self.ran_on: str | None = None
        self.unavailable = ""
        try:
            import openvino as ov
        except ImportError:
            self.unavailable = 'OpenVINO is not installed (pip install -e ".[openvino]")'
            return
        core = ov.Core()
        if device not in core.available_devices:
            self.unavailable = f"OpenVINO {ov.__version__} has no {device} device here ({', '.join(core.available_devices)})"
            return
        # OpenVINO's CPU plugin computes float32 graphs in bfloat16 by default where the CPU has
        # bf16 units (measured: 8e-3 off at position 0): the graph's own precision, as asked.
        self.compiled = core.compile_model(core.read_model(os.fspath(path)), device, {"INFERENCE_PRECISION_HINT": "f32"})
        devices = self.compiled.get_property("EXECUTION_DEVICES")
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.ran_on = f"OpenVINO {ov.__version__.split('-')[0]} {','.join(devices)} {precision.get_type_name()}"
        if device not in devices:
            self.unavailable = f"asked for OpenVINO's {device}, it runs on {', '.join(devices)}"

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.compiled({"q": _to_numpy(case.q), "k": _to_numpy(case.k), "position_ids": case.position_ids.numpy()})
        by_name = {next(iter(port.get_names())): value for port, value in outputs.items()}
        return by_name["q_rot"], by_name["k_rot"]


class TensorRTEngineRunner:
    """A serialized TensorRT engine (``rope-export build-engine``) run on CUDA tensors, by
    whichever TensorRT family is installed (it must be the one that built it)."""

    def __init__(self, plan_path: str, plugin: bool = False):
        from ..tensorrt import flavor, require_tensorrt

        self.name = "tensorrt-engine"
        self.ran_on: str | None = None
        self.unavailable = ""
        if not os.path.isfile(plan_path):
            raise InputError(f"no such engine file: {plan_path}")
        try:
            trt = require_tensorrt()
        except RuntimeError as exc:
            self.unavailable = str(exc)
            return
        if not torch.cuda.is_available():
            self.unavailable = f"a TensorRT engine runs on a CUDA device; none here ({flavor(trt)} is installed)"
            return
        if plugin:
            from ..tensorrt import plugin as _plugin  # noqa: F401 - a JIT plugin engine calls back into it
        with open(plan_path, "rb") as fh:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise InputError(f"{plan_path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        self.ran_on = f"{flavor(trt)} on {torch.cuda.get_device_name()}"

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"q": case.q.cuda(), "k": case.k.cuda(), "position_ids": case.position_ids.cuda().contiguous()}
        outs = {"q_rot": torch.empty_like(feeds["q"]), "k_rot": torch.empty_like(feeds["k"])}
        for name, t in feeds.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in outs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return tuple(_to_numpy(outs[n].cpu()) for n in ("q_rot", "k_rot"))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def numpy_dtype(dtype: torch.dtype):
    """The numpy dtype an activation dtype travels as (bfloat16: ml_dtypes')."""
    return _to_numpy(torch.zeros(0, dtype=dtype)).dtype


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # onnxruntime takes bfloat16 numpy arrays through ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()
