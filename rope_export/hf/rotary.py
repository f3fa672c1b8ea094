"""The pieces `patch` swaps in: `HFRotary`, which stands in for a transformers rotary module,
and the replacements for the modeling files' apply functions, which rotate with the standard
ONNX ``RotaryEmbedding`` op when exported (dynamo: ``torch.onnx.ops.rotary_embedding``;
TorchScript: a custom op with a registered symbolic) and with float32 torch ops otherwise.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..export.forms import FUSED_OPSET
from ..export.ops import rotary_op
from ..modules import RotaryEmbedding, apply_rotary
from ..positions import patch_grid_positions
from ..spec import RopeSpec

__all__ = ["HFRotary", "make_apply"]


# ------------------------------------------------------------------------ rotation
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, fused: bool) -> torch.Tensor:
    """x ``[B, H, S, D]``; cos/sin ``[B, S, P]`` (P = rotary_dim / 2) -> rotated x."""
    rotary_dim = 2 * cos.shape[-1]
    if fused and torch.compiler.is_exporting():
        return torch.onnx.ops.rotary_embedding(x, cos.to(x.dtype), sin.to(x.dtype), interleaved=interleaved,
                                               num_heads=x.shape[1], rotary_embedding_dim=rotary_dim)
    if fused and torch.jit.is_tracing():
        _register_legacy_symbolic()
        return rotary_op(x, cos.to(x.dtype), sin.to(x.dtype), int(interleaved), rotary_dim, x.shape[1])
    return apply_rotary(x, cos.float(), sin.float(), "interleaved" if interleaved else "half")


@functools.cache
def _register_legacy_symbolic() -> None:
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args("v", "v", "v", "i", "i", "i")
    def symbolic(g, x, cos, sin, interleaved, rotary_dim, num_heads):
        if g.opset < FUSED_OPSET:
            raise ValueError(f"rope_export's fused rotary needs opset {FUSED_OPSET} (RotaryEmbedding); got opset "
                             f"{g.opset}: export with opset_version={FUSED_OPSET} or patch(model, fused=False)")
        return g.op("RotaryEmbedding", x, cos, sin, interleaved_i=interleaved, rotary_embedding_dim_i=rotary_dim,
                    num_heads_i=num_heads)

    torch.onnx.register_custom_op_symbolic("rope_export::rotary_embedding", symbolic, 1)


def _half(cos: torch.Tensor) -> torch.Tensor:
    # transformers' cos/sin repeat the P angles twice ([c, c]); the op takes them once.
    return cos[..., : cos.shape[-1] // 2]


def _batch(cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # The op wants cos/sin per batch row; broadcast a shared [1, S, P] only when it must.
    return cos if cos.shape[0] == x.shape[0] else cos.expand(x.shape[0], -1, -1)


def make_apply(kind_fn: str, original, fused: bool):
    """The replacement for one module-level apply function."""
    if kind_fn == "apply_rotary_pos_emb":
        def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
            # cos/sin: [B, S, R] (unsqueeze_dim 1 or 2) or [S, R] (unsqueeze_dim 0, Pixtral).
            cos, sin = _half(cos), _half(sin)
            if cos.dim() == 2:
                cos, sin = cos[None], sin[None]
            heads_second = unsqueeze_dim != 2  # q/k [B, H, S, D]; else [B, S, H, D]
            out = []
            for x in (q, k):
                xt = x if heads_second else x.transpose(1, 2)
                c, s = _batch(cos, xt), _batch(sin, xt)
                y = _rotate(xt, c, s, False, fused)
                out.append(y if heads_second else y.transpose(1, 2))
            return tuple(out)

        return apply_rotary_pos_emb
    if kind_fn == "apply_rotary_pos_emb_vision":
        def apply_rotary_pos_emb_vision(q, k, cos, sin):
            # q/k [N, H, D] (one packed sequence), cos/sin [N, D] float32.
            c, s = _half(cos)[None], _half(sin)[None]
            return tuple(_rotate(x.transpose(0, 1)[None], c, s, False, fused)[0].transpose(0, 1) for x in (q, k))

        return apply_rotary_pos_emb_vision

    def vision_apply_rotary_emb(query, key, freqs_ci):
        if isinstance(freqs_ci, torch.Tensor):  # an unpatched Llama 4 model's complex table
            return original(query, key, freqs_ci)
        cos, sin = freqs_ci  # [S, P] each, from HFRotary
        out = []
        for x in (query, key):  # [B, S, H, D]
            c, s = _batch(cos[None], x), _batch(sin[None], x)
            out.append(_rotate(x.transpose(1, 2), c, s, True, fused).transpose(1, 2))
        return tuple(out)

    return vision_apply_rotary_emb


# ------------------------------------------------------------------- rotary module
class HFRotary(nn.Module):
    """Stands in for a transformers rotary module: same call, same output format, computed by
    `rope_export.RotaryEmbedding.cos_sin` (explicit float32 sin/cos, one gather for M-RoPE/2D).

    Args:
        spec: from the model's config (`RopeSpec.from_hf_config`).
        kind: "text" (position_ids ``[B, S]``), "mrope" (``[3, B, S]`` or ``[B, S]``),
            "vision_hw" (``[N, 2]`` row/column per patch) or "llama4_vision" (no positions:
            the fixed patch grid plus a class token).
        keep_float32: return float32 cos/sin (Qwen vision encoders) instead of ``x.dtype``.
        grid: patches per side (llama4_vision only).
    Returns (forward): ``(cos, sin)``: ``[B, S, R]`` (text), ``[N, R]`` (vision_hw), R =
    rotary_dim with the P angles repeated twice; llama4_vision: ``[S, P]`` each, no repeat.
    """

    def __init__(self, spec: RopeSpec, kind: str, *, keep_float32: bool = False, grid: int | None = None):
        super().__init__()
        if kind != "llama4_vision" and spec.layout != "half":
            raise ValueError(f"{kind} rotary modules use the half layout; the spec says {spec.layout!r}")
        self.spec, self.kind, self.keep_float32 = spec, kind, keep_float32
        self.rope = RotaryEmbedding(spec)
        if kind == "llama4_vision":
            self.register_buffer("positions", patch_grid_positions(grid, grid, offset=1, cls_token="last"), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind}"

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None):
        if self.kind == "llama4_vision":
            cos, sin = self.rope.cos_sin(self.positions)
            return cos[0], sin[0]
        if self.kind == "mrope" and position_ids.dim() == 2:
            position_ids = position_ids[None].expand(self.spec.num_axes, -1, -1)
        vision = self.kind == "vision_hw"
        if vision:
            position_ids = position_ids.transpose(0, 1)[:, None]  # [N, 2] -> [2, 1, N]
        cos, sin = self.rope.cos_sin(position_ids)
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        if vision:
            cos, sin = cos[0], sin[0]
        if not self.keep_float32:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return cos, sin


