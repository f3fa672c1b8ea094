"""The fused kernel behind TensorRT's plugin calling convention, and its PTX for the
ahead-of-time plugin.

`rope_plugin_kernel` runs `rope_export.kernels.triton_rope.rope_kernel` on one dense tensor
with TensorRT's argument order (input pointers, integer scalars, output pointers; no float
scalars), the node's attributes as compile-time constants. `compile_plugin_kernel` makes its
PTX (no GPU needed); `rope_plugin_launch` runs it as the JIT plugin does (and the tests, under
``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..kernels.triton_rope import rope_kernel

__all__ = ["rope_plugin_kernel", "plugin_constants", "plugin_grid", "rope_plugin_launch", "compile_plugin_kernel",
           "PLUGIN_BLOCK_S", "PLUGIN_HEADS_PER_PROG", "PTX_VERSION", "MIN_DRIVER"]


@triton.jit
def rope_plugin_kernel(
    x_ptr, pos_ptr, inv_ptr, axis_ptr, num_tokens, seq_len, out_ptr,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SCALING: tl.constexpr,
    PAIRS: tl.constexpr, BLOCK_P: tl.constexpr, TAIL: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr, INTERLEAVED: tl.constexpr, HEADS_PER_PROG: tl.constexpr, ACCURATE_TRIG: tl.constexpr,
):
    # TensorRT's ahead-of-time plugin ABI: input pointers, then integer scalars, then output
    # pointers, and no float scalars. Tensors are dense [B, H, S, D] and positions dense
    # [A, B, S], so every stride follows from (num_tokens, seq_len) and the constants; the
    # one tensor rides the q path (no k groups). Calling a jit function inlines it.
    s_h = seq_len.to(tl.int64) * HEAD_DIM  # 64-bit offsets: B*H*S*D may pass 2**31
    rope_kernel(x_ptr, x_ptr, out_ptr, out_ptr, pos_ptr, inv_ptr, axis_ptr,
                 num_tokens, seq_len, NUM_HEADS, 0, tl.cdiv(NUM_HEADS, HEADS_PER_PROG),
                 NUM_HEADS * s_h, s_h, HEAD_DIM, 1, NUM_HEADS * s_h, s_h, HEAD_DIM, 1,
                 NUM_HEADS * s_h, s_h, HEAD_DIM, 1, NUM_HEADS * s_h, s_h, HEAD_DIM, 1,
                 num_tokens, seq_len, 1, SCALING,
                 PAIRS, BLOCK_P, TAIL, BLOCK_T, BLOCK_S, INTERLEAVED, HEADS_PER_PROG, ACCURATE_TRIG)


# The plugin kernel's launch shape is fixed at engine build time (TensorRT takes one grid
# expression): 4 tokens x up to 4 heads per program suits prefill and decode alike.
PLUGIN_BLOCK_S, PLUGIN_HEADS_PER_PROG = 4, 4
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64", torch.int32: "i32"}


def plugin_constants(*, num_heads: int, head_dim: int, rotary_dim: int, interleaved: bool, attention_scaling: float,
                     accurate_trig: bool = True) -> dict:
    """The compile-time constants of the plugin kernel for one ``MultiAxisRotary`` node."""
    pairs, tail = rotary_dim // 2, head_dim - rotary_dim // 2 * 2
    return dict(NUM_HEADS=int(num_heads), HEAD_DIM=int(head_dim), SCALING=float(attention_scaling), PAIRS=pairs,
                BLOCK_P=triton.next_power_of_2(pairs), TAIL=tail, BLOCK_T=triton.next_power_of_2(max(tail, 1)),
                BLOCK_S=PLUGIN_BLOCK_S, INTERLEAVED=bool(interleaved),
                HEADS_PER_PROG=min(PLUGIN_HEADS_PER_PROG, triton.next_power_of_2(int(num_heads))),
                ACCURATE_TRIG=bool(accurate_trig))


def plugin_grid(num_tokens, constants: dict):
    """(programs over tokens, programs over heads). ``num_tokens`` (B*S) may be an int or a
    TensorRT symbolic expression: only ``+`` and ``//`` are used on it."""
    return ((num_tokens + (constants["BLOCK_S"] - 1)) // constants["BLOCK_S"],
            triton.cdiv(constants["NUM_HEADS"], constants["HEADS_PER_PROG"]))


def rope_plugin_launch(x: torch.Tensor, position_ids: torch.Tensor, inv_freq: torch.Tensor, axis_of_pair: torch.Tensor,
                       out: torch.Tensor, *, rotary_dim: int, interleaved: bool, attention_scaling: float) -> torch.Tensor:
    """Run the plugin kernel as TensorRT runs it (the JIT plugin calls this; so do the tests).

    Args:
        x, out: dense ``[B, H, S, D]``, float32 / float16 / bfloat16.
        position_ids: dense int64/int32 ``[A, B, S]`` or ``[B, S]``.
        inv_freq: dense float32 ``[P]``; axis_of_pair: dense int32 ``[P]``.
    """
    for name, t in (("x", x), ("out", out), ("position_ids", position_ids), ("inv_freq", inv_freq), ("axis_of_pair", axis_of_pair)):
        if not t.is_contiguous():
            raise ValueError(f"the plugin kernel takes dense tensors; {name} is strided")
    batch, heads, seq, dim = x.shape
    c = plugin_constants(num_heads=heads, head_dim=dim, rotary_dim=rotary_dim, interleaved=interleaved,
                         attention_scaling=attention_scaling,
                         accurate_trig=os.environ.get("TRITON_INTERPRET", "0") != "1")
    rope_plugin_kernel[plugin_grid(batch * seq, c)](x, position_ids, inv_freq, axis_of_pair, batch * seq, seq, out, **c)
    return out


# PTX ISA 8.4 (CUDA 12.4): what the AOT plugin's PTX declares, so the engine loads with any
# driver >= 550 (Triton's default, ISA 9.4, would need the newest drivers).
PTX_VERSION = 84
MIN_DRIVER = "550 (CUDA 12.4)"


def compile_plugin_kernel(x_dtype: torch.dtype, position_dtype: torch.dtype, constants: dict, target=None,
                          ptx_version: int = PTX_VERSION):
    """Compile the plugin kernel to PTX for TensorRT's ahead-of-time plugin.

    Returns ``(kernel_name, ptx, num_warps, shared_bytes)``. ``target`` is a
    ``triton.backends.compiler.GPUTarget`` (default: the current CUDA device); PTX generation
    itself needs no GPU. ``ptx_version`` is the PTX ISA the text declares (84: drivers >= 550).
    The entry takes exactly TensorRT's arguments (x, position_ids, inv_freq, axis_of_pair,
    num_tokens, seq_len, out): Triton's own trailing scratch-buffer parameters, unused here,
    are removed, since TensorRT passes nothing for them.
    """
    if target is None:
        target = triton.runtime.driver.active.get_current_target()
    signature = {"x_ptr": f"*{_TRITON_TYPES[x_dtype]}", "pos_ptr": f"*{_TRITON_TYPES[position_dtype]}",
                 "inv_ptr": "*fp32", "axis_ptr": "*i32", "num_tokens": "i32", "seq_len": "i32",
                 "out_ptr": f"*{_TRITON_TYPES[x_dtype]}"}
    source = triton.compiler.ASTSource(fn=rope_plugin_kernel, signature=signature, constexprs=dict(constants))
    compiled = triton.compile(source, target=target, options={"enable_fp_fusion": False, "ptx_version": ptx_version})
    meta = compiled.metadata
    if getattr(meta, "global_scratch_size", 0) or getattr(meta, "profile_scratch_size", 0):
        raise RuntimeError("the plugin kernel needs Triton scratch memory, which TensorRT's AOT launch cannot give")
    ptx = _keep_entry_params(compiled.asm["ptx"], meta.name, len(signature))
    return meta.name, ptx, meta.num_warps, meta.shared


def _keep_entry_params(ptx: str, name: str, count: int) -> str:
    """Drop the ``.entry name(...)`` parameters past the first ``count``, refusing when the
    body reads one of them."""
    start = ptx.index(f".entry {name}(")
    end = ptx.index(")", start)
    params = [p.strip() for p in ptx[start + len(f".entry {name}("):end].split(",") if p.strip()]
    for dropped in params[count:]:
        param_name = dropped.split()[-1]
        if f"[{param_name}]" in ptx[end:]:
            raise RuntimeError(f"the plugin kernel reads {param_name}, which TensorRT does not pass")
    head = ",\n".join("\t" + p for p in params[:count])
    return ptx[:start] + f".entry {name}(\n{head}\n)" + ptx[end + 1:]
