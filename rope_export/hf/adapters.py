"""The replacement for one transformers rotary module, checked against the module itself before
`rope_export.hf.patch` swaps anything: which kind of rotary it is and which apply functions its
attention calls (`rotary_kind`), the spec its config reads as, how it lays cos/sin out, that its
outputs equal the spec's at probe positions, and that each apply function rotates as ours does
(`rope_export.hf.behaviour`, the same check the coverage probe runs). A per-layer-type rotary
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

from ..architectures import KEEPS_FLOAT32, ROTARY_CLASSES, superseded
from ..hf_config import layer_types_of, rotary_uses
from ..spec import RopeSpec
from .apply_site import ApplySite, transformers_version
from .behaviour import (call_rotary, complex_layout, device_of, max_error, probe_positions, random_qk, rotation,
                        vision_rotation)
from .rotary import HFRotary, LayeredRotary, make_apply, widen
from .sources import apply_names

__all__ = ["rotary_kind", "build_adapter", "function_layout"]

# A replacement rotates as the original when every probe output agrees to this (float32 on
# both sides, the same operations up to a few ulps of sin/cos at angles near 4000).
APPLY_TOLERANCE = 1e-5


def rotary_kind(module: nn.Module, config=None) -> tuple[str, tuple[str, ...]]:
    """(input kind, apply functions to swap) of a transformers rotary module; ``config``: the
    one it was built from, where the module keeps none (GPT-J in transformers 5.25).

    The vision encoders of `architectures.ROTARY_CLASSES` are known by class. Any other rotary
    qualifies when it is called as ``forward(x, position_ids)`` (or ``forward(x, position_ids,
    layer_type)``, one spec per layer type), its config reads (verified) as a one-axis or M-RoPE
    spec, and its modeling file's source shows which apply function its attention calls
    (`sources.apply_names`) in a calling convention rope_export knows (`ApplySite.form`); that
    function's rotation is probed at patch time (`build_adapter`).

    Raises:
        ValueError: why this module cannot be patched.
    """
    cls = type(module).__name__
    if cls in ROTARY_CLASSES:
        return ROTARY_CLASSES[cls]
    params = list(inspect.signature(type(module).forward).parameters)[1:]
    if params not in (["x", "position_ids"], ["x", "position_ids", "layer_type"]):
        raise ValueError(f"forward{tuple(params)}: only forward(x, position_ids[, layer_type]) rotaries are patched")
    config = _config(module, config)
    types = _layer_types(module, config)
    specs = [_spec_of(config, "text", t) for t in types]
    spec = specs[0]
    if len({(s.num_axes, s.layout) for s in specs}) > 1:
        raise ValueError("its layer types differ in axes or pairing; one apply function cannot serve them")
    if spec.num_axes not in (1, 3):
        raise ValueError(f"only one-axis and M-RoPE text rotaries are patched; its spec: {spec.describe()}")
    probe = copy.deepcopy(module)  # dynamic rules update buffers; leave the model's untouched
    (_, second), _ = call_rotary(probe if types == [None] else _AtLayer(probe, types[0]),
                                 probe_positions("mrope" if spec.num_axes == 3 else "text"))
    complex_freqs = second is None
    modeling = sys.modules[type(module).__module__]
    names = apply_names(modeling, config, cls, complex_freqs=complex_freqs, uses=rotary_uses(config.to_dict()))
    if not names:
        raise ValueError(f"its modeling file {modeling.__name__} shows no apply function its attention calls that "
                         f"rope_export can tell (transformers {transformers_version()})")
    forms = {name: ApplySite(modeling.__name__, name).form for name in names}  # unknown signatures raise here
    if complex_freqs != all(form == "complex" for form in forms.values()):
        raise ValueError(f"its rotary returns {'a complex freqs_cis' if complex_freqs else '(cos, sin)'}, yet its "
                         f"attention calls {', '.join(f'{n} ({f})' for n, f in forms.items())}")
    return ("complex" if complex_freqs else "mrope" if spec.num_axes == 3 else "text"), names


def _config(module: nn.Module, config=None):
    config = getattr(module, "config", None) or config
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError("it carries no config to build a rope spec from, nor does the model that holds it")
    return config


def _layer_types(module: nn.Module, config) -> list:
    """[None] for one rotary; else the layer types the module was built for (Gemma 3 builds the
    ones its config's layers use), which its config must describe."""
    if "layer_type" not in inspect.signature(type(module).forward).parameters:
        return [None]
    types = list(getattr(module, "layer_types", None) or layer_types_of(config.to_dict()))
    if not types:
        raise ValueError("it takes a layer_type but its config names no layer types")
    return types


def function_layout(function: str, layout: str, uses: dict | None = None) -> str:
    """The pairing a swapped apply function rotates with: the spec's, or, for one rotary
    applied two ways (`architectures.ROTARY_USES`: DeepSeek V3.2's indexer, half pairs), the
    pairing of the use that calls this function."""
    for use_function, use_layout, _ in (uses or {}).values():
        if use_function == function:
            return use_layout
    return layout


def _spec_of(config, part: str, layer_type: str | None = None) -> RopeSpec:
    data = config.to_dict()
    if layer_type is None and rotary_uses(data, part):
        # One rotary applied two ways: its cos/sin are the attention's (the first use); each
        # swapped apply function keeps its own pairing (function_layout).
        layer_type = next(iter(rotary_uses(data, part)))
    name = f"{getattr(config, 'model_type', '')}" + (f":{layer_type}" if layer_type else "")
    try:
        return RopeSpec.from_hf_config(data, part=part, layer_type=layer_type, name=name)
    except ValueError as exc:
        raise ValueError(f"cannot read the rotary description from its config: {exc}") from None


class _AtLayer(nn.Module):
    """A per-layer-type rotary called as a one-rotary module at one layer type (for the checks)."""

    def __init__(self, module: nn.Module, layer_type: str):
        super().__init__()
        self.module, self.layer_type = module, layer_type

    def forward(self, x, position_ids):
        return self.module(x, position_ids, self.layer_type)


def _positions(adapter: HFRotary) -> torch.Tensor:
    kind = "text" if adapter.kind == "complex" else adapter.kind
    return probe_positions(kind, adapter.spec.max_position_embeddings if kind != "vision_hw" else None)


def _check_apply(name: str, module: nn.Module, adapter: HFRotary, site: ApplySite, model: nn.Module | None) -> None:
    """Refuse an apply function (or a kernelized copy of it the model runs) that rotates
    differently from its replacement, the model's own rotary output given to both (the complex
    kind: the adapter's (cos, sin) pairs to the replacement): swapping it would change the model."""
    replacement = make_apply(site, False, adapter.fmt, adapter.apply_layouts[site.name])
    outputs, pos = call_rotary(copy.deepcopy(module), _positions(adapter))
    ours = outputs
    if adapter.kind == "complex":
        with torch.no_grad():
            ours = (copy.deepcopy(adapter)(torch.zeros(1, device=pos.device), pos), None)
    q, k = (t.to(pos.device) for t in random_qk(adapter.spec.head_dim, pos.shape[-1]))
    width = adapter.spec.rotary_dim
    try:
        got = rotation(replacement, site.form, q, k, *ours, rotary_dim=width)
    except ValueError as exc:
        raise ValueError(f"{name}: rope_export's {site.name} cannot run the model's probe: {exc}") from None
    for label, implementation in site.implementations(model):
        try:
            want = rotation(implementation, site.form, q, k, *outputs, rotary_dim=width)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name}: {label}: {exc}; rope_export does not patch it") from None
        err = max_error(want, got)
        if not err <= APPLY_TOLERANCE:
            note = superseded(adapter.spec.name.partition(":")[0], transformers_version())
            raise ValueError(f"{name}: {label} rotates differently from rope_export's (max |diff| {err:.3g}); "
                             "rope_export does not patch it" + (f" ({note}: upgrade transformers)" if note else ""))


def _check_vision_apply(name: str, module: nn.Module, adapter: HFRotary, site: ApplySite, model) -> None:
    """A vision encoder's apply function (Qwen-VL's packed one, Pixtral's, Llama 4's) against its
    replacement on packed probe patches, each fed its own rotary's output."""
    replacement = make_apply(site, False, adapter.fmt, adapter.apply_layouts[site.name])
    device = device_of(module)
    x = torch.zeros(1, device=device)
    with torch.no_grad():
        if adapter.kind == "llama4_vision":
            theirs, ours = (copy.deepcopy(module)(x), None), copy.deepcopy(adapter)(x)
        else:
            pos = probe_positions("vision_hw").to(device)
            theirs, ours = copy.deepcopy(module)(x, pos), copy.deepcopy(adapter)(x, pos)
    tokens = theirs[0].shape[0]
    q, k = (t[0].transpose(0, 1).to(device) for t in random_qk(adapter.spec.head_dim, tokens, heads=(2, 2)))
    try:
        got = vision_rotation(replacement, site.form, q, k, *ours)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: rope_export's {site.name} cannot run the model's probe: {exc}") from None
    for label, implementation in site.implementations(model):
        try:
            want = vision_rotation(implementation, site.form, q, k, *theirs)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ValueError(f"{name}: {label}: {type(exc).__name__}: {exc}; rope_export does not patch it") from None
        err = max_error(want, got)
        if not err <= APPLY_TOLERANCE:
            raise ValueError(f"{name}: {label} rotates differently from rope_export's (max |diff| {err:.3g}); "
                             "rope_export does not patch it")


def build_adapter(name: str, module: nn.Module, kind_functions, model: nn.Module | None = None,
                  config=None) -> HFRotary | LayeredRotary:
    """The replacement for one rotary module, checked against the module itself (for each of
    its layer types, a per-layer-type rotary) and against the apply functions ``model`` runs;
    ``config``: the one it was built from, where the module keeps none."""
    cls = type(module).__name__
    try:
        config = _config(module, config)
    except ValueError as exc:
        raise ValueError(f"{name} ({cls}): {exc}") from None
    types = _layer_types(module, config)
    if types == [None]:
        return _build(f"{name} ({cls})", module, module, config, kind_functions, None, model)
    return LayeredRotary({t: _build(f"{name} ({cls}, {t})", _AtLayer(module, t), module, config, kind_functions, t, model)
                          for t in types})


def _build(name: str, module: nn.Module, source: nn.Module, config, kind_functions, layer_type, model) -> HFRotary:
    """One adapter; ``module`` is called as ``module(x, position_ids)``, ``source`` is the
    transformers module itself (its class and modeling file), ``config`` the one it was built from."""
    cls = type(source).__name__
    kind, functions = kind_functions
    try:
        spec = _spec_of(config, "text" if kind in ("text", "mrope", "complex") else "vision", layer_type)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    grid = int(config.image_size) // int(config.patch_size) if kind == "llama4_vision" else None
    sites = [ApplySite(type(source).__module__, f) for f in functions]
    fmt, sin_first = _format_of(name, module, spec, kind, sites)
    # On the module's device whichever check runs below (a CUDA model gets a CUDA adapter).
    adapter = HFRotary(spec, kind, keep_float32=cls in KEEPS_FLOAT32, grid=grid, fmt=fmt, sin_first=sin_first)
    adapter = adapter.to(device_of(module))
    uses = rotary_uses(config.to_dict())
    adapter.apply_layouts = {f: function_layout(f, spec.layout, uses) for f in functions}
    rounded = {b.dtype for b in module.buffers() if b.is_floating_point() and b.dtype != torch.float32}
    if len(rounded) == 1:
        # A model cast with .to(bfloat16) rounds its inv_freq buffer, and transformers computes
        # the angles from the rounded values: check against those, then use the config's.
        (dtype,) = rounded
        as_cast = tuple(torch.tensor(spec.inv_freq).to(dtype).float().tolist())
        _check_same_outputs(name, module, HFRotary(dataclasses.replace(spec, inv_freq=as_cast), kind,
                                                   keep_float32=adapter.keep_float32, grid=grid, fmt=fmt,
                                                   sin_first=sin_first))
        warnings.warn(f"{name} holds its frequencies in {str(dtype).replace('torch.', '')} (the model was cast "
                      "with .to()), so transformers computes its angles from rounded frequencies; the patched module "
                      "uses the config's float32 values, and outputs differ from the unpatched model by that rounding",
                      stacklevel=3)
    else:
        _check_same_outputs(name, module, adapter)
    for site in sites:
        (_check_apply if cls not in ROTARY_CLASSES else _check_vision_apply)(name, module, adapter, site, model)
    return adapter


def _format_of(name: str, module: nn.Module, spec: RopeSpec, kind: str, sites) -> tuple[str, bool]:
    """(`rotary.FORMATS` entry, sin first) of how the module lays its angles out: the candidate
    closest to the module's own output at probe positions (the output check that follows
    refuses the module when even that one is off); complex: how its apply function takes q/k."""
    if kind not in ("text", "mrope", "complex"):
        return "cat", False
    device = device_of(module)
    (first, second), pos = call_rotary(copy.deepcopy(module), probe_positions("text" if kind == "complex" else kind))
    if kind == "complex":
        try:
            return complex_layout(sites[0].original, first, spec.head_dim), False
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}; rope_export does not patch it") from None
    with torch.no_grad():
        cos, sin = HFRotary(spec, kind, fmt="once").to(device)(torch.zeros(1, device=device), pos)
    errors = {}
    for sin_first, ours in ((False, cos), (True, sin)):
        for fmt in ("once", "cat", "interleave"):
            widened = widen(ours.float(), fmt)
            if widened.shape == first.shape:
                errors[(fmt, sin_first)] = float((first.float() - widened).abs().max())
    return min(errors, key=errors.get) if errors else ("cat", False)


def _check_same_outputs(name: str, module: nn.Module, adapter: HFRotary) -> None:
    """Refuse a rotary module whose outputs differ from what its config describes: a
    customised module we would silently change."""
    device = device_of(module)
    adapter.to(device)
    probe = copy.deepcopy(module)  # dynamic rules update buffers; leave the model's untouched
    x = torch.zeros(1, device=device)
    with torch.no_grad():
        if adapter.kind == "llama4_vision":
            freqs = probe(x)[:, 0]
            want, got = (freqs.real, freqs.imag), adapter(x)
        elif adapter.kind == "complex":  # freqs_cis [B, S, P] against our [B, S, P, 2] (cos, sin)
            (freqs, _), pos = call_rotary(probe, _positions(adapter))
            want, got = (freqs.real, freqs.imag), adapter(x, pos).unbind(-1)
        else:
            want, pos = call_rotary(probe, _positions(adapter))
            got = adapter(x, pos)
    labels = ("sin", "cos") if adapter.sin_first else ("cos", "sin")
    for label, w, g in zip(labels, want, got):
        w, g = w.float(), g.float()
        if w.shape != g.shape:
            raise ValueError(f"{name} gives {label} of shape {tuple(w.shape)}, rope_export "
                             f"{tuple(g.shape)}: the module was customised in a way rope_export does not recognise")
        err = max_error((w,), (g,))
        # Same float32 operations on both sides; 1e-5 admits a few ulps of sin/cos at large angles.
        if not err <= APPLY_TOLERANCE:
            raise ValueError(f"{name}: its {label} differs from its config's rotary by "
                             f"{err:.3g} (spec: {adapter.spec.describe()}): the module was customised in a way "
                             "rope_export does not recognise")
