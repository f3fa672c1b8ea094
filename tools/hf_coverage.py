"""Coverage of transformers' rotary architectures: for every rotary class of the installed
transformers, is `RopeSpec.from_hf_config` exact, refused, wrong (must never be), superseded
(this release's code predates the rule rope_export follows) or unprobed?

    python tools/hf_coverage.py [--json rows.json] [MODEL_TYPE ...] > table.md
    python tools/hf_coverage.py --write-verified     # record this release in architectures/proven.py

Prints the counts, then a Markdown table of every row (see rope_export.hf.coverage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import warnings

import transformers

from rope_export.architectures import CHECKED_BY_TESTS, DEFAULT_THETA, FIELD_FACTS, VERIFIED_TEXT, VERIFIED_VISION, release_key
from rope_export.hf.coverage import coverage, format_rows, probed_types, rule_exact_types, summary
from rope_export.hf.fields import field_facts
from rope_export.hf.sources import modeling_module, sub_configs

PROVEN = pathlib.Path(__file__).resolve().parent.parent / "rope_export" / "architectures" / "proven.py"


def merged(table: dict, proved: list[str], probed: set[str], release: str) -> dict:
    """``table`` ({type: releases}) with ``release`` added to every proved type and taken from
    every probed type it no longer proves; types left with no release are dropped."""
    out = {}
    for name in sorted(set(table) | set(proved)):
        releases = set(table.get(name, ()))
        if name in proved:
            releases.add(release)
        elif name in probed:
            releases.discard(release)
        if releases:
            out[name] = tuple(sorted(releases, key=release_key))
    return out


def _literal(name: str, table: dict) -> str:
    def value(v):
        return f"({' '.join(f'{json.dumps(r)},' for r in v)})" if isinstance(v, tuple) else json.dumps(v)

    rows = "".join(f'    "{k}": {value(v)},\n' for k, v in table.items())
    return f"{name} = {{\n{rows}}}\n"


def default_thetas(types: set[str]) -> dict:
    """{model_type: its config class's default_theta} for the types whose default is not 10000
    (every config class of the installed transformers, nested ones included)."""
    from transformers import CONFIG_MAPPING

    found = dict(DEFAULT_THETA)
    for model_type in CONFIG_MAPPING.keys():
        try:
            root = modeling_module(model_type)[0]()
        except Exception:  # noqa: BLE001 - a config class that does not build here has nothing to say
            continue
        for _, cfg in sub_configs(root):
            theta = getattr(type(cfg), "default_theta", None)
            name = getattr(cfg, "model_type", "")
            if name in types and isinstance(theta, (int, float)) and float(theta) != 10000.0:
                if found.get(name, float(theta)) != float(theta):
                    raise SystemExit(f"{name}: default_theta {theta} on transformers {transformers.__version__}, "
                                     f"{found[name]} recorded from another release: decide which to follow")
                found[name] = float(theta)
    return dict(sorted(found.items()))


def write_verified(rows) -> None:
    """Rewrite the two tables of rope_export/architectures/proven.py for the installed release."""
    release = transformers.__version__
    text_proved = rule_exact_types(rows, "text")
    # Types without a rotary class on this release, checked by tests of their own (GPT-J's tables).
    text_proved += [t for t in CHECKED_BY_TESTS if t not in probed_types(rows, "text")]
    text = merged(VERIFIED_TEXT, text_proved, probed_types(rows, "text"), release)
    vision = merged(VERIFIED_VISION, rule_exact_types(rows, "vision"), probed_types(rows, "vision"), release)
    thetas = default_thetas(set(text) | set(vision))
    facts = {t: {k: list(v) for k, v in f.items()} for t, f in FIELD_FACTS.items()}
    for name, found in field_facts(text_proved).items():  # facts found on any tested release, kept
        for fact, quantities in found.items():
            facts.setdefault(name, {}).setdefault(fact, [])
            facts[name][fact] = sorted(set(facts[name][fact]) | set(quantities))
    source = PROVEN.read_text()
    head = source[: source.index("VERIFIED_TEXT = {")]
    PROVEN.write_text(head + _literal("VERIFIED_TEXT", text) + "\n" + _literal("VERIFIED_VISION", vision) + "\n"
                      + _literal("DEFAULT_THETA", thetas) + "\n" + _literal("FIELD_FACTS", dict(sorted(facts.items()))))
    print(f"transformers {release}: {len(text)} text and {len(vision)} vision types in {PROVEN}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("model_types", nargs="*", help="default: every rotary architecture")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--emit-verified", action="store_true",
                        help="print the text model types the reading rule gets exact on this release")
    parser.add_argument("--write-verified", action="store_true",
                        help="record this release in rope_export/architectures/proven.py (every architecture)")
    args = parser.parse_args()
    if args.write_verified and args.model_types:
        parser.error("--write-verified probes every architecture; name no model types")
    warnings.simplefilter("ignore")
    transformers.logging.set_verbosity_error()
    rows = coverage(args.model_types or None, progress=lambda m: print(m, file=sys.stderr))
    if args.emit_verified:
        print("\n".join(rule_exact_types(rows, "text")))
        return 0
    if args.write_verified:
        write_verified(rows)
        return 0
    counts = summary(rows)
    print(f"transformers {transformers.__version__}: {len(rows)} rows: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"transformers": transformers.__version__, "counts": counts,
                       "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
