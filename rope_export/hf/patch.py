"""Drop-in rotary for Hugging Face transformers models.

``patch(model)`` swaps each rotary module of a transformers model for a rope_export module built
from the model's own config, and swaps the functions that apply it for ones that run the
standard ONNX ``RotaryEmbedding`` op when exported. Weights are untouched; ``unpatch`` (or
leaving the ``with`` block) restores everything.

    import torch, rope_export as rx
    with rx.hf.patch(model):
        torch.onnx.export(model, args, "model.onnx", dynamo=True, opset_version=23)  # or dynamo=False

What the swapped code does, by context:

* eager: the same maths as the model's own code (float32 angles and rotation, one cast back);
* ``torch.onnx.export(dynamo=True)``: ``torch.onnx.ops.rotary_embedding``, which the exporter
  writes as one ``RotaryEmbedding`` node (opset 23);
* ``torch.onnx.export(dynamo=False)`` (TorchScript): a custom op whose symbolic writes the same
  node (opset 23);
* ``fused=False``: plain elementwise ops in every context (for opsets below 23).

The rotary modules' outputs keep the model's own format (cos/sin ``[..., rotary_dim]`` with the
halves repeated, Llama 4 vision aside), so code that still calls the original apply functions
keeps working. The apply functions are module-level names in transformers' modeling files:
while any model of an architecture is patched, every model of that architecture in the process
uses the swapped functions (same results, rotation in float32).

Supported (transformers 5.x): any text decoder whose rotary is called as
``forward(x, position_ids)``, whose config reads as a verified one-axis or M-RoPE spec, and
whose modeling file's ``apply_rotary_pos_emb`` (``apply_rotary_pos_emb_interleave`` for the
"interleaved_to_half" layout, DeepSeek V3) rotates as ours does (checked on probe inputs at
patch time; `rotary_kind`); vision encoders Pixtral, Llama 4 vision (complex rotary),
Qwen2-VL, Qwen2.5-VL, Qwen3-VL. Anything else is refused with the module named.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import sys
import warnings

import torch
from torch import nn

from ..architectures import KEEPS_FLOAT32, ROTARY_CLASSES
from ..spec import RopeSpec
from .rotary import HFRotary, widen, make_apply

__all__ = ["Patch", "patch", "unpatch", "rotary_kind"]


# --------------------------------------------------------------------------- patch
@dataclasses.dataclass
class _Swap:
    original: object
    replacement: object
    fused: bool
    fmt: str = "cat"
    layout: str = "half"
    users: int = 0


_SWAPS: dict[tuple[str, str], _Swap] = {}


class Patch:
    """A patched model: ``unpatch()`` or leaving the ``with`` block restores it.

    Attributes:
        model: the model.
        replaced: ``[(qualified module name, original class name, spec)]``.
    """

    def __init__(self, model: nn.Module, replaced, modules, swaps):
        self.model, self.replaced = model, replaced
        self._modules, self._swaps, self.active = modules, swaps, True

    def __enter__(self):
        return self

    def __deepcopy__(self, memo):
        # copy.deepcopy of a patched model: the copy is patched too, through the same swapped
        # functions, so it takes its own share of them; unpatching either leaves the other whole.
        twin = Patch.__new__(Patch)
        memo[id(self)] = twin
        twin.model, twin.replaced = copy.deepcopy(self.model, memo), copy.deepcopy(self.replaced, memo)
        twin._modules, twin._swaps, twin.active = copy.deepcopy(self._modules, memo), list(self._swaps), self.active
        if twin.active:
            for key in twin._swaps:
                _SWAPS[key].users += 1
        return twin

    def __exit__(self, *exc):
        self.unpatch()
        return False

    def unpatch(self) -> None:
        if not self.active:
            return
        for parent, name, original in self._modules:
            setattr(parent, name, original)
        for key in self._swaps:
            swap = _SWAPS[key]
            swap.users -= 1
            if swap.users == 0:
                setattr(sys.modules[key[0]], key[1], swap.original)
                del _SWAPS[key]
        self.model.__dict__.pop("_rope_export_patch", None)
        self.active = False

    def __repr__(self) -> str:
        rows = ", ".join(f"{name} ({cls})" for name, cls, _ in self.replaced)
        return f"<rope_export patch of {type(self.model).__name__}: {rows}>"


def patch(model: nn.Module, *, fused: bool = True) -> Patch:
    """Swap the rotary embedding of a transformers model for rope_export's.

    Args:
        model: a transformers model (a whole model or a part: text model, vision encoder).
        fused: write the rotation as ``RotaryEmbedding`` (opset 23) when exported; False:
            plain elementwise ops (any opset).
    Returns:
        a `Patch` (also a context manager); already in force when returned.
    Raises:
        ValueError: the model has no rotary module, one rope_export does not patch, one whose
            outputs differ from what its config describes (customised), or is already patched.

    Example:
        >>> with rx.hf.patch(model) as p:  # doctest: +SKIP
        ...     print(p.replaced)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if "_rope_export_patch" in model.__dict__ or any(isinstance(m, HFRotary) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} is already patched by rope_export (unpatch it first)")
    if "Rotary" in type(model).__name__:
        raise ValueError(f"{type(model).__name__} is a rotary module: patch the model that holds it (the patch "
                         "replaces the module inside its parent)")
    found, unsupported = [], []
    for name, module in model.named_modules():
        cls = type(module).__name__
        if "Rotary" not in cls:
            continue
        try:
            found.append((name, module, rotary_kind(module)))
        except ValueError as exc:
            unsupported.append(f"{name or '<model>'} ({cls}): {exc}")
    if unsupported:
        raise ValueError(f"{type(model).__name__} has rotary modules rope_export does not patch: {'; '.join(unsupported)}")
    if not found:
        raise ValueError(f"{type(model).__name__} has no rotary module (no submodule class named *Rotary*)")

    plans = [(name, module, kind, _build(name, module, kind)) for name, module, kind in found]  # all checks first
    keys = {}
    for _, module, (kind, functions), adapter in plans:
        for fn in functions:
            key = (type(module).__module__, fn)
            how = (adapter.fmt, adapter.spec.layout)
            if key in _SWAPS and (_SWAPS[key].fused, _SWAPS[key].fmt, _SWAPS[key].layout) != (fused, *how):
                raise ValueError(f"{key[0]}.{fn} is already patched with fused={_SWAPS[key].fused} by another model")
            keys.setdefault(key, how)

    modules, replaced = [], []
    for name, module, _, adapter in plans:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        modules.append((parent, child, module))
        setattr(parent, child, adapter)
        replaced.append((name, type(module).__name__, adapter.spec))
    for key, (fmt, layout) in keys.items():
        if key not in _SWAPS:
            original = getattr(sys.modules[key[0]], key[1])
            _SWAPS[key] = _Swap(original, make_apply(key[1], original, fused, fmt, layout), fused, fmt, layout)
            setattr(sys.modules[key[0]], key[1], _SWAPS[key].replacement)
        _SWAPS[key].users += 1
    result = Patch(model, replaced, modules, list(keys))
    model.__dict__["_rope_export_patch"] = result
    return result


def unpatch(model: nn.Module) -> None:
    """Undo `patch` on ``model`` (ValueError if it is not patched)."""
    current = model.__dict__.get("_rope_export_patch")
    if current is None:
        raise ValueError(f"{type(model).__name__} is not patched by rope_export")
    current.unpatch()


def rotary_kind(module: nn.Module) -> tuple[str, tuple[str, ...]]:
    """(input kind, apply functions to swap) of a transformers rotary module.

    The vision encoders of `architectures.ROTARY_CLASSES` are known by class. Any other rotary
    qualifies when it is called as ``forward(x, position_ids)``, its config reads (verified) as
    a one-axis or M-RoPE spec, and its modeling file's ``apply_rotary_pos_emb(q, k, cos, sin,
    ...)`` (``_interleave`` for "interleaved_to_half") rotates as ours does (probed at patch time).

    Raises:
        ValueError: why this module cannot be patched.
    """
    cls = type(module).__name__
    if cls in ROTARY_CLASSES:
        return ROTARY_CLASSES[cls]
    params = list(inspect.signature(type(module).forward).parameters)[1:]
    if params[:2] != ["x", "position_ids"] or len(params) > 2:
        raise ValueError(f"forward{tuple(params)}: only forward(x, position_ids) rotaries are patched "
                         "(per-layer-type rotaries are not patched yet)")
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError("it carries no config to build a rope spec from")
    spec = _spec_of(module, "text")
    if spec.num_axes not in (1, 3):
        raise ValueError(f"only one-axis and M-RoPE text rotaries are patched; its spec: {spec.describe()}")
    function = "apply_rotary_pos_emb_interleave" if spec.layout == "interleaved_to_half" else "apply_rotary_pos_emb"
    apply = getattr(sys.modules[type(module).__module__], function, None)
    if apply is None or list(inspect.signature(apply).parameters)[:4] != ["q", "k", "cos", "sin"]:
        raise ValueError(f"its modeling file {type(module).__module__} has no {function}(q, k, cos, sin, ...)")
    return ("mrope" if spec.num_axes == 3 else "text"), (function,)


def _spec_of(module: nn.Module, part: str) -> RopeSpec:
    config = module.config
    try:
        return RopeSpec.from_hf_config(config.to_dict(), part=part, name=f"{getattr(config, 'model_type', type(module).__name__)}")
    except ValueError as exc:
        raise ValueError(f"cannot read the rotary description from its config: {exc}") from None


def _check_apply(name: str, module: nn.Module, adapter: HFRotary, function: str) -> None:
    """Refuse a modeling file whose apply function rotates differently from ours (probe
    inputs, the module's own cos/sin): swapping it would change the model."""
    original = getattr(sys.modules[type(module).__module__], function)
    if original is getattr(_SWAPS.get((type(module).__module__, function)), "replacement", None):
        return  # already swapped for a twin model: checked then
    replacement = make_apply(function, original, False, adapter.fmt, adapter.spec.layout)
    pos = _probe_positions(adapter.kind)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cos, sin = copy.deepcopy(module).cpu()(torch.zeros(1), pos)
        # The whole head, or only its rotary dims where the attention slices them off first (Phi).
        for width in dict.fromkeys((adapter.spec.head_dim, adapter.spec.rotary_dim)):
            q = torch.randn(1, 2, pos.shape[-1], width, generator=g)
            k = torch.randn(1, 1, pos.shape[-1], width, generator=g)
            try:
                want = original(q, k, cos, sin)
                break
            except Exception as exc:  # noqa: BLE001 - not this width
                error = exc
        else:
            raise ValueError(f"{name} ({type(module).__name__}): its {function} takes neither the head nor its rotary "
                             f"dims ({type(error).__name__}); rope_export does not patch it")
        got = replacement(q, k, cos, sin)
    err = max(float((w.float() - g_.float()).abs().max()) for w, g_ in zip(want, got))
    if err > 1e-5:
        raise ValueError(f"{name} ({type(module).__name__}): its {function} rotates differently from rope_export's "
                         f"(max |diff| {err:.3g}); rope_export does not patch it")


def _build(name: str, module: nn.Module, kind_functions) -> HFRotary:
    """The replacement for one rotary module, checked against the module itself."""
    cls = type(module).__name__
    kind, functions = kind_functions
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError(f"{name} ({cls}) carries no config to build a rope spec from")
    try:
        spec = _spec_of(module, "text" if kind in ("text", "mrope") else "vision")
    except ValueError as exc:
        raise ValueError(f"{name} ({cls}): {exc}") from None
    grid = None
    if kind == "llama4_vision":
        grid = int(config.image_size) // int(config.patch_size)
    fmt = _format_of(module, spec, kind) if kind in ("text", "mrope") else "cat"
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
        warnings.warn(f"{name} ({cls}) holds its frequencies in {str(dtype).replace('torch.', '')} (the model was cast "
                      "with .to()), so transformers computes its angles from rounded frequencies; the patched module "
                      "uses the config's float32 values, and outputs differ from the unpatched model by that rounding",
                      stacklevel=3)
    else:
        _check_same_outputs(name, module, adapter)
    if cls not in ROTARY_CLASSES:
        for function in functions:
            _check_apply(name, module, adapter, function)
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
    if kind == "text":
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
        else:
            pos = _probe_positions(adapter.kind).to(device)
            want, got = probe(x, pos), adapter(x, pos)
    for label, w, g in zip(("cos", "sin"), want, got):
        w, g = w.float(), g.float()
        if w.shape != g.shape:
            raise ValueError(f"{name} ({type(module).__name__}) gives {label} of shape {tuple(w.shape)}, rope_export "
                             f"{tuple(g.shape)}: the module was customised in a way rope_export does not recognise")
        err = float((w - g).abs().max())
        # Same float32 operations on both sides; 1e-5 admits a few ulps of sin/cos at angles near 4000.
        if err > 1e-5:
            raise ValueError(f"{name} ({type(module).__name__}): its {label} differs from its config's rotary by "
                             f"{err:.3g} (spec: {adapter.spec.describe()}): the module was customised in a way "
                             "rope_export does not recognise")
