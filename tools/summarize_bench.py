"""Summarise `rope-export bench --json` files into the README's CPU targets table.

    python tools/summarize_bench.py results/*.json
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> int:
    print("| preset | shape | ours fused / copy | baseline export / copy | op fed cos/sin / copy | fused / op alone | fused / baseline | ours eager vs HF eager |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        rows = json.load(open(path))["rows"]
        by_shape: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["ms"] is not None:
                by_shape.setdefault(r["shape"], {})[r["backend"]] = r
        for shape, b in by_shape.items():
            fused = b.get("ort fused (ours)")
            base = b.get("ort HF-style dynamo export (baseline)")
            alone = b.get("ort RotaryEmbedding fed cos/sin")
            if not (fused and base and alone):
                continue
            eager = b["HF-style torch eager"]["ms"] / b["ours torch eager"]["ms"]
            print(f"| {rows[0]['preset']} | {shape} | {fused['x_copy']:.2f} | {base['x_copy']:.2f} | {alone['x_copy']:.2f} | "
                  f"{fused['ms'] / alone['ms']:.2f} | {fused['ms'] / base['ms']:.2f} | {eager:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
