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
import dataclasses
import sys

from torch import nn

from .adapters import build_adapter, function_layout, rotary_kind
from .rotary import HFRotary, LayeredRotary, make_apply
from .tables import TABLE_FORMAT, table_attentions

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
        tables = table_attentions(model)  # GPT-J: no rotary module, a sinusoid table per attention
        if tables:
            return _patch_tables(model, tables, fused)
        raise ValueError(f"{type(model).__name__} has no rotary module (no submodule class named *Rotary*) and no "
                         "sinusoid-table attention (GPT-J's embed_positions)")

    plans = [(name, module, kind, build_adapter(name, module, kind)) for name, module, kind in found]  # all checks first
    keys = {}
    for _, module, (kind, functions), adapter in plans:
        for fn in functions:
            key = (type(module).__module__, fn)
            how = (adapter.fmt, function_layout(fn, adapter.spec.layout))
            if key in _SWAPS and (_SWAPS[key].fused, _SWAPS[key].fmt, _SWAPS[key].layout) != (fused, *how):
                raise ValueError(f"{key[0]}.{fn} is already patched with fused={_SWAPS[key].fused} by another model")
            keys.setdefault(key, how)

    modules, replaced = [], []
    for name, module, _, adapter in plans:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        modules.append((parent, child, module))
        setattr(parent, child, adapter)
        if isinstance(adapter, LayeredRotary):  # one row per layer type: "rotary_emb[sliding_attention]"
            replaced.extend((f"{name}[{t}]", type(module).__name__, a.spec) for t, a in adapter.adapters.items())
        else:
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


def _patch_tables(model: nn.Module, tables, fused: bool) -> Patch:
    """GPT-J: keep each attention's table, swap its modeling file's apply function."""
    key = (type(tables[0][1]).__module__, "apply_rotary_pos_emb")
    if key in _SWAPS and (_SWAPS[key].fused, _SWAPS[key].fmt) != (fused, TABLE_FORMAT):
        raise ValueError(f"{key[0]}.{key[1]} is already patched with fused={_SWAPS[key].fused} by another model")
    if key not in _SWAPS:
        original = getattr(sys.modules[key[0]], key[1])
        _SWAPS[key] = _Swap(original, make_apply(key[1], original, fused, TABLE_FORMAT, "interleaved"), fused,
                            TABLE_FORMAT, "interleaved")
        setattr(sys.modules[key[0]], key[1], _SWAPS[key].replacement)
    _SWAPS[key].users += 1
    result = Patch(model, [(name, type(m).__name__, spec) for name, m, spec in tables], [], [key])
    model.__dict__["_rope_export_patch"] = result
    return result


def unpatch(model: nn.Module) -> None:
    """Undo `patch` on ``model`` (ValueError if it is not patched)."""
    current = model.__dict__.get("_rope_export_patch")
    if current is None:
        raise ValueError(f"{type(model).__name__} is not patched by rope_export")
    current.unpatch()
