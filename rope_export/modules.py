"""Export-friendly torch rotary modules: explicit sin/cos, no complex dtypes, no
data-dependent Python control flow, no in-place writes on inputs.

Example:
    >>> import torch, rope_export as rx
    >>> rope = rx.RotaryEmbedding(rx.RopeSpec.standard(64))
    >>> q, k = torch.randn(2, 8, 5, 64), torch.randn(2, 2, 5, 64)
    >>> pos = torch.arange(5).expand(2, 5)
    >>> q_rot, k_rot = rope(q, k, pos)
    >>> q_rot.shape, rope.cos_sin(pos)[0].shape
    (torch.Size([2, 8, 5, 64]), torch.Size([2, 5, 32]))
"""

from __future__ import annotations

import torch
from torch import nn

from . import frequencies as F
from .spec import LAYOUTS, DynamicNTK, LongRopeSwitch, RopeSpec

__all__ = ["RotaryEmbedding", "apply_rotary", "deinterleave"]


def deinterleave(x: torch.Tensor, rot: int) -> torch.Tensor:
    """Dims ``(2i, 2i+1)`` of the first ``rot`` dims of ``x`` moved to ``(i, i + rot/2)``, the rest
    kept: the "interleaved_to_half" layout is this permutation followed by the half rotation."""
    head = x[..., :rot].unflatten(-1, (rot // 2, 2)).transpose(-1, -2).flatten(-2)
    return head if rot == x.shape[-1] else torch.cat([head, x[..., rot:]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: RopeSpec | str = "half") -> torch.Tensor:
    """Rotate ``x`` by precomputed cos/sin (for users who cache them).

    Args:
        x: ``[B, H, S, D]`` float32 / float16 / bfloat16.
        cos, sin: ``[B, S, P]`` or ``[S, P]`` float32, as returned by `RotaryEmbedding.cos_sin`
            (attention_scaling already applied); the first ``2 * P`` dims of x rotate.
        layout: "half" (pair i = dims i, i+P), "interleaved" (pair i = dims 2i, 2i+1),
            "interleaved_to_half" (reads 2i, 2i+1, writes i, i+P), or a `RopeSpec`, whose
            layout is used and whose head_dim and rotary_dim are checked.
    Returns:
        ``[B, H, S, D]`` in ``x.dtype``; dims past ``2 * P`` unchanged. The rotation runs in
        float32 and is cast back once, right after it.

    >>> x = torch.ones(1, 1, 1, 4)
    >>> apply_rotary(x, torch.zeros(1, 1, 2), torch.ones(1, 1, 2)).tolist()  # 90 degrees
    [[[[-1.0, -1.0, 1.0, 1.0]]]]
    """
    if isinstance(layout, RopeSpec):
        spec, layout = layout, layout.layout
        if x.shape[-1] != spec.head_dim:
            raise ValueError(f"x: last dim {x.shape[-1]} != spec.head_dim {spec.head_dim}")
        if cos.shape[-1] != spec.num_pairs:
            raise ValueError(f"cos/sin: last dim {cos.shape[-1]} != spec.rotary_dim // 2 = {spec.num_pairs}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or a RopeSpec, got {layout!r}")
    pairs = cos.shape[-1]
    rot = 2 * pairs
    if rot > x.shape[-1]:
        raise ValueError(f"cos/sin have {pairs} pairs, more than x's last dim {x.shape[-1]} holds")
    if cos.dim() == 2:
        cos, sin = cos[None, None], sin[None, None]
    else:
        cos, sin = cos[:, None], sin[:, None]
    if layout == "interleaved_to_half":
        x, layout = deinterleave(x, rot), "half"
    xf = x.to(torch.float32)
    if _eager(x):  # exporters and autograd take the plain ops below
        return _rotate_large(x, xf, cos, sin, layout == "interleaved", pairs, rot)
    if layout == "half":
        x1, x2 = xf[..., :pairs], xf[..., pairs:rot]
        parts = [x1 * cos - x2 * sin, x2 * cos + x1 * sin]
    else:
        xr = xf[..., :rot].unflatten(-1, (pairs, 2))
        x1, x2 = xr[..., 0], xr[..., 1]
        parts = [torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)]
    if rot < x.shape[-1]:
        parts.append(xf[..., rot:])
    return torch.cat(parts, dim=-1).to(x.dtype)


# Up to this many elements in q (B=64 decode at 64 heads of 128), a rotation is launch-bound on CPU:
# `_rotate_small`; past it, memory-bound: `_rotate_large`. Measured A/B against the HF-style module
# (tools/eager_vs_hf.py): each path loses where the other one wins.
_SMALL = 1 << 19


def _eager(x: torch.Tensor) -> bool:
    return not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()) and not x.requires_grad


def _widen(cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin over all ``2 * P`` rotary dims, so a rotation is two products and a sum:
    half ``[c, c]``, ``[-s, s]``; interleaved ``[c0, c0, c1, c1, ...]``, ``[-s0, s0, -s1, s1, ...]``."""
    if interleaved:
        return torch.stack((cos, cos), dim=-1).flatten(-2), torch.stack((-sin, sin), dim=-1).flatten(-2)
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def _rotate_large(x, xf, cos, sin, interleaved: bool, pairs: int, rot: int) -> torch.Tensor:
    """`apply_rotary`'s rotation for large tensors (prefill): the same products in the same order
    as the plain ops (bit-identical), written into one output buffer, the fewest memory passes."""
    if rot < x.shape[-1]:
        # Partial rotary: rotate a contiguous copy of the rotary dims, then append the tail.
        # Strided views of a slice of each row vectorise poorly (GPT-J: 64 of 256 dims, in
        # pairs; measured 1.3-1.7x faster this way, the half layout unchanged).
        xr = xf[..., :rot].contiguous()
        out = torch.cat((_rotate_large(xr, xr, cos, sin, interleaved, pairs, rot), xf[..., rot:]), dim=-1)
        return out if x.dtype == torch.float32 else out.to(x.dtype)
    out = torch.empty_like(xf)
    if interleaved:
        src, dst = xf[..., :rot].unflatten(-1, (pairs, 2)), out[..., :rot].unflatten(-1, (pairs, 2))
        x1, x2, o1, o2 = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    else:
        x1, x2, o1, o2 = xf[..., :pairs], xf[..., pairs:rot], out[..., :pairs], out[..., pairs:rot]
    torch.mul(x1, cos, out=o1)
    o1.sub_(x2 * sin)
    torch.mul(x2, cos, out=o2)
    o2.add_(x1 * sin)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


def _rotate_small(x, xf, cos2, sin2, interleaved: bool, rot: int) -> torch.Tensor:
    """`apply_rotary`'s rotation for small tensors (decode) with widened cos/sin (`_widen`, computed
    once for q and k): ``x_rot * cos2 + partner * sin2``, each dim's partner the other dim of its
    pair. Bit-identical to the plain ops (``x1 * c + x2 * (-s)`` is ``x1 * c - x2 * s`` exactly), in
    4 to 6 kernels a tensor instead of 7 to 9: decode-sized calls are launch-bound."""
    xr = xf[..., :rot]
    if interleaved:
        partner = xr.unflatten(-1, (rot // 2, 2)).flip(-1).flatten(-2)
    else:
        partner = torch.cat((xr[..., rot // 2:], xr[..., : rot // 2]), dim=-1)
    out = torch.mul(xr, cos2).add_(partner.mul_(sin2))
    if rot < x.shape[-1]:  # partial rotary: the untouched tail appended
        out = torch.cat((out, xf[..., rot:]), dim=-1)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Applies a `RopeSpec` to q and k.

    Args:
        spec: the rotary description (`RopeSpec.from_hf_config`, `rx.load_preset`, ...).
        backend: "torch" (this module's own ops) or "triton": the fused kernel
            (`rope_export.kernels`), positions -> sin/cos -> rotation of q and k in one launch,
            on CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``).

    ``forward(q, k, position_ids)``:
        q: ``[B, Hq, S, D]``, k: ``[B, Hk, S, D]`` (GQA allowed), same dtype
        (float32 / float16 / bfloat16).
        position_ids: int64 (or int32) ``[B, S]`` for a one-axis spec, ``[A, B, S]`` for an
        A-axis spec (M-RoPE t/h/w, 2D row/column). Taken as given; a batch of 1 is shared by
        every row of q and k, any other batch must equal theirs.
        Returns ``(q_rot, k_rot)`` with the input shapes and dtype.
    """

    def __init__(self, spec: RopeSpec, backend: str = "torch"):
        super().__init__()
        if not isinstance(spec, RopeSpec):
            raise TypeError(f"spec must be a RopeSpec, got {type(spec).__name__}")
        if backend not in ("torch", "triton"):
            raise ValueError(f"backend must be 'torch' or 'triton', got {backend!r}")
        self.spec = spec
        self.backend = backend
        self.register_buffer("inv_freq", torch.tensor(spec.inv_freq, dtype=torch.float32), persistent=False)
        self.register_buffer("axis_of_pair", torch.tensor(spec.axis_of_pair, dtype=torch.int64), persistent=False)
        rule = spec.length_rule
        if isinstance(rule, LongRopeSwitch):
            self.register_buffer("long_inv_freq", torch.tensor(rule.long_inv_freq, dtype=torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return self.spec.describe()

    def _apply(self, fn, recurse: bool = True):
        # .to(device) moves the frequency buffers; .half(), .bfloat16(), .double() or
        # .to(dtype) would round them, and the angles are float32 by design: they are rebuilt
        # from the spec as float32 on whatever device the cast left them.
        super()._apply(fn, recurse)
        tables = {"inv_freq": self.spec.inv_freq}
        if isinstance(self.spec.length_rule, LongRopeSwitch):
            tables["long_inv_freq"] = self.spec.length_rule.long_inv_freq
        for name, values in tables.items():
            buffer = self._buffers[name]
            if buffer.dtype != torch.float32:
                self._buffers[name] = torch.tensor(values, dtype=torch.float32, device=buffer.device)
        return self

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first: refuse with the way that works instead of a TorchScript trace.
        raise TypeError("RotaryEmbedding is not TorchScript-scriptable: export it with torch.onnx.export(dynamo=True) "
                        "or torch.export, trace it with torch.jit.trace, or use rope_export.export_onnx")

    # -------------------------------------------------------------- checks
    def _check_positions(self, position_ids: torch.Tensor) -> None:
        if not isinstance(position_ids, torch.Tensor):
            raise ValueError(f"position_ids must be a torch.Tensor, got {type(position_ids).__name__}")
        if position_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"position_ids must be int64 (or int32), got {position_ids.dtype}")
        axes = self.spec.num_axes
        if axes == 1 and position_ids.dim() != 2:
            raise ValueError(f"position_ids must be [B, S] for a one-axis spec, got rank {position_ids.dim()}")
        if axes > 1 and (position_ids.dim() != 3 or position_ids.shape[0] != axes):
            raise ValueError(
                f"position_ids must be [{axes}, B, S] for a {axes}-axis spec, got shape {tuple(position_ids.shape)} "
                f"(text-only tokens: position_ids.expand({axes}, -1, -1))"
            )

    def _check_inputs(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor) -> None:
        for label, t in (("q", q), ("k", k)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                raise ValueError(f"{label} must be a [B, H, S, D] tensor, got {getattr(t, 'shape', type(t).__name__)}")
            if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                raise ValueError(f"{label} must be float32, float16 or bfloat16, got {t.dtype}")
        if q.dtype != k.dtype:
            raise ValueError(f"q and k must share a dtype, got {q.dtype} and {k.dtype}")
        if q.shape[-1] != self.spec.head_dim or k.shape[-1] != self.spec.head_dim:
            raise ValueError(
                f"q/k head_dim mismatch: q has {q.shape[-1]}, k has {k.shape[-1]}, spec.head_dim is {self.spec.head_dim}"
            )
        self._check_positions(position_ids)
        if torch.compiler.is_exporting():
            return  # the exporter's dynamic dims carry these constraints; a Python branch would specialise them
        batch, seq = q.shape[0], q.shape[2]
        if k.shape[0] != batch or k.shape[2] != seq:
            raise ValueError(f"q [B={batch}, S={seq}] and k [B={k.shape[0]}, S={k.shape[2]}] disagree on batch or sequence")
        pos_batch, pos_seq = position_ids.shape[-2], position_ids.shape[-1]
        if pos_seq != seq:
            raise ValueError(f"position_ids give {pos_seq} positions per row, q and k have S={seq} tokens")
        if pos_batch not in (batch, 1):
            raise ValueError(f"position_ids have batch {pos_batch}, q and k {batch} (batch 1 positions are shared by "
                             "every row; any other batch must match)")

    # ---------------------------------------------------------------- maths
    def inv_freq_at(self, position_ids: torch.Tensor) -> torch.Tensor:
        """The float32 ``[P]`` inverse frequencies in force for these positions.

        Static specs return the table; dynamic NTK and LongRoPE pick by the run-time
        length ``max(position_ids) + 1``, as the reference code does, with tensor ops only.
        """
        rule = self.spec.length_rule
        if rule is None:
            return self.inv_freq
        if position_ids.numel() == 0 and not torch.compiler.is_exporting():
            return self.inv_freq  # no token, no length: max() of nothing is undefined
        last = position_ids.max().to(torch.int64)
        if isinstance(rule, DynamicNTK):
            grown = F.dynamic_ntk_inv_freq(rule.theta, self.spec.rotary_dim, rule.factor, rule.max_position_embeddings, last + 1)
            return torch.where(last >= rule.max_position_embeddings, grown, self.inv_freq)
        # max + 1 > original  <=>  max >= original: one comparison node fewer in the graph.
        return torch.where(last >= rule.original_max_position_embeddings, self.long_inv_freq, self.inv_freq)

    def cos_sin(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token ``(cos, sin)``, each float32 ``[B, S, P]``, attention_scaling applied.

        ``angle[b, s, i] = float32(position_ids[axis_of_pair[i], b, s]) * inv_freq[i]``.
        """
        self._check_positions(position_ids)
        inv_freq = self.inv_freq_at(position_ids)
        pos = position_ids.to(torch.float32)
        if self.spec.num_axes == 1:
            angles = pos[..., None] * inv_freq
        else:
            # The section split is one gather of position streams by axis_of_pair.
            angles = pos.permute(1, 2, 0)[..., self.axis_of_pair] * inv_freq
        cos, sin = angles.cos(), angles.sin()
        if self.spec.attention_scaling != 1.0:
            cos, sin = cos * self.spec.attention_scaling, sin * self.spec.attention_scaling
        return cos, sin

    def forward(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(q, k, position_ids)
        if self.backend == "triton":
            return self._forward_triton(q, k, position_ids)
        cos, sin = self.cos_sin(position_ids)
        layout = self.spec.layout
        if layout != "interleaved_to_half" and q.numel() <= _SMALL and _eager(q) and _eager(k):
            # Decode-sized: one widened cos/sin for both tensors, fewer launches (what they pay for).
            wide, rot = _widen(cos[:, None], sin[:, None], layout == "interleaved"), self.spec.rotary_dim
            return tuple(_rotate_small(x, x.to(torch.float32), *wide, layout == "interleaved", rot) for x in (q, k))
        return apply_rotary(q, cos, sin, layout), apply_rotary(k, cos, sin, layout)

    def _forward_triton(self, q, k, position_ids):
        from .kernels import rotary_triton, triton_available

        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
            raise ValueError("backend='triton' has no backward (the fused kernel is for inference): use backend='torch' "
                             "to train, or run under torch.no_grad() / torch.inference_mode()")
        reason = triton_available(q.device)
        if reason:
            raise ValueError(f"backend='triton': {reason}")
        inv_freq = self.inv_freq_at(position_ids)
        pos = position_ids[None] if position_ids.dim() == 2 else position_ids
        if pos.shape[1] != q.shape[0]:  # the kernel reads positions per row
            pos = pos.expand(-1, q.shape[0], -1)
        if self.spec.layout == "interleaved_to_half":  # a copy, then the half-layout kernel
            q, k = deinterleave(q, self.spec.rotary_dim), deinterleave(k, self.spec.rotary_dim)
        return rotary_triton(q, k, pos, inv_freq, self.axis_of_pair, self.spec.layout == "interleaved",
                             self.spec.rotary_dim, self.spec.attention_scaling)
