"""The pieces `patch` swaps in: `HFRotary`, which stands in for a transformers rotary module,
and the replacements for the modeling files' apply functions, which rotate with the standard
ONNX ``RotaryEmbedding`` op when exported (dynamo: ``torch.onnx.ops.rotary_embedding``;
TorchScript: a custom op with a registered symbolic) and with float32 torch ops otherwise.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from ..export.forms import FUSED_OPSET
from ..export.ops import rotary_op
from ..modules import RotaryEmbedding, apply_rotary, deinterleave
from ..positions import patch_grid_positions
from ..spec import RopeSpec

__all__ = ["HFRotary", "LayeredRotary", "make_apply", "FORMATS", "widen", "angles_of"]


# ------------------------------------------------------------------------ rotation
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str, fused: bool) -> torch.Tensor:
    """x ``[B, H, S, D]``; cos/sin ``[B, S, P]`` (P = rotary_dim / 2) -> rotated x."""
    rotary_dim = 2 * cos.shape[-1]
    if layout == "interleaved_to_half":
        x, layout = deinterleave(x, rotary_dim), "half"
    interleaved = layout == "interleaved"
    if fused and torch.compiler.is_exporting():
        return torch.onnx.ops.rotary_embedding(x, cos.to(x.dtype), sin.to(x.dtype), interleaved=interleaved,
                                               num_heads=x.shape[1], rotary_embedding_dim=rotary_dim)
    if fused and torch.jit.is_tracing():
        _register_legacy_symbolic()
        return rotary_op(x, cos.to(x.dtype), sin.to(x.dtype), int(interleaved), rotary_dim, x.shape[1])
    return apply_rotary(x, cos.float(), sin.float(), layout)


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


# How a model's rotary lays its P angles out in cos/sin: "cat" (twice, [c, c]: most models),
# "interleave" (each twice in a row, [c0, c0, c1, c1, ...]: Cohere) or "once" ([c]: gpt-oss,
# GPT-J); Meta-style complex freqs_cis [B, S, P], by how its apply_rotary_emb takes q/k:
# "complex_bhsd" ([B, H, S, D]: DeepSeek V2) or "complex_bshd" ([B, S, H, D]: Llama 4).
FORMATS = ("cat", "interleave", "once", "complex_bhsd", "complex_bshd")


def _half(cos: torch.Tensor) -> torch.Tensor:
    # transformers' cos/sin repeat the P angles twice ([c, c]); the op takes them once.
    return cos[..., : cos.shape[-1] // 2]


def angles_of(cos: torch.Tensor, fmt: str) -> torch.Tensor:
    """The P angles' cos (or sin) out of a model's ``fmt`` layout."""
    return _half(cos) if fmt == "cat" else cos[..., 0::2] if fmt == "interleave" else cos


def widen(cos: torch.Tensor, fmt: str) -> torch.Tensor:
    """The P angles in a model's ``fmt`` layout (inverse of `angles_of`)."""
    if fmt == "cat":
        return torch.cat((cos, cos), dim=-1)
    return cos.repeat_interleave(2, dim=-1) if fmt == "interleave" else cos


def _batch(cos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # The op wants cos/sin per batch row; broadcast a shared [1, S, P] only when it must.
    return cos if cos.shape[0] == x.shape[0] else cos.expand(x.shape[0], -1, -1)


def make_apply(site, fused: bool, fmt: str = "cat", layout: str = "half"):
    """The replacement for one apply function (an `apply_site.ApplySite`), taking what the
    original takes (`ApplySite.form`): the model's cos/sin come in ``fmt`` (`FORMATS`), its pairs
    follow ``layout`` (a `RopeSpec` layout)."""
    form, original = site.form, site.original
    if form == "sincos":  # GPT-J / CodeGen: apply_rotary_pos_emb(tensor, sin, cos), sin/cos [B, S, P]
        def table_apply(tensor, sin, cos):
            x = tensor.transpose(1, 2)  # [B, S, H, R] -> [B, H, S, R]
            return _rotate(x, _batch(cos, x), _batch(sin, x), "interleaved", fused).transpose(1, 2)

        return _tagged(table_apply, site)
    if form in ("qk", "x"):
        # Taken as the original takes them: (q, k, cos, sin, [position_ids,] unsqueeze_dim=1), or
        # one tensor at a time, (x, cos, sin, unsqueeze_dim=1) (Gemma 4).
        params = inspect.signature(site.function).parameters
        fixed = 3 if form == "x" else 4
        slot = list(params).index("unsqueeze_dim") - fixed if "unsqueeze_dim" in params else None
        default = params["unsqueeze_dim"].default if slot is not None else 1

        def rotate(tensors, cos, sin, args, kwargs):
            given = args[slot] if slot is not None and len(args) > slot else default
            unsqueeze_dim = kwargs.get("unsqueeze_dim", given)
            # cos/sin: [B, S, R] (unsqueeze_dim 1 or 2) or [S, R] (unsqueeze_dim 0, Pixtral).
            cos, sin = angles_of(cos, fmt), angles_of(sin, fmt)
            if cos.dim() == 2:
                cos, sin = cos[None], sin[None]
            heads_second = unsqueeze_dim != 2  # q/k [B, H, S, D]; else [B, S, H, D]
            out = []
            for x in tensors:
                if x is None:  # Mistral Large 4 rotates a query alone
                    out.append(None)
                    continue
                xt = x if heads_second else x.transpose(1, 2)
                c, s = _batch(cos, xt), _batch(sin, xt)
                y = _rotate(xt, c, s, layout, fused)
                out.append(y if heads_second else y.transpose(1, 2))
            return tuple(out)

        if fixed == 3:
            def apply_rotary_pos_emb(x, cos, sin, *args, **kwargs):
                return rotate((x,), cos, sin, args, kwargs)[0]
        else:
            def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
                return rotate((q, k), cos, sin, args, kwargs)

        return _tagged(apply_rotary_pos_emb, site)
    if form == "packed":
        def apply_rotary_pos_emb_vision(q, k, cos, sin):
            # q/k [N, H, D] (one packed sequence), cos/sin [N, D] float32.
            c, s = _half(cos)[None], _half(sin)[None]
            return tuple(_rotate(x.transpose(0, 1)[None], c, s, "half", fused)[0].transpose(0, 1) for x in (q, k))

        return _tagged(apply_rotary_pos_emb_vision, site)
    if form == "complex":
        return _tagged(_complex_apply(original, fused, fmt), site)

    def vision_apply_rotary_emb(query, key, freqs_ci):
        if isinstance(freqs_ci, torch.Tensor):  # an unpatched Llama 4 model's complex table
            return original(query, key, freqs_ci)
        cos, sin = freqs_ci  # [S, P] each, from HFRotary
        out = []
        for x in (query, key):  # [B, S, H, D]
            c, s = _batch(cos[None], x), _batch(sin[None], x)
            out.append(_rotate(x.transpose(1, 2), c, s, "interleaved", fused).transpose(1, 2))
        return tuple(out)

    return _tagged(vision_apply_rotary_emb, site)


def _tagged(fn, site):
    fn.__name__ = fn.__qualname__ = site.name
    fn.rope_export_replacement = True
    return fn


def _complex_apply(original, fused: bool, fmt: str):
    heads_second = fmt == "complex_bhsd"

    def apply_rotary_emb(xq, xk, freqs_cis):
        if freqs_cis.is_complex():  # an unpatched model of this architecture's complex table
            return original(xq, xk, freqs_cis)
        cos, sin = freqs_cis.unbind(-1)  # [B, S, P] each, from HFRotary(kind="complex")
        out = []
        for x in (xq, xk):
            xt = x if heads_second else x.transpose(1, 2)
            y = _rotate(xt, _batch(cos, xt), _batch(sin, xt), "interleaved", fused)
            out.append(y if heads_second else y.transpose(1, 2))
        return tuple(out)

    return apply_rotary_emb


# ------------------------------------------------------------------- rotary module
class HFRotary(nn.Module):
    """Stands in for a transformers rotary module: same call, same output format, computed by
    `rope_export.RotaryEmbedding.cos_sin` (explicit float32 sin/cos, one gather for M-RoPE/2D).

    Args:
        spec: from the model's config (`RopeSpec.from_hf_config`).
        kind: "text" (position_ids ``[B, S]``), "mrope" (``[3, B, S]`` or ``[B, S]``), "complex"
            (``[B, S]``; Meta-style models that apply a complex freqs_cis: returns float32
            ``[B, S, P, 2]`` (cos, sin) for the swapped apply_rotary_emb),
            "vision_hw" (``[N, 2]`` row/column per patch) or "llama4_vision" (no positions:
            the fixed patch grid plus a class token).
        keep_float32: return float32 cos/sin (Qwen vision encoders) instead of ``x.dtype``.
        fmt: how the model lays the P angles out in cos/sin (`FORMATS`): "cat" (``[c, c]``,
            transformers' usual format), "interleave" (``[c0, c0, c1, c1, ...]``) or "once".
        grid: patches per side (llama4_vision only).
        sin_first: return ``(sin, cos)``, as GPT-J's rotary does (transformers 5.25).
    Returns (forward): ``(cos, sin)``: ``[B, S, R]`` (text), ``[N, R]`` (vision_hw), R =
    rotary_dim (P for "once"); llama4_vision: ``[S, P]`` each.
    """

    def __init__(self, spec: RopeSpec, kind: str, *, keep_float32: bool = False, grid: int | None = None,
                 fmt: str = "cat", sin_first: bool = False):
        super().__init__()
        if kind not in ("llama4_vision", "text", "mrope", "complex") and spec.layout != "half":
            raise ValueError(f"{kind} rotary modules use the half layout; the spec says {spec.layout!r}")
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
        self.spec, self.kind, self.keep_float32, self.fmt, self.sin_first = spec, kind, keep_float32, fmt, sin_first
        self.apply_layouts: dict = {}  # {apply function: the pairing its replacement rotates with} (`patch`)
        self.rope = RotaryEmbedding(spec)
        if kind == "llama4_vision":
            self.register_buffer("positions", patch_grid_positions(grid, grid, offset=1, cls_token="last"), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, fmt={self.fmt}" + (", sin_first=True" if self.sin_first else "")

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None):
        if self.kind == "llama4_vision":
            cos, sin = self.rope.cos_sin(self.positions)
            return cos[0], sin[0]
        if self.kind == "complex":  # in place of Meta's complex freqs_cis: [B, S, P, 2] (cos, sin)
            return torch.stack(self.rope.cos_sin(position_ids), dim=-1)
        if self.kind == "mrope" and position_ids.dim() == 2:
            position_ids = position_ids[None].expand(self.spec.num_axes, -1, -1)
        vision = self.kind == "vision_hw"
        if vision:
            position_ids = position_ids.transpose(0, 1)[:, None]  # [N, 2] -> [2, 1, N]
        cos, sin = self.rope.cos_sin(position_ids)
        cos, sin = widen(cos, self.fmt), widen(sin, self.fmt)
        if vision:
            cos, sin = cos[0], sin[0]
        if not self.keep_float32:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return (sin, cos) if self.sin_first else (cos, sin)


class LayeredRotary(nn.Module):
    """Stands in for a per-layer-type transformers rotary (Gemma 3: ``forward(x, position_ids,
    layer_type)``): one `HFRotary` per layer type, each built from that type's spec.

    Args:
        adapters: {layer type: HFRotary}, all of one kind, cos/sin format and pairing.
    Returns (forward): the ``(cos, sin)`` of ``layer_type``'s adapter.
    """

    def __init__(self, adapters: dict):
        super().__init__()
        first = next(iter(adapters.values()))
        if len({(a.kind, a.fmt, a.spec.layout) for a in adapters.values()}) > 1:
            raise ValueError("the layer types' rotaries differ in kind, cos/sin format or pairing")
        self.adapters = nn.ModuleDict(adapters)
        self.kind, self.fmt, self.spec = first.kind, first.fmt, first.spec
        self.apply_layouts = getattr(first, "apply_layouts", {})

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str):
        if layer_type not in self.adapters:
            raise KeyError(f"no rotary for layer type {layer_type!r} (patched: {', '.join(self.adapters)})")
        return self.adapters[layer_type](x, position_ids)
