"""Which config fields a family's code reads, and which it fills in itself: the coverage probe
run again on perturbed default configs.

A config.json saved by transformers names every rope field, and the coverage probe proves the
reading of such files. Hand-written or trimmed files differ in two ways the reading rule could
get silently wrong, so each is probed per verified text type:

* a field the family's code ignores: ``partial_rotary_factor`` 0.5 in the rope block (Llama's
  rotary rotates the whole head whatever it says): the type **ignores** it;
* a field left out that the family's config class fills with a default of its own (Gemma's
  ``head_dim`` 256, Higgs Audio v2's Llama 3 rope block, GPT-NeoX's partial rotary 0.25): the
  type **requires** it.

`rope_export.hf_config` refuses a config that sets an ignored field to anything but its neutral
value, or leaves out a required one, naming the field (`architectures.FIELD_FACTS`).

    >>> field_facts(["llama"])["llama"]["ignores"]  # doctest: +SKIP
    ['partial_rotary_factor']
"""

from __future__ import annotations

import copy

from ..architectures import CONFIG_FIXES
from .probe import probe_config
from .sources import modeling_module

__all__ = ["field_facts", "PERTURBATIONS"]

def _flat_block(d: dict) -> dict | None:
    """The config's flat rope_parameters block (None for none, or a per-layer one)."""
    block = d.get("rope_parameters")
    if not isinstance(block, dict) or any(isinstance(v, dict) or v is None for v in block.values()):
        return None
    return block


def _set_partial(d: dict) -> bool:
    block = _flat_block(d)
    if block is None or block.get("partial_rotary_factor", 1.0) != 1.0 or d.get("partial_rotary_factor", 1.0) != 1.0:
        return False  # per-layer blocks, or a family that rotates part of the head already
    d["rope_parameters"] = {**block, "partial_rotary_factor": 0.5}
    return True


def _omit(keys: tuple, block_keys: tuple = ()):
    def perturb(d: dict) -> bool:
        changed = False
        for k in keys:
            changed |= d.pop(k, None) is not None
        block = _flat_block(d)
        if block is not None and any(k in block for k in block_keys):
            d["rope_parameters"] = {k: v for k, v in block.items() if k not in block_keys}
            changed = True
        return changed
    return perturb


def _omit_block(d: dict) -> bool:
    """No rope block at all (its rope_theta and partial_rotary_factor kept at the top level):
    a file of an older release, which the config class completes with its default block."""
    block = _flat_block(d)
    if block is None or d.get("rope_scaling") is not None:
        return False
    del d["rope_parameters"]
    for key in ("rope_theta", "partial_rotary_factor"):
        if key in block:
            d.setdefault(key, block[key])
    return True


# fact -> {quantity: what the probe does to the default config dict (False: not applicable)}.
# The quantities are those `QUANTITY_KEYS` names.
PERTURBATIONS = {
    "ignores": {"partial_rotary_factor": _set_partial},
    "requires": {
        "head_dim": _omit(("head_dim",)),
        "rope_type": _omit_block,
        "partial_rotary_factor": _omit(("partial_rotary_factor", "rotary_pct"), ("partial_rotary_factor",)),
        "rope_theta": _omit(("rope_theta", "rotary_emb_base"), ("rope_theta",)),
    },
}


def field_facts(model_types, progress=None) -> dict:
    """{model_type: {"ignores": [...], "requires": [...]}} for the text types given (those whose
    config class transformers maps by model_type), only types with a fact."""
    from transformers import CONFIG_MAPPING

    out: dict = {}
    for model_type in model_types:
        if model_type not in CONFIG_MAPPING:
            continue
        if progress:
            progress(model_type)
        config_cls = modeling_module(model_type)[0]
        try:
            base = config_cls().to_dict()
        except Exception:  # noqa: BLE001 - a default config that does not build here
            continue
        base.update({k: ({**base.get(k, {}), **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v)
                     for k, v in CONFIG_FIXES.get(model_type, {}).items()})
        if _disagrees(config_cls, base, model_type):
            continue  # not exact on this release even unperturbed (superseded): nothing to learn here
        for fact, perturbations in PERTURBATIONS.items():
            for field, perturb in perturbations.items():
                data = copy.deepcopy(base)
                if not perturb(data) or not _disagrees(config_cls, data, model_type):
                    continue
                out.setdefault(model_type, {}).setdefault(fact, []).append(field)
    return out


def _disagrees(config_cls, data: dict, model_type: str) -> bool:
    """Whether the reading rule disagrees with the family's code on this config: a row that is
    neither exact nor refused by the rule (wrong, or a spec the model's own code cannot even be
    run against: a head width that is not the model's)."""
    try:
        # (a copy: config classes fill their defaults into the dicts they are given)
        root = config_cls(**copy.deepcopy({k: v for k, v in data.items() if k not in ("model_type", "transformers_version")}))
    except Exception:  # noqa: BLE001 - transformers refuses the perturbed config itself: no fact
        return False
    rows = [r for r in probe_config(root, data) if r.config_type.partition(":")[2] == model_type]
    return any(r.rule not in ("exact", "refused") for r in rows)
