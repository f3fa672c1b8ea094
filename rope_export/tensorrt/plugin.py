"""The ``rope_export::MultiAxisRotary`` quick deployable plugin (TensorRT >= 10.9).

Importing this module registers the plugin with ``tensorrt.plugin``; TensorRT's ONNX parser
then imports plugin-form nodes (`rope_export.export.plugin_form`) as this plugin instead of
expanding their local function. Both implementations run the same Triton kernel
(`rope_export.tensorrt.kernel.rope_plugin_kernel`):

* ahead of time (``aot=1`` on the node, the default export): at engine build the kernel is
  compiled to PTX (ISA 8.4: drivers >= 550) for the build GPU, with the node's attributes as
  compile-time constants, and stored in the engine, which then runs without Python;
* just in time (``aot=0``): the engine calls back into Python and launches the kernel on
  TensorRT's stream.

No ``from __future__ import annotations`` here: the plugin package reads these annotations as
classes (``issubclass(annotation, TensorDesc)``). The attributes are declared as 1-D numpy
arrays because TensorRT's ONNX parser hands INT and FLOAT attributes over as one-element
int32/float32 arrays. In CI the descriptor, autotune and JIT implementation register through
NVIDIA's own plugin package on a stand-in core (tests/tensorrt/test_plugin.py); the AOT implementation
and engine building with the plugin need TensorRT itself on a GPU machine (docs/tensorrt.md: what ran where).
"""

from typing import List, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import require_tensorrt

PLUGIN_ID = "rope_export::MultiAxisRotary"

trt = require_tensorrt()
try:
    import tensorrt.plugin as trtp
except ImportError as exc:  # TensorRT-RTX ships no plugin package
    raise RuntimeError(f"the MultiAxisRotary plugin needs TensorRT >= 10.9's tensorrt.plugin package ({exc}); "
                       "TensorRT-RTX has none: build plugin-form graphs without --plugin (their local function)") from None

# (x, position_ids, inv_freq, axis_of_pair) -> out: x and out share a float type; positions
# are int64 (as exported), the tables float32 and int32.
_IO_TYPES = "FP32|FP16|BF16,INT64|INT64|INT64,FP32|FP32|FP32,INT32|INT32|INT32,FP32|FP16|BF16"


def _torch_dtype(trt_dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
             trt.int64: torch.int64, trt.int32: torch.int32}
    if trt_dtype not in table:
        raise TypeError(f"MultiAxisRotary does not take {trt_dtype}")
    return table[trt_dtype]


@trtp.register(PLUGIN_ID)
def _describe(x: trtp.TensorDesc, position_ids: trtp.TensorDesc, inv_freq: trtp.TensorDesc,
              axis_of_pair: trtp.TensorDesc, rotary_dim: npt.NDArray[np.int32], interleaved: npt.NDArray[np.int32],
              num_heads: npt.NDArray[np.int32], head_dim: npt.NDArray[np.int32],
              attention_scaling: npt.NDArray[np.float32]) -> trtp.TensorDesc:
    return x.like()


@trtp.autotune(PLUGIN_ID)
def _formats(x: trtp.TensorDesc, position_ids: trtp.TensorDesc, inv_freq: trtp.TensorDesc,
             axis_of_pair: trtp.TensorDesc, rotary_dim: npt.NDArray[np.int32], interleaved: npt.NDArray[np.int32],
             num_heads: npt.NDArray[np.int32], head_dim: npt.NDArray[np.int32],
             attention_scaling: npt.NDArray[np.float32], outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
    # Dense row-major tensors only: the kernel derives every stride from the shapes.
    return [trtp.AutoTuneCombination(_IO_TYPES, "LINEAR")]


def _constants(rotary_dim, interleaved, num_heads, head_dim, attention_scaling, accurate_trig=True) -> dict:
    from .kernel import plugin_constants

    return plugin_constants(num_heads=int(num_heads[0]), head_dim=int(head_dim[0]), rotary_dim=int(rotary_dim[0]),
                            interleaved=bool(interleaved[0]), attention_scaling=float(attention_scaling[0]),
                            accurate_trig=accurate_trig)


@trtp.aot_impl(PLUGIN_ID)
def _compile(x: trtp.TensorDesc, position_ids: trtp.TensorDesc, inv_freq: trtp.TensorDesc,
             axis_of_pair: trtp.TensorDesc, rotary_dim: npt.NDArray[np.int32], interleaved: npt.NDArray[np.int32],
             num_heads: npt.NDArray[np.int32], head_dim: npt.NDArray[np.int32],
             attention_scaling: npt.NDArray[np.float32], outputs: Tuple[trtp.TensorDesc],
             tactic: int) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    from .kernel import compile_plugin_kernel, plugin_grid

    constants = _constants(rotary_dim, interleaved, num_heads, head_dim, attention_scaling)
    name, ptx, num_warps, shared = compile_plugin_kernel(_torch_dtype(x.dtype), _torch_dtype(position_ids.dtype),
                                                         constants)
    # x is [B, H, S, D]: tokens = B * S, sequence = S.
    num_tokens = x.shape_expr[0] * x.shape_expr[2]
    grid_x, grid_y = plugin_grid(num_tokens, constants)
    launch = trtp.KernelLaunchParams()
    launch.grid_x, launch.grid_y = grid_x, grid_y
    launch.block_x = num_warps * 32
    launch.shared_mem = shared
    extra = trtp.SymIntExprs(2)  # the kernel's integer arguments, after the four input pointers
    extra[0] = trtp.SymInt32(num_tokens)
    extra[1] = trtp.SymInt32(x.shape_expr[2])
    return name, ptx, launch, extra


@trtp.impl(PLUGIN_ID)
def _run(x: trtp.Tensor, position_ids: trtp.Tensor, inv_freq: trtp.Tensor, axis_of_pair: trtp.Tensor,
         rotary_dim: npt.NDArray[np.int32], interleaved: npt.NDArray[np.int32], num_heads: npt.NDArray[np.int32],
         head_dim: npt.NDArray[np.int32], attention_scaling: npt.NDArray[np.float32],
         outputs: Tuple[trtp.Tensor], stream: int) -> None:
    import torch

    from .kernel import rope_plugin_launch

    tensors = [_as_torch(t) for t in (x, position_ids, inv_freq, axis_of_pair, outputs[0])]
    with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
        rope_plugin_launch(*tensors[:4], tensors[4], rotary_dim=int(rotary_dim[0]), interleaved=bool(interleaved[0]),
                           attention_scaling=float(attention_scaling[0]))


class _Int16View:
    """The CUDA array interface of a bfloat16 buffer, described as int16 (the interface has no
    bfloat16 type string)."""

    def __init__(self, tensor):
        self.__cuda_array_interface__ = {"shape": tuple(int(d) for d in tensor.shape), "typestr": "<i2",
                                         "data": (int(tensor.data_ptr), False), "version": 3}


def _as_torch(tensor):
    """A torch view of a TensorRT tensor (bfloat16: through an int16 view, reinterpreted)."""
    import torch

    if _torch_dtype(tensor.dtype) == torch.bfloat16:
        return torch.as_tensor(_Int16View(tensor), device="cuda").view(torch.bfloat16)
    return torch.as_tensor(tensor, device="cuda")
