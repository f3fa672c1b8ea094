"""The ``rope_export::MultiAxisRotary`` quick deployable plugin (TensorRT >= 10.7).

Importing this module registers the plugin with ``tensorrt.plugin``; TensorRT's ONNX parser
then imports plugin-form nodes (`rope_export.export.plugin_form`) as this plugin instead of expanding
their local function. Both implementations run the same Triton kernel
(`rope_export.tensorrt.kernel.rope_plugin_kernel`):

* ahead of time (``aot=1`` on the node, the default export): at engine build the kernel is
  compiled to PTX for the build GPU, with the node's attributes as compile-time constants,
  and stored in the engine, which then runs without Python;
* just in time (``aot=0``): the engine calls back into Python and launches the kernel on
  TensorRT's stream.

Written against TensorRT's documented ``tensorrt.plugin`` API and never run here (no TensorRT
builder on our machines); the kernel, its PTX entry and the launch arithmetic are tested on
CPU (`tests/test_triton_kernel.py`).
"""

from __future__ import annotations

from . import require_tensorrt

PLUGIN_ID = "rope_export::MultiAxisRotary"

trt = require_tensorrt()
import tensorrt.plugin as trtp  # noqa: E402


def _torch_dtype(trt_dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
             trt.int64: torch.int64, trt.int32: torch.int32}
    if trt_dtype not in table:
        raise TypeError(f"MultiAxisRotary does not take {trt_dtype}")
    return table[trt_dtype]


@trtp.register(PLUGIN_ID)
def _describe(x: trtp.TensorDesc, position_ids: trtp.TensorDesc, inv_freq: trtp.TensorDesc,
              axis_of_pair: trtp.TensorDesc, rotary_dim: int, interleaved: int, num_heads: int, head_dim: int,
              attention_scaling: float) -> trtp.TensorDesc:
    return x.like()


@trtp.aot_impl(PLUGIN_ID)
def _compile(x: trtp.TensorDesc, position_ids: trtp.TensorDesc, inv_freq: trtp.TensorDesc,
             axis_of_pair: trtp.TensorDesc, rotary_dim: int, interleaved: int, num_heads: int, head_dim: int,
             attention_scaling: float, outputs, tactic: int):
    from .kernel import compile_plugin_kernel, plugin_constants, plugin_grid

    constants = plugin_constants(num_heads=num_heads, head_dim=head_dim, rotary_dim=rotary_dim,
                                 interleaved=bool(interleaved), attention_scaling=attention_scaling)
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
         rotary_dim: int, interleaved: int, num_heads: int, head_dim: int, attention_scaling: float,
         outputs, stream: int) -> None:
    import torch

    from .kernel import rope_plugin_launch

    tensors = [torch.as_tensor(t, device="cuda") for t in (x, position_ids, inv_freq, axis_of_pair, outputs[0])]
    with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
        rope_plugin_launch(*tensors[:4], tensors[4], rotary_dim=int(rotary_dim), interleaved=bool(interleaved),
                           attention_scaling=float(attention_scaling))
