"""The functions a transformers model calls to apply its rotary, read and swapped in one place,
whatever transformers wraps them in.

A modeling file's ``apply_rotary_pos_emb`` is, depending on the release:

* a plain function (transformers 5.23 without the ``kernels`` package);
* an ``nn.Module`` instance: transformers 5.25 requires ``kernels``, whose
  ``@use_kernel_forward_from_hub("rotary_pos_emb")`` turns the function into a ``Func`` module
  (``forward(*args, **kwargs)``, the function in its closure);
* with a private copy per attention instance: ``@use_kernelized_func`` keeps one in each
  attention's ``_kernel_funcs``, which the module-level object dispatches to while that
  attention runs, and which ``kernels.kernelize`` may point at a hub kernel;
* held by other names: any loaded module or model instance attribute bound to the same object.

An `ApplySite` (modeling module, function name) sees through all of these: `ApplySite.function`
is the plain function, `ApplySite.form` its calling convention, `ApplySite.implementations`
what a model really runs (kernelized copies included), and `ApplySite.swap` replaces the object
in every holder, returning a handle whose ``restore()`` puts the exact object back.

    >>> site = ApplySite("transformers.models.llama.modeling_llama", "apply_rotary_pos_emb")  # doctest: +SKIP
    >>> site.form, site.parameters[:4]  # doctest: +SKIP
    ('qk', ['q', 'k', 'cos', 'sin'])
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import sys

from torch import nn

__all__ = ["ApplySite", "SwapHandle", "unwrap", "transformers_version", "FORMS"]

# Calling conventions of the apply functions rope_export swaps, by their parameters:
# "qk" (q, k, cos, sin, ...), "x" (x, cos, sin, ...: Gemma 4, one tensor a call), "complex"
# (xq, xk, freqs_cis: Meta-style), "sincos" (tensor, sin, cos: GPT-J, [B, S, H, R]),
# "packed" (Qwen-VL vision: q/k [N, H, D]) and "llama4_vision" (query, key, freqs_ci).
FORMS = ("qk", "x", "complex", "sincos", "packed", "llama4_vision")


def transformers_version() -> str:
    module = sys.modules.get("transformers")
    return getattr(module, "__version__", "not imported")


def unwrap(obj):
    """The plain Python function behind an apply function object.

    Raises:
        ValueError: ``obj`` is neither a function nor a wrapper rope_export knows.
    """
    for _ in range(8):  # wrappers of wrappers, never a cycle
        if inspect.isfunction(obj) or inspect.ismethod(obj):
            return inspect.unwrap(obj)  # functools.wraps chains
        if isinstance(obj, nn.Module) and hasattr(type(obj), "kernel_layer_name"):
            # kernels' Func module: the function is in the closure of its class's forward.
            inner = inspect.getclosurevars(type(obj).forward).nonlocals.get("func")
            if not callable(inner):
                break
            obj = inner
            continue
        break
    raise ValueError(f"a {type(obj).__module__}.{type(obj).__name__} object, not a function or a wrapper rope_export "
                     f"knows (transformers {transformers_version()}): rope_export does not patch it")


@dataclasses.dataclass(frozen=True)
class ApplySite:
    """One apply function: ``module`` (the modeling module's name) and ``name`` in it."""

    module: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.module}.{self.name}"

    def exists(self) -> bool:
        return self.name in vars(sys.modules[self.module])

    @property
    def current(self):
        """The object the modeling module holds now (a rope_export replacement while swapped)."""
        if not self.exists():
            raise ValueError(f"{self.label} does not exist (transformers {transformers_version()})")
        return getattr(sys.modules[self.module], self.name)

    @property
    def original(self):
        """The model's own object: the one before any rope_export swap."""
        shared = _ACTIVE.get(self._key)
        return shared.original if shared is not None else self.current

    @property
    def function(self):
        """The plain function behind `original` (`unwrap`)."""
        try:
            return unwrap(self.original)
        except ValueError as exc:
            raise ValueError(f"{self.label}: {exc}") from None

    @property
    def parameters(self) -> list[str]:
        return list(inspect.signature(self.function).parameters)

    @property
    def form(self) -> str:
        """How the function is called (`FORMS`).

        Raises:
            ValueError: a signature rope_export does not know, naming it and the transformers version.
        """
        params = self.parameters
        if self.name == "apply_rotary_pos_emb_vision":
            return "packed"
        if self.name == "vision_apply_rotary_emb":
            return "llama4_vision"
        for form, head in (("qk", ["q", "k", "cos", "sin"]), ("x", ["x", "cos", "sin"]),
                           ("complex", ["xq", "xk", "freqs_cis"]), ("sincos", ["tensor", "sin", "cos"])):
            if params[: len(head)] == head:
                return form
        raise ValueError(f"{self.label}{tuple(params)}: a signature rope_export does not know (transformers "
                         f"{transformers_version()}); it patches (q, k, cos, sin, ...), (x, cos, sin, ...), "
                         "(xq, xk, freqs_cis) and (tensor, sin, cos)")

    def implementations(self, model: nn.Module | None = None) -> list[tuple[str, object]]:
        """(label, callable) for what the model really runs through this site: the model's own
        object, and each copy of it in an attention's ``_kernel_funcs`` that runs anything but
        the plain function: ``kernelize`` pointed its forward at a hub kernel, or something put
        another object, a hook or another class there."""
        original = self.original
        out = [(self.label, original)]
        if model is not None and isinstance(original, nn.Module):
            # kernels keys each copy by the function's __name__, else its layer name ("rotary_pos_emb");
            # an attention's other kernel functions (Zamba2's causal conv) are not this site's.
            keys = {getattr(original, "__name__", None) or getattr(original, "kernel_layer_name", None)}
            for path, module in model.named_modules():
                for key, copy_ in (getattr(module, "__dict__", {}).get("_kernel_funcs") or {}).items():
                    if key in keys and not _pristine(copy_, original):
                        repo = vars(copy_).get("_kernel_repo", "") if hasattr(copy_, "__dict__") else ""
                        out.append((f"{path or '<model>'}._kernel_funcs[{key!r}]" + (f" (kernelized: {repo})" if repo else ""),
                                    copy_))
        return out

    # ------------------------------------------------------------------ swapping
    @property
    def _key(self) -> tuple[str, str]:
        return (self.module, self.name)

    def swapped_with(self) -> tuple | None:
        """The ``how`` of the replacement in force (see `swap`), or None."""
        shared = _ACTIVE.get(self._key)
        return None if shared is None else shared.how

    def swap(self, make_replacement, how: tuple, model: nn.Module | None = None) -> "SwapHandle":
        """Put a replacement in every holder of the original object: the modeling module, any
        loaded module holding it under the same name, and any attribute of ``model``'s modules
        bound to it. Shared by every model swapped with the same ``how`` (reference-counted).

        Args:
            make_replacement: ``f(site) -> callable``, called once per swap in force.
            how: what the replacement does (e.g. ``(fused, fmt, layout)``); a second swap with
                another ``how`` while one is in force is a ValueError.
        """
        shared = _ACTIVE.get(self._key)
        if shared is not None and shared.how != how:
            raise ValueError(f"{self.label} is already patched by another model with {shared.how_text()}")
        if shared is None:
            original = self.current
            replacement = make_replacement(self)
            holders = [(m, self.name) for m in list(sys.modules.values())
                       if getattr(m, "__dict__", None) is not None and m.__dict__.get(self.name) is original]
            shared = _Shared(original, replacement, how, holders)
            for holder, attr in holders:
                setattr(holder, attr, replacement)
            _ACTIVE[self._key] = shared
        shared.users += 1
        instance = _instance_holders(model, shared.original) if model is not None else []
        for module, attr in instance:
            _set(module, attr, shared.replacement)
        return SwapHandle(self, shared, instance)


def _pristine(copy_, original) -> bool:
    """A per-attention copy that runs exactly what ``original`` runs: same class, no forward of
    its own, no hooks."""
    return (type(copy_) is type(original) and isinstance(copy_, nn.Module) and "forward" not in vars(copy_)
            and not copy_._forward_hooks and not copy_._forward_pre_hooks)


@dataclasses.dataclass
class _Shared:
    original: object
    replacement: object
    how: tuple
    holders: list
    users: int = 0

    def how_text(self) -> str:
        return f"fused={self.how[0]}" if self.how else "another replacement"


_ACTIVE: dict[tuple[str, str], _Shared] = {}


def _instance_holders(model: nn.Module, original) -> list[tuple[nn.Module, str]]:
    """Attributes of the model's modules bound to ``original`` (``self.rotary_fn = apply_rotary_pos_emb``)."""
    out = []
    for module in model.modules():
        for attr, value in list(vars(module).items()) + list(module._modules.items()):
            if value is original:
                out.append((module, attr))
    return out


class _AsModule(nn.Module):
    """A replacement function where the original was registered as a child module."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _set(module: nn.Module, attr: str, value) -> None:
    if attr in module._modules:
        module._modules[attr] = value if isinstance(value, nn.Module) else _AsModule(value)
    else:
        object.__setattr__(module, attr, value)


class SwapHandle:
    """One model's share of a swap; ``restore()`` undoes it (the module-level swap when its last
    user restores)."""

    def __init__(self, site: ApplySite, shared: _Shared, instance: list):
        self.site, self._shared, self._instance, self.active = site, shared, instance, True

    def __deepcopy__(self, memo):
        # copy.deepcopy of a patched model: the copy's modules hold the replacement too and take
        # their own share of the swap.
        twin = SwapHandle(self.site, self._shared, [(copy.deepcopy(m, memo), a) for m, a in self._instance])
        twin.active = self.active
        if self.active:
            self._shared.users += 1
        return twin

    def restore(self) -> None:
        if not self.active:
            return
        for module, attr in self._instance:
            current = module._modules.get(attr) if attr in module._modules else vars(module).get(attr)
            if current is self._shared.replacement or isinstance(current, _AsModule):
                _set(module, attr, self._shared.original)
        self._shared.users -= 1
        if self._shared.users == 0:
            shared = self._shared
            # Every holder the swap wrote to, and any module imported while it was in force that
            # took the replacement under the same name; a holder someone else changed since keeps theirs.
            late = [(m, self.site.name) for m in list(sys.modules.values())
                    if getattr(m, "__dict__", None) is not None and m.__dict__.get(self.site.name) is shared.replacement]
            for holder, attr in dict.fromkeys(shared.holders + late):
                if getattr(holder, attr, None) is shared.replacement:
                    setattr(holder, attr, shared.original)
            _ACTIVE.pop((self.site.module, self.site.name), None)
        self.active = False
