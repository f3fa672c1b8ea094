"""Coverage of transformers' rotary architectures: for every rotary class of the installed
transformers, is `RopeSpec.from_hf_config` exact, refused, wrong (must never be) or unprobed?

    python tools/hf_coverage.py [--json rows.json] [MODEL_TYPE ...] > table.md

Prints the counts, then a Markdown table of every row (see rope_export.hf.coverage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings

import transformers

from rope_export.hf.coverage import coverage, format_rows, rule_exact_text_types, summary


CHECKED_BY_TESTS = ("gptj",)  # no rotary class to probe: tests/test_hf_parity.py


def write_verified(types: list[str]) -> None:
    """Replace the VERIFIED_TEXT literal in rope_export/architectures.py."""
    import pathlib
    import textwrap

    path = pathlib.Path(__file__).resolve().parent.parent / "rope_export" / "architectures.py"
    text = path.read_text()
    start = text.index("VERIFIED_TEXT = frozenset({")
    end = text.index("})", start) + 2
    names = ", ".join(f'"{t}"' for t in sorted(set(types) | set(CHECKED_BY_TESTS)))
    body = textwrap.fill(names, 112, initial_indent="    ", subsequent_indent="    ")
    path.write_text(text[:start] + "VERIFIED_TEXT = frozenset({\n" + body + ",\n})" + text[end:])
    print(f"wrote {len(types) + len(CHECKED_BY_TESTS)} model types to {path}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_types", nargs="*", help="default: every rotary architecture")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--emit-verified", action="store_true",
                        help="print the text model types the reading rule gets exact (for architectures.VERIFIED_TEXT)")
    parser.add_argument("--write-verified", action="store_true",
                        help="rewrite architectures.VERIFIED_TEXT with them (plus the types checked by tests of their own)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    transformers.logging.set_verbosity_error()
    rows = coverage(args.model_types or None, progress=lambda m: print(m, file=sys.stderr))
    if args.emit_verified:
        print("\n".join(rule_exact_text_types(rows)))
        return 0
    if args.write_verified:
        write_verified(rule_exact_text_types(rows))
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
