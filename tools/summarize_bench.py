"""Summarise `rope-export bench --json` files into docs/performance.md's CPU table: per
preset and shape (both head regimes, prefill and decode), the default export (`form="auto"`:
the table form where it applies, else fused) against the copy floor, the bare onnxruntime op
fed precomputed cos/sin, torch's own export of the HF-style module, and our torch module
eager against the HF-style module eager.

    python tools/summarize_bench.py benchmarks/results/cpu-2048/*.json
"""

from __future__ import annotations

import json
import sys

import rope_export as rx
from rope_export.export.forms import resolve_form


def _cell(row, key="x_copy"):
    return "-" if row is None or row.get(key) is None else f"{row[key]:.2f}"


def main(paths: list[str]) -> int:
    print("| preset | shape | default form | ours / copy | op fed cos/sin / copy | HF-style export / copy | ours / op alone "
          "| ours eager vs HF eager |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            rows = json.load(fh)["rows"]
        preset = rows[0]["preset"]
        form = resolve_form("auto", 23, rx.load_preset(preset))
        by_shape: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["ms"] is not None:
                by_shape.setdefault(r["shape"], {})[r["backend"]] = r
        for shape, b in by_shape.items():
            ours = b.get(f"ort {form} (ours)") or b.get("ort fused (ours)")
            used = form if b.get(f"ort {form} (ours)") else "fused"
            alone = b.get("ort RotaryEmbedding fed cos/sin")
            base = b.get("ort HF-style dynamo export (baseline)")
            vs_op = f"{ours['ms'] / alone['ms']:.2f}" if ours and alone else "-"
            eager = b["HF-style torch eager"]["ms"] / b["ours torch eager"]["ms"]
            print(f"| {preset} | {shape} | {used} | {_cell(ours)} | {_cell(alone)} | {_cell(base)} | {vs_op} | {eager:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
