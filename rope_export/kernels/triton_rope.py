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

__all__ = ["rope_kernel", "rope_triton"]


@triton.jit
def rope_kernel(
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
    rope_kernel[grid](
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
