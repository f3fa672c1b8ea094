"""What a transformers modeling file says about its rotary, read from its source: the rotary
classes, the config each one is built from, and the apply function its attention calls.

`rope_export.hf.probe` runs what this module finds. Type annotations are not enough: a rotary
annotated with a composite config is often built from one of its nested configs (T5Gemma's
encoder and decoder, Dia's, Qwen2.5-Omni's thinker and talker), so the instantiation sites
are read too.

    >>> config_cls, module = modeling_module("dia")
    >>> [attr for attr, _ in configs_for(module.DiaRotaryEmbedding, config_cls(), module)]
    ['decoder_config', 'encoder_config']
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect

__all__ = ["modeling_module", "rotary_classes", "sub_configs", "configs_for", "apply_names"]


def modeling_module(model_type: str):
    """(config class, modeling module) of a transformers model type."""
    from transformers import CONFIG_MAPPING

    config_cls = CONFIG_MAPPING[model_type]
    name = config_cls.__module__.replace(".configuration_", ".modeling_")
    return config_cls, importlib.import_module(name)


def rotary_classes(module) -> list[type]:
    return [v for k, v in sorted(vars(module).items())
            if isinstance(v, type) and k.endswith("RotaryEmbedding") and v.__module__ == module.__name__]


def sub_configs(root) -> list[tuple[str, object]]:
    """(attribute, config) for the root and its nested configs, depth first."""
    from transformers import PretrainedConfig

    out, seen = [("", root)], {id(root)}
    for name, value in sorted(vars(root).items()):
        if isinstance(value, PretrainedConfig) and id(value) not in seen:
            seen.add(id(value))
            out.extend((f"{name}.{n}" if n else name, c) for n, c in sub_configs(value))
    return out


@functools.cache
def _tree(module_name: str) -> ast.Module:
    return ast.parse(inspect.getsource(importlib.import_module(module_name)))


@functools.cache
def _callers(module_name: str, callee: str) -> tuple[tuple[str, str], ...]:
    """(class, source of the config argument) for each class of the module that builds ``callee``."""
    out = []
    for node in _tree(module_name).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == callee:
                arg = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "config"), None)
                out.append((node.name, ast.unparse(arg) if arg is not None else ""))
    return tuple(dict.fromkeys(out))


def _annotation(cls, module, param: str = "config"):
    try:
        annotation = inspect.signature(cls.__init__).parameters[param].annotation
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(annotation, str):
        annotation = getattr(module, annotation, None)
    return annotation if isinstance(annotation, type) else None


def _annotated_config(rotary_cls, root, module) -> tuple[str, object] | None:
    params = list(inspect.signature(rotary_cls.__init__).parameters.values())[1:]
    if not params:
        return None
    annotation = _annotation(rotary_cls, module, params[0].name)
    if annotation is None:
        return ("", root) if params[0].name == "config" else None
    found = next(((attr, cfg) for attr, cfg in sub_configs(root) if isinstance(cfg, annotation)), None)
    if found is None and getattr(annotation, "sub_configs", {}).get("text_config") is type(root):
        found = ("", root)  # a VLM's text rotary typed with the VLM's config, on the text model type
    return found


def configs_for(rotary_cls, root, module) -> list[tuple[str, object]]:
    """(attribute path, config) of each sub-config of ``root`` the rotary class is built from
    ([] when this model type holds none: a rotary of a sibling model type)."""
    from transformers import PretrainedConfig

    found: dict[str, object] = {}
    configs, owners_known = sub_configs(root), False
    for owner, arg in _callers(module.__name__, rotary_cls.__name__):
        annotation = _annotation(getattr(module, owner, None), module)
        if arg not in ("config", "self.config") or annotation is None:
            continue
        owners_known = True
        matches = ([(a, c) for a, c in configs if type(c) is annotation]
                   or [(a, c) for a, c in configs if isinstance(c, annotation)])
        if annotation is type(root) or annotation is PretrainedConfig:
            # Annotated with the root config (or with any config: PI05's action expert), yet built
            # from a nested one: Owner(config.encoder).
            nested = [(a[len("config."):], getattr(root, a[len("config."):], None)) for _, a in _callers(module.__name__, owner)
                      if a.startswith("config.") and "." not in a[len("config."):]]
            fallback = matches if annotation is type(root) else [("", root)]
            matches = [(a, c) for a, c in nested if isinstance(c, PretrainedConfig)] or fallback
        found.update(matches)
    if found or owners_known:  # owners built from configs this model type does not hold: none here
        return sorted(found.items())
    annotated = _annotated_config(rotary_cls, root, module)
    return [annotated] if annotated is not None else []


_TOWERS = ("Vision", "Visual", "Audio", "Image")


@functools.cache
def _apply_calls(module_name: str, tower: str | None) -> dict[str, bool]:
    """{apply function: all calls under ``if ...rope_interleave``} in the classes of ``tower`` (None: text)."""
    calls: dict[str, bool] = {}

    def visit(node, guarded: bool) -> None:
        if isinstance(node, ast.If) and "rope_interleave" in ast.unparse(node.test):
            guarded = True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("apply_rotary"):
            calls[node.func.id] = calls.get(node.func.id, True) and guarded
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    for node in _tree(module_name).body:
        if isinstance(node, ast.ClassDef) and (tower in node.name if tower else not any(w in node.name for w in _TOWERS)):
            visit(node, False)
    return calls


def apply_names(module, cfg, rotary_name: str, *, complex_freqs: bool = False, uses: dict | None = None) -> tuple[str, ...]:
    """The module-level apply functions the rotary's attention calls, read from its modeling
    source; () when that cannot be told.

    Args:
        module: the modeling module.
        cfg: the config the rotary is built from (DeepSeek V3 picks by its ``rope_interleave``).
        complex_freqs: the rotary returns a complex ``freqs_cis`` (Meta style: ``apply_rotary_emb``).
        uses: `architectures.ROTARY_USES` of the model type (one function per use).
    """
    if uses:
        return tuple(dict.fromkeys(function for function, _, _ in uses.values()))
    if complex_freqs:
        return ("apply_rotary_emb",) if hasattr(module, "apply_rotary_emb") else ()
    plain, inter = "apply_rotary_pos_emb", "apply_rotary_pos_emb_interleave"
    calls = _apply_calls(module.__name__, next((w for w in _TOWERS if w in rotary_name), None))
    name = plain
    if inter in calls and hasattr(module, inter):
        if calls[inter]:  # DeepSeek V3: chosen by the config's rope_interleave
            name = inter if getattr(cfg, "rope_interleave", False) else plain
        elif calls.get(plain) is False:
            return ()  # both called unconditionally: which rotates the rotary cannot be told
        else:
            name = inter  # always (LongCat, HY-V4 since transformers 5.24)
    return (name,) if hasattr(module, name) else ()
