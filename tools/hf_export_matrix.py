"""Run `rope-export export-hf` over every preset's config (text and vision parts, both
exporters) and print a markdown table: nodes patched vs unpatched, RotaryEmbedding nodes,
onnxruntime difference against the unpatched transformers model, or the failure.

    python tools/hf_export_matrix.py [--layers 2] [--json out.json] > table.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings

import rope_export as rx
from rope_export.hf_config import select_part
from rope_export._util import error_line
from rope_export.hf.export import export_hf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    print("| preset | part | exporter | model | nodes (unpatched) | RotaryEmbedding | max abs diff / tolerance |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset_id in rx.list_presets():
            preset, _, part = preset_id.partition(":")
            config = rx.preset_info(preset)["config"]
            part = part or select_part(config, None)[0]
            for exporter in ("dynamo", "legacy"):
                print(f"{preset_id} {exporter}", file=sys.stderr)
                try:
                    r = export_hf(config, os.path.join(tmp, "m.onnx"), part=part, layers=args.layers, exporter=exporter)
                    before = str(r.nodes_unpatched) if r.nodes_unpatched is not None else f"fails: {r.unpatched_error[:60]}"
                    cells = [r.model, f"{r.nodes} ({before})", str(r.rotary_nodes),
                             f"{r.max_abs_diff:.2g} / {r.tolerance:.2g} {'PASS' if r.passed else 'FAIL'}"]
                    rows.append({"preset": preset_id, "exporter": exporter, **r.to_dict()})
                except Exception as exc:  # noqa: BLE001 - the failure is the finding
                    message = error_line(exc)[:110]
                    cells = ["-", f"export fails: {message}", "-", "-"]
                    rows.append({"preset": preset_id, "exporter": exporter, "error": message})
                print(f"| {preset} | {part} | {exporter} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
