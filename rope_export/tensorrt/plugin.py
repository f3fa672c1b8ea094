"""The ``rope_export::MultiAxisRotary`` quick deployable plugin (TensorRT >= 10.7).

Importing this module registers the plugin with ``tensorrt.plugin``; TensorRT's ONNX parser
then imports plugin-form nodes (`rope_export.plugin_form`) as this plugin instead of expanding
their local function. The implementation runs the fused Triton kernel on the stream TensorRT
gives (a JIT plugin: the engine calls back into Python). An ahead-of-time implementation
(compiled PTX inside the engine, no Python at run time) is not written yet: with ``aot=1`` on
the node and no AOT implementation registered, TensorRT falls back to this one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import require_tensorrt

PLUGIN_ID = "rope_export::MultiAxisRotary"

trt = require_tensorrt()
import tensorrt.plugin as trtp  # noqa: E402


@trtp.register(PLUGIN_ID)
def _describe(x: trtp.TensorDesc, position_ids: trtp.TensorDesc, inv_freq: npt.NDArray[np.float32],
              axis_of_pair: npt.NDArray[np.int32], rotary_dim: int, interleaved: int, num_heads: int,
              attention_scaling: float) -> trtp.TensorDesc:
    return x.like()


@trtp.impl(PLUGIN_ID)
def _run(x: trtp.Tensor, position_ids: trtp.Tensor, inv_freq: npt.NDArray[np.float32],
         axis_of_pair: npt.NDArray[np.int32], rotary_dim: int, interleaved: int, num_heads: int,
         attention_scaling: float, outputs, stream: int) -> None:
    import torch

    from ..kernels.triton_rope import rope_triton

    xt = torch.as_tensor(x, device="cuda")
    pos = torch.as_tensor(position_ids, device="cuda")
    out = torch.as_tensor(outputs[0], device="cuda")
    inv = torch.as_tensor(np.asarray(inv_freq, dtype=np.float32), device="cuda")
    axes = torch.as_tensor(np.asarray(axis_of_pair, dtype=np.int32), device="cuda")
    pos = pos[None] if pos.dim() == 2 else pos
    none = xt[:, :0]  # the kernel rotates q and k together; here there is one tensor
    with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
        rope_triton(xt, none, pos, inv, axes, interleaved=bool(interleaved), rotary_dim=int(rotary_dim),
                    attention_scaling=float(attention_scaling), q_out=out, k_out=none)
