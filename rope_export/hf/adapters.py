"""The replacement for one transformers rotary module, checked against the module itself before
`rope_export.hf.patch` swaps anything: which kind of rotary it is (`rotary_kind`), the spec its
config reads as, how it lays cos/sin out, that its outputs equal the spec's at probe positions,
and that its modeling file's apply function rotates as ours does. A per-layer-type rotary
(Gemma 3: ``forward(x, position_ids, layer_type)``) gets one checked adapter per layer type.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import sys
import warnings

import torch
from torch import nn

from ..architectures import KEEPS_FLOAT32, ROTARY_CLASSES, ROTARY_USES
from ..hf_config import layer_types_of
from ..spec import RopeSpec
from .rotary import HFRotary, LayeredRotary, make_apply, widen

__all__ = ["rotary_kind", "build_adapter", "function_layout"]


def rotary_kind(module: nn.Module) -> tuple[str, tuple[str, ...]]:
    """(input kind, apply functions to swap) of a transformers rotary module.

    The vision encoders of `architectures.ROTARY_CLASSES` are known by class. Any other rotary
    qualifies when it is called as ``forward(x, position_ids)`` (or ``forward(x, position_ids,
    layer_type)``, one spec per layer type), its config reads (verified) as a one-axis or M-RoPE
    spec, and its modeling file's ``apply_rotary_pos_emb(q, k, cos, sin, ...)`` (``_interleave``
    for "interleaved_to_half") rotates as ours does (probed at patch time).

    Raises:
        ValueError: why this module cannot be patched.
    """
    cls = type(module).__name__
    if cls in ROTARY_CLASSES:
        return ROTARY_CLASSES[cls]
    params = list(inspect.signature(type(module).forward).parameters)[1:]
    if params not in (["x", "position_ids"], ["x", "position_ids", "layer_type"]):
        raise ValueError(f"forward{tuple(params)}: only forward(x, position_ids[, layer_type]) rotaries are patched")
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError("it carries no config to build a rope spec from")
    specs = [_spec_of(module, "text", t) for t in _layer_types(module)]
    spec = specs[0]
    if len({(s.num_axes, s.layout) for s in specs}) > 1:
        raise ValueError("its layer types differ in axes or pairing; one apply function cannot serve them")
    if spec.num_axes not in (1, 3):
        raise ValueError(f"only one-axis and M-RoPE text rotaries are patched; its spec: {spec.describe()}")
    modeling = sys.modules[type(module).__module__]
    uses = _uses(module)
    if uses:  # DeepSeek V3.2: the attention's and the indexer's apply functions, each checked
        return "text", tuple(function for function, _, _ in uses.values())
    function = "apply_rotary_pos_emb_interleave" if spec.layout == "interleaved_to_half" else "apply_rotary_pos_emb"
    if not hasattr(modeling, function) and hasattr(modeling, "apply_rotary_emb") and spec.num_axes == 1:
        # Meta-style complex freqs_cis (Llama 4 text, DeepSeek V2): apply_rotary_emb(xq, xk, freqs_cis).
        if list(inspect.signature(modeling.apply_rotary_emb).parameters)[:3] != ["xq", "xk", "freqs_cis"]:
            raise ValueError(f"its modeling file {type(module).__module__} has no apply_rotary_emb(xq, xk, freqs_cis)")
        return "complex", ("apply_rotary_emb",)
    apply = getattr(modeling, function, None)
    params = list(inspect.signature(apply).parameters) if apply is not None else []
    if params[:4] != ["q", "k", "cos", "sin"] and params[:3] != ["x", "cos", "sin"]:
        raise ValueError(f"its modeling file {type(module).__module__} has no {function}(q, k, cos, sin, ...) "
                         "or (x, cos, sin, ...)")
    return ("mrope" if spec.num_axes == 3 else "text"), (function,)


def _layer_types(module: nn.Module) -> list:
    """[None] for one rotary; else the layer types the module was built for (Gemma 3 builds the
    ones its config's layers use), which its config must describe."""
    if "layer_type" not in inspect.signature(type(module).forward).parameters:
        return [None]
    types = list(getattr(module, "layer_types", None) or layer_types_of(module.config.to_dict()))
    if not types:
        raise ValueError("it takes a layer_type but its config names no layer types")
    return types


def _uses(module: nn.Module) -> dict:
    """`architectures.ROTARY_USES` of the module's model type ({} for most)."""
    return ROTARY_USES.get(str(getattr(module.config, "model_type", "")), {})


def function_layout(function: str, layout: str) -> str:
    """The pairing a swapped apply function rotates with: the spec's, except a plain
    apply_rotary_pos_emb beside a de-interleaving attention (DeepSeek V3.2's indexer: half)."""
    return "half" if function == "apply_rotary_pos_emb" and layout == "interleaved_to_half" else layout


def _spec_of(module: nn.Module, part: str, layer_type: str | None = None) -> RopeSpec:
    config = module.config
    if layer_type is None and _uses(module):
        # One rotary applied two ways: its cos/sin are the attention's (the first use); each
        # swapped apply function keeps its own pairing (function_layout).
        layer_type = next(iter(_uses(module)))
    name = f"{getattr(config, 'model_type', type(module).__name__)}" + (f":{layer_type}" if layer_type else "")
    try:
        return RopeSpec.from_hf_config(config.to_dict(), part=part, layer_type=layer_type, name=name)
    except ValueError as exc:
        raise ValueError(f"cannot read the rotary description from its config: {exc}") from None


class _AtLayer(nn.Module):
    """A per-layer-type rotary called as a one-rotary module at one layer type (for the checks)."""

    def __init__(self, module: nn.Module, layer_type: str):
        super().__init__()
        self.module, self.layer_type = module, layer_type

    def forward(self, x, position_ids):
        return self.module(x, position_ids, self.layer_type)


def _check_apply(name: str, module: nn.Module, adapter: HFRotary, function: str, modeling) -> None:
    """Refuse a modeling file whose apply function rotates differently from ours (probe
    inputs, the module's own cos/sin): swapping it would change the model."""
    original = getattr(modeling, function)
    if getattr(original, "rope_export_replacement", False):
        return  # already swapped for a twin model: checked then
    replacement = make_apply(function, original, False, adapter.fmt, function_layout(function, adapter.spec.layout))
    one = list(inspect.signature(original).parameters)[:3] == ["x", "cos", "sin"]  # Gemma 4: a tensor a call
    pos = _probe_positions(adapter.kind)
    g = torch.Generator().manual_seed(0)
    if adapter.kind == "complex":
        return _check_complex_apply(name, module, adapter, original, replacement, pos, g)
    with torch.no_grad():
        cos, sin = copy.deepcopy(module).cpu()(torch.zeros(1), pos)
        # The whole head, or only its rotary dims where the attention slices them off first (Phi).
        for width in dict.fromkeys((adapter.spec.head_dim, adapter.spec.rotary_dim)):
            q = torch.randn(1, 2, pos.shape[-1], width, generator=g)
            k = torch.randn(1, 1, pos.shape[-1], width, generator=g)
            try:
                want = original(q, k, cos, sin) if not one else (original(q, cos, sin), original(k, cos, sin))
                break
            except Exception as exc:  # noqa: BLE001 - not this width
                error = exc
        else:
            raise ValueError(f"{name}: its {function} takes neither the head nor its rotary "
                             f"dims ({type(error).__name__}); rope_export does not patch it")
        got = replacement(q, k, cos, sin) if not one else (replacement(q, cos, sin), replacement(k, cos, sin))
    err = max(float((w.float() - g_.float()).abs().max()) for w, g_ in zip(want, got))
    if err > 1e-5:
        raise ValueError(f"{name}: its {function} rotates differently from rope_export's "
                         f"(max |diff| {err:.3g}); rope_export does not patch it")


def _complex_format(name: str, module: nn.Module, spec: RopeSpec) -> str:
    """How a Meta-style apply_rotary_emb(xq, xk, freqs_cis) takes q/k: "complex_bhsd" ([B, H, S, D],
    DeepSeek V2) or "complex_bshd" ([B, S, H, D], Llama 4), told by running it on both (2 heads,
    9 tokens) with the module's own freqs_cis."""
    original = getattr(sys.modules[type(module).__module__], "apply_rotary_emb")
    pos = _probe_positions("text")
    with torch.no_grad():
        freqs = copy.deepcopy(module).cpu()(torch.zeros(1), pos)
        for fmt, shape in (("complex_bhsd", (1, 2, pos.shape[-1], spec.head_dim)),
                           ("complex_bshd", (1, pos.shape[-1], 2, spec.head_dim))):
            try:
                original(torch.zeros(shape), torch.zeros(shape), freqs)
                return fmt
            except RuntimeError:
                continue
    raise ValueError(f"{name}: its apply_rotary_emb takes neither [B, H, S, D] nor [B, S, H, D]; rope_export does not patch it")


def _check_complex_apply(name, module, adapter, original, replacement, pos, g) -> None:
    """apply_rotary_emb(xq, xk, freqs_cis) with the module's complex freqs_cis against the
    replacement with the adapter's (cos, sin) pairs, q/k laid out as the original takes them."""
    tokens, width = pos.shape[-1], adapter.spec.head_dim
    shape = (1, 2, tokens, width) if adapter.fmt == "complex_bhsd" else (1, tokens, 2, width)
    with torch.no_grad():
        freqs = copy.deepcopy(module).cpu()(torch.zeros(1), pos)
        packed = copy.deepcopy(adapter).cpu()(torch.zeros(1), pos)  # a CUDA model's adapter stays on CUDA
        q, k = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        want, got = original(q, k, freqs), replacement(q, k, packed)
    err = max(float((w.float() - g_.float()).abs().max()) for w, g_ in zip(want, got))
    if err > 1e-5:
        raise ValueError(f"{name}: its apply_rotary_emb rotates differently from rope_export's "
                         f"(max |diff| {err:.3g}); rope_export does not patch it")


def build_adapter(name: str, module: nn.Module, kind_functions) -> HFRotary | LayeredRotary:
    """The replacement for one rotary module, checked against the module itself (for each of
    its layer types, a per-layer-type rotary)."""
    cls = type(module).__name__
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError(f"{name} ({cls}) carries no config to build a rope spec from")
    types = _layer_types(module)
    if types == [None]:
        return _build(f"{name} ({cls})", module, module, kind_functions, None)
    return LayeredRotary({t: _build(f"{name} ({cls}, {t})", _AtLayer(module, t), module, kind_functions, t) for t in types})


def _build(name: str, module: nn.Module, source: nn.Module, kind_functions, layer_type) -> HFRotary:
    """One adapter; ``module`` is called as ``module(x, position_ids)``, ``source`` is the
    transformers module itself (its class, config and modeling file)."""
    cls = type(source).__name__
    kind, functions = kind_functions
    try:
        spec = _spec_of(source, "text" if kind in ("text", "mrope", "complex") else "vision", layer_type)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    config = source.config
    grid = None
    if kind == "llama4_vision":
        grid = int(config.image_size) // int(config.patch_size)
    fmt = (_format_of(module, spec, kind) if kind in ("text", "mrope") else
           _complex_format(name, source, spec) if kind == "complex" else "cat")
    # On the module's device whichever check runs below (a CUDA model gets a CUDA adapter).
    adapter = HFRotary(spec, kind, keep_float32=cls in KEEPS_FLOAT32, grid=grid, fmt=fmt).to(_device_of(module))
    rounded = {b.dtype for b in module.buffers() if b.is_floating_point() and b.dtype != torch.float32}
    if len(rounded) == 1:
        # A model cast with .to(bfloat16) rounds its inv_freq buffer, and transformers computes
        # the angles from the rounded values: check against those, then use the config's.
        (dtype,) = rounded
        as_cast = tuple(torch.tensor(spec.inv_freq).to(dtype).float().tolist())
        _check_same_outputs(name, module, HFRotary(dataclasses.replace(spec, inv_freq=as_cast), kind,
                                                   keep_float32=adapter.keep_float32, grid=grid, fmt=fmt))
        warnings.warn(f"{name} holds its frequencies in {str(dtype).replace('torch.', '')} (the model was cast "
                      "with .to()), so transformers computes its angles from rounded frequencies; the patched module "
                      "uses the config's float32 values, and outputs differ from the unpatched model by that rounding",
                      stacklevel=3)
    else:
        _check_same_outputs(name, module, adapter)
    if cls not in ROTARY_CLASSES:
        for function in functions:
            _check_apply(name, module, adapter, function, sys.modules[type(source).__module__])
    return adapter


def _format_of(module: nn.Module, spec: RopeSpec, kind: str) -> str:
    """How the module lays its angles out in cos (`rotary.FORMATS`): the format whose widening
    of the spec's cos is closest to the module's own at probe positions (the output check that
    follows refuses the module when even that one is off)."""
    device = _device_of(module)
    pos = _probe_positions(kind).to(device)
    with torch.no_grad():
        want = copy.deepcopy(module)(torch.zeros(1, device=device), pos)[0].float()
        ours = HFRotary(spec, kind, fmt="once").to(device)(torch.zeros(1, device=device), pos)[0].float()
    if want.shape[-1] == ours.shape[-1]:
        return "once"
    errors = {f: float((want - widen(ours, f)).abs().max()) for f in ("cat", "interleave")}
    return min(errors, key=errors.get)


def _device_of(module: nn.Module) -> torch.device:
    return next((b.device for b in module.buffers()), torch.device("cpu"))


def _probe_positions(kind: str) -> torch.Tensor:
    steps = torch.tensor([0, 1, 2, 3, 7, 31, 100, 1000, 4000])
    if kind in ("text", "complex"):
        return steps[None]
    if kind == "mrope":  # three different streams, as an image grid gives
        return torch.stack([steps, steps // 2 + 1, (steps * 3) % 97])[:, None]
    return torch.stack([steps % 37, (steps * 7) % 41], dim=-1)  # [N, 2] rows, columns


def _check_same_outputs(name: str, module: nn.Module, adapter: HFRotary) -> None:
    """Refuse a rotary module whose outputs differ from what its config describes: a
    customised module we would silently change."""
    device = _device_of(module)
    adapter.to(device)
    probe = copy.deepcopy(module)  # dynamic rules update buffers; leave the model's untouched
    x = torch.zeros(1, device=device)
    with torch.no_grad():
        if adapter.kind == "llama4_vision":
            freqs = probe(x)[:, 0]
            want, got = (freqs.real, freqs.imag), adapter(x)
        elif adapter.kind == "complex":  # freqs_cis [B, S, P] against our [B, S, P, 2] (cos, sin)
            pos = _probe_positions("text").to(device)
            freqs, packed = probe(x, pos), adapter(x, pos)
            want, got = (freqs.real, freqs.imag), packed.unbind(-1)
        else:
            pos = _probe_positions(adapter.kind).to(device)
            want, got = probe(x, pos), adapter(x, pos)
    for label, w, g in zip(("cos", "sin"), want, got):
        w, g = w.float(), g.float()
        if w.shape != g.shape:
            raise ValueError(f"{name} gives {label} of shape {tuple(w.shape)}, rope_export "
                             f"{tuple(g.shape)}: the module was customised in a way rope_export does not recognise")
        err = float((w - g).abs().max())
        # Same float32 operations on both sides; 1e-5 admits a few ulps of sin/cos at angles near 4000.
        if err > 1e-5:
            raise ValueError(f"{name}: its {label} differs from its config's rotary by "
                             f"{err:.3g} (spec: {adapter.spec.describe()}): the module was customised in a way "
                             "rope_export does not recognise")
