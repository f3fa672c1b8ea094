"""Fused multi-axis rotary kernel (Triton): positions -> sin/cos in registers -> rotation of
q and k, in one launch, without writing cos/sin to memory.

Each program takes a tile of tokens (flattened b * S + s) and a group of heads (q heads
first, then k heads). It gathers each pair's position ``position_ids[axis_of_pair[i], b, s]``, computes the float32
angle ``float32(pos) * inv_freq[i]`` and its sin/cos once (libdevice, accurate at large
angles), then rotates the pairs of every head in its group and copies the untouched tail.

Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (how CI tests it).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

try:  # Triton >= 3.0
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - older Triton
    from triton.language.extra.cuda import libdevice

__all__ = ["rope_triton", "plugin_constants", "plugin_grid", "rope_plugin_launch", "compile_plugin_kernel"]


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, qo_ptr, ko_ptr, pos_ptr, inv_ptr, axis_ptr,
    num_tokens, seq_len, num_q_heads, num_k_heads, num_q_groups,
    sq_b, sq_h, sq_s, sq_d, sk_b, sk_h, sk_s, sk_d,
    sqo_b, sqo_h, sqo_s, sqo_d, sko_b, sko_h, sko_s, sko_d,
    sp_a, sp_b, sp_s,
    scaling,
    PAIRS: tl.constexpr, BLOCK_P: tl.constexpr, TAIL: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr, INTERLEAVED: tl.constexpr, HEADS_PER_PROG: tl.constexpr, ACCURATE_TRIG: tl.constexpr,
):
    # One program: BLOCK_S tokens (flattened b * S + s) x HEADS_PER_PROG heads (q heads, then k).
    # sin/cos are computed once per token tile and reused for every head of the group.
    tok = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = tok < num_tokens
    b = (tok // seq_len)[:, None]
    s = (tok % seq_len)[:, None]

    i = tl.arange(0, BLOCK_P)
    pmask = i < PAIRS
    axis = tl.load(axis_ptr + i, mask=pmask, other=0)[None, :]
    mask = smask[:, None] & pmask[None, :]
    pos = tl.load(pos_ptr + axis * sp_a + b * sp_b + s * sp_s, mask=mask, other=0)
    angle = pos.to(tl.float32) * tl.load(inv_ptr + i, mask=pmask, other=0.0)[None, :]
    if ACCURATE_TRIG:
        # libdevice's cosf/sinf reduce the argument exactly; tl.cos/tl.sin lower to PTX
        # cos.approx, which is off by ~1e-3 at angles of a few thousand radians.
        cos = libdevice.cos(angle) * scaling
        sin = libdevice.sin(angle) * scaling
    else:
        cos = tl.cos(angle) * scaling  # the interpreter (numpy float32)
        sin = tl.sin(angle) * scaling

    if INTERLEAVED:
        dim_a = (2 * i)[None, :]
        dim_b = (2 * i + 1)[None, :]
    else:
        dim_a = i[None, :]
        dim_b = (i + PAIRS)[None, :]
    t = tl.arange(0, BLOCK_T)
    tmask = smask[:, None] & (t < TAIL)[None, :]
    dim_t = (2 * PAIRS + t)[None, :]

    # A group holds only q heads or only k heads, so the choice is made once per program and
    # the head loop unrolls, letting the loads of all its heads be in flight together.
    g = tl.program_id(1)
    if g < num_q_groups:
        src0 = q_ptr + b * sq_b + s * sq_s
        dst0 = qo_ptr + b * sqo_b + s * sqo_s
        sh, sd, dh, dd = sq_h, sq_d, sqo_h, sqo_d
        h0 = g * HEADS_PER_PROG
        nh = num_q_heads
    else:
        src0 = k_ptr + b * sk_b + s * sk_s
        dst0 = ko_ptr + b * sko_b + s * sko_s
        sh, sd, dh, dd = sk_h, sk_d, sko_h, sko_d
        h0 = (g - num_q_groups) * HEADS_PER_PROG
        nh = num_k_heads
    for j in tl.static_range(HEADS_PER_PROG):
        h = h0 + j
        m = mask & ((tl.zeros([BLOCK_S, BLOCK_P], dtype=tl.int32) + h) < nh)
        src = src0 + h * sh
        dst = dst0 + h * dh
        xa = tl.load(src + dim_a * sd, mask=m, other=0.0)
        xb = tl.load(src + dim_b * sd, mask=m, other=0.0)
        xa32 = xa.to(tl.float32)
        xb32 = xb.to(tl.float32)
        tl.store(dst + dim_a * dd, (xa32 * cos - xb32 * sin).to(xa.dtype), mask=m)
        tl.store(dst + dim_b * dd, (xb32 * cos + xa32 * sin).to(xa.dtype), mask=m)
        if TAIL > 0:
            mt = tmask & ((tl.zeros([BLOCK_S, BLOCK_T], dtype=tl.int32) + h) < nh)
            tail = tl.load(src + dim_t * sd, mask=mt, other=0.0)
            tl.store(dst + dim_t * dd, tail, mask=mt)


@triton.jit
def _rope_plugin_kernel(
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
    _rope_kernel(x_ptr, x_ptr, out_ptr, out_ptr, pos_ptr, inv_ptr, axis_ptr,
                 num_tokens, seq_len, NUM_HEADS, 0, tl.cdiv(NUM_HEADS, HEADS_PER_PROG),
                 NUM_HEADS * s_h, s_h, HEAD_DIM, 1, NUM_HEADS * s_h, s_h, HEAD_DIM, 1,
                 NUM_HEADS * s_h, s_h, HEAD_DIM, 1, NUM_HEADS * s_h, s_h, HEAD_DIM, 1,
                 num_tokens, seq_len, 1, SCALING,
                 PAIRS, BLOCK_P, TAIL, BLOCK_T, BLOCK_S, INTERLEAVED, HEADS_PER_PROG, ACCURATE_TRIG)


def _launch_shape(num_tokens: int, heads: int) -> tuple[int, int]:
    """(tokens per program, heads per program): token tiles for prefill, and head groups small
    enough that the GPU gets thousands of programs (sin/cos are recomputed once per group)."""
    block_s = 16 if num_tokens >= 2048 else (4 if num_tokens >= 256 else 1)
    programs = triton.cdiv(num_tokens, block_s)
    heads_per_prog = 8
    while heads_per_prog > 1 and programs * triton.cdiv(heads, heads_per_prog) < 2048:
        heads_per_prog //= 2
    return block_s, heads_per_prog


def rope_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    position_ids: torch.Tensor,
    inv_freq: torch.Tensor,
    axis_of_pair: torch.Tensor,
    *,
    interleaved: bool,
    rotary_dim: int,
    attention_scaling: float = 1.0,
    q_out: torch.Tensor | None = None,
    k_out: torch.Tensor | None = None,
    heads_per_program: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k in one launch.

    Args:
        q: ``[B, Hq, S, D]``, k: ``[B, Hk, S, D]``; any strides; float32 / float16 / bfloat16.
        position_ids: int64/int32 ``[A, B, S]`` (any strides; a one-axis ``[B, S]`` is accepted).
        inv_freq: float32 ``[P]`` (P = rotary_dim // 2); axis_of_pair: int ``[P]``.
        interleaved: pair i = dims (2i, 2i+1) if True, else (i, i + P).
        rotary_dim: rotated dims; the rest is copied.
        attention_scaling: multiplies cos and sin.
        q_out, k_out: optional output tensors (same shapes and dtypes); allocated otherwise.
        heads_per_program: override the launch heuristic (one token per program then).
    Returns:
        (q_out, k_out)
    """
    if position_ids.dim() == 2:
        position_ids = position_ids[None]
    batch, num_q, seq, dim = q.shape
    num_k = k.shape[1]
    pairs = rotary_dim // 2
    if k.shape[0] != batch or k.shape[2] != seq or k.shape[3] != dim or k.dtype != q.dtype:
        raise ValueError(f"q {tuple(q.shape)} {q.dtype} and k {tuple(k.shape)} {k.dtype} disagree")
    if inv_freq.numel() != pairs or axis_of_pair.numel() != pairs:
        raise ValueError("inv_freq and axis_of_pair need rotary_dim // 2 entries")
    q_out = torch.empty_like(q) if q_out is None else q_out
    k_out = torch.empty_like(k) if k_out is None else k_out
    inv = inv_freq.to(device=q.device, dtype=torch.float32).contiguous()
    axes = axis_of_pair.to(device=q.device, dtype=torch.int32).contiguous()
    tail = dim - 2 * pairs
    tokens = batch * seq
    block_s, heads_per_prog = _launch_shape(tokens, num_q + num_k) if heads_per_program is None else (1, heads_per_program)
    q_groups = triton.cdiv(num_q, heads_per_prog)
    grid = (triton.cdiv(tokens, block_s), q_groups + triton.cdiv(num_k, heads_per_prog))
    _rope_kernel[grid](
        q, k, q_out, k_out, position_ids, inv, axes,
        tokens, seq, num_q, num_k, q_groups,
        *q.stride(), *k.stride(), *q_out.stride(), *k_out.stride(),
        *position_ids.stride(),
        float(attention_scaling),
        PAIRS=pairs, BLOCK_P=triton.next_power_of_2(pairs), TAIL=tail, BLOCK_T=triton.next_power_of_2(max(tail, 1)),
        BLOCK_S=block_s, INTERLEAVED=bool(interleaved), HEADS_PER_PROG=heads_per_prog,
        ACCURATE_TRIG=os.environ.get("TRITON_INTERPRET", "0") != "1",
    )
    return q_out, k_out


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
    _rope_plugin_kernel[plugin_grid(batch * seq, c)](x, position_ids, inv_freq, axis_of_pair, batch * seq, seq, out, **c)
    return out


def compile_plugin_kernel(x_dtype: torch.dtype, position_dtype: torch.dtype, constants: dict, target=None):
    """Compile the plugin kernel to PTX for TensorRT's ahead-of-time plugin.

    Returns ``(kernel_name, ptx, num_warps, shared_bytes)``. ``target`` is a
    ``triton.backends.compiler.GPUTarget`` (default: the current CUDA device); PTX generation
    itself needs no GPU. The entry takes exactly TensorRT's arguments (x, position_ids,
    inv_freq, axis_of_pair, num_tokens, seq_len, out): Triton's own trailing scratch-buffer
    parameters, unused here, are removed, since TensorRT passes nothing for them.
    """
    if target is None:
        target = triton.runtime.driver.active.get_current_target()
    signature = {"x_ptr": f"*{_TRITON_TYPES[x_dtype]}", "pos_ptr": f"*{_TRITON_TYPES[position_dtype]}",
                 "inv_ptr": "*fp32", "axis_ptr": "*i32", "num_tokens": "i32", "seq_len": "i32",
                 "out_ptr": f"*{_TRITON_TYPES[x_dtype]}"}
    source = triton.compiler.ASTSource(fn=_rope_plugin_kernel, signature=signature, constexprs=dict(constants))
    compiled = triton.compile(source, target=target, options={"enable_fp_fusion": False})
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
