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
``forward(x, position_ids)`` or ``forward(x, position_ids, layer_type)`` (Gemma 3: one checked
adapter per layer type, `rotary.LayeredRotary`), whose config reads as a verified one-axis or
M-RoPE spec, and
whose modeling file's ``apply_rotary_pos_emb`` (``apply_rotary_pos_emb_interleave`` for the
"interleaved_to_half" layout, DeepSeek V3) rotates as ours does (checked on probe inputs at
patch time; `rotary_kind`), or, for Meta-style complex rotaries (Llama 4 text, DeepSeek V2),
whose ``apply_rotary_emb(xq, xk, freqs_cis)`` does (the patched module then returns float32
(cos, sin) pairs ``[B, S, P, 2]`` in place of the complex table); GPT-J-style models with
no rotary module, whose attentions gather (sin, cos) from tables of their own (`tables`); vision encoders Pixtral, Llama 4 vision (complex rotary),
Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE. Anything else is refused with the module named.
"""

from __future__ import annotations

import copy
import warnings
import weakref

import torch
from torch import nn

from .adapters import build_adapter, rotary_kind
from .apply_site import ApplySite
from .rotary import HFRotary, LayeredRotary, make_apply
from .tables import TABLE_FORMAT, table_attentions

__all__ = ["Patch", "patch", "unpatch", "rotary_kind"]


class Patch:
    """A patched model: ``unpatch()`` or leaving the ``with`` block restores it.

    Attributes:
        model: the model.
        replaced: ``[(qualified module name, original class name, spec)]``.
    """

    def __init__(self, model: nn.Module, replaced, modules, swaps):
        self.model, self.replaced = model, replaced
        self._modules, self._swaps, self.active = modules, swaps, True
        self._placement = _placement(model)
        # A patched model dropped without unpatch still gives its share of the swapped
        # functions back when it is collected (the callback holds the handles, not the model).
        self._finalizer = weakref.finalize(model, _release, list(swaps))

    def __enter__(self):
        return self

    def __deepcopy__(self, memo):
        # copy.deepcopy of a patched model: the copy is patched too, through the same swapped
        # functions, so it takes its own share of them; unpatching either leaves the other whole.
        twin = Patch.__new__(Patch)
        memo[id(self)] = twin
        twin.model, twin.replaced = copy.deepcopy(self.model, memo), copy.deepcopy(self.replaced, memo)
        twin._modules, twin._swaps = copy.deepcopy(self._modules, memo), copy.deepcopy(self._swaps, memo)
        twin.active, twin._placement = self.active, self._placement
        twin._finalizer = weakref.finalize(twin.model, _release, list(twin._swaps))
        return twin

    def __exit__(self, *exc):
        self.unpatch()
        return False

    def unpatch(self) -> None:
        if not self.active:
            return
        now = _placement(self.model)
        for parent, name, original in self._modules:
            if now != self._placement:
                # The model was moved or cast while patched (its original rotary was not in it then):
                # the original follows, as it would have.
                original.to(device=now[0], dtype=now[1])
            setattr(parent, name, original)
        self._finalizer.detach()
        _release(self._swaps)
        self.model.__dict__.pop("_rope_export_patch", None)
        self.active = False

    def __repr__(self) -> str:
        rows = ", ".join(f"{name} ({cls})" for name, cls, _ in self.replaced)
        return f"<rope_export patch of {type(self.model).__name__}: {rows}>"


def _release(handles) -> None:
    for handle in handles:
        handle.restore()


def _placement(model: nn.Module):
    """(device, dtype) of the model's floating parameters, when they share one; else None."""
    found = {(p.device, p.dtype) for p in model.parameters() if p.is_floating_point()}
    return next(iter(found)) if len(found) == 1 else None


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
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ValueError(f"{type(model).__name__} has tensors on the meta device (no values): load or materialise its "
                         "weights before patching (the patch runs its rotary on probe positions)")
    half = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()
                   if p.is_floating_point() and p.dtype != torch.float32})
    if half:
        warnings.warn(f"{type(model).__name__} runs in {', '.join(half)}: rope_export rotates in float32 and rounds "
                      "once, transformers rounds cos/sin and each product, so outputs differ by about one unit of the "
                      "last place of that dtype; while the patch is in force, so do those of every unpatched model of "
                      "this architecture in the process (they share the swapped apply functions)", stacklevel=2)
    found, unsupported = [], []
    for name, module in model.named_modules():
        cls = type(module).__name__
        if "Rotary" not in cls:
            continue
        try:
            found.append((name, module, rotary_kind(module, _holder_config(model, name))))
        except ValueError as exc:
            unsupported.append(f"{name or '<model>'} ({cls}): {exc}")
    if unsupported:
        raise ValueError(f"{type(model).__name__} has rotary modules rope_export does not patch: {'; '.join(unsupported)}")
    if not found:
        tables = table_attentions(model)  # GPT-J before transformers 5.25: a sinusoid table per attention
        if tables:
            site = ApplySite(type(tables[0][1]).__module__, "apply_rotary_pos_emb")
            return _swap(model, [(n, type(m).__name__, spec) for n, m, spec in tables], [],
                         {site: (TABLE_FORMAT, "interleaved")}, fused)
        raise ValueError(f"{type(model).__name__} has no rotary module (no submodule class named *Rotary*) and no "
                         "sinusoid-table attention (GPT-J's embed_positions)")

    plans = [(name, module, kind, build_adapter(name, module, kind, model, _holder_config(model, name)))
             for name, module, kind in found]  # all checks first
    sites: dict[ApplySite, tuple] = {}
    for _, module, (kind, functions), adapter in plans:
        for fn in functions:
            site = ApplySite(type(module).__module__, fn)
            how = (adapter.fmt, adapter.apply_layouts[fn])
            if sites.setdefault(site, how) != how:
                raise ValueError(f"{site.label} serves two rotaries of this model that lay cos/sin out differently")
    modules, replaced = [], []
    for name, module, _, adapter in plans:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        modules.append((parent, child, module))
        if isinstance(adapter, LayeredRotary):  # one row per layer type: "rotary_emb[sliding_attention]"
            replaced.extend((f"{name}[{t}]", type(module).__name__, a.spec) for t, a in adapter.adapters.items())
        else:
            replaced.append((name, type(module).__name__, adapter.spec))
    return _swap(model, replaced, [(parent, child, module, adapter) for (parent, child, module), (*_, adapter)
                                   in zip(modules, plans)], sites, fused)


def _holder_config(model: nn.Module, name: str):
    """The config of the closest module above ``name`` that has one: the config a rotary that
    keeps none was built from (GPT-J in transformers 5.25)."""
    parts = name.split(".") if name else []
    for depth in range(len(parts) - 1, -1, -1):
        config = getattr(model.get_submodule(".".join(parts[:depth])), "config", None)
        if config is not None and hasattr(config, "to_dict"):
            return config
    return None


def _swap(model: nn.Module, replaced, modules, sites: dict, fused: bool) -> Patch:
    """Swap every apply function (a ValueError before anything changes if one is patched another
    way by another model), then the rotary modules."""
    for site, (fmt, layout) in sites.items():
        if site.swapped_with() not in (None, (fused, fmt, layout)):
            raise ValueError(f"{site.label} is already patched with fused={site.swapped_with()[0]} by another model")
    handles = [site.swap(lambda s, f=fmt, lay=layout: make_apply(s, fused, f, lay), (fused, fmt, layout), model)
               for site, (fmt, layout) in sites.items()]
    for parent, child, _, adapter in modules:
        setattr(parent, child, adapter)
    result = Patch(model, replaced, [(parent, child, module) for parent, child, module, _ in modules], handles)
    model.__dict__["_rope_export_patch"] = result
    return result


def unpatch(model: nn.Module) -> None:
    """Undo `patch` on ``model`` (ValueError if it is not patched)."""
    current = model.__dict__.get("_rope_export_patch")
    if current is None:
        raise ValueError(f"{type(model).__name__} is not patched by rope_export")
    current.unpatch()
