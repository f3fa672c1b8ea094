"""Run `rope-export export-hf` over every preset's config (text and vision parts, both
exporters) and print a markdown table: nodes patched vs unpatched, RotaryEmbedding nodes,
onnxruntime difference against the unpatched transformers model, or the failure.

    python tools/hf_export_matrix.py [--layers 2] [--json out.json] > table.md
    python tools/hf_export_matrix.py --model-types glm4 llama4_text ... > families.md
    python tools/hf_export_matrix.py --with-past 16 [--model-types ...] > decode.md

``--with-past N``: export-hf --with-past of every text part instead, each generating N tokens
greedily on onnxruntime against transformers' generate (batch 2, left-padded; VLMs: an image).

``--model-types``: transformers' default config of each model type instead of the presets
(with `rope_export.architectures.CONFIG_FIXES`, e.g. Zamba2's use_mem_rope), text part.
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


def _cases(model_types):
    """(label, name, config, part) for each preset part, or each model type's default config."""
    if model_types:
        import transformers

        from rope_export.architectures import CONFIG_FIXES

        transformers.logging.set_verbosity_error()
        for model_type in model_types:
            yield model_type, model_type, {**transformers.AutoConfig.for_model(model_type).to_dict(),
                                           **CONFIG_FIXES.get(model_type, {})}, "text"
        return
    for preset_id in rx.list_presets():
        preset, _, part = preset_id.partition(":")
        config = rx.preset_info(preset)["config"]
        yield preset_id, preset, config, part or select_part(config, None)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--model-types", nargs="+", help="transformers model types (default configs) instead of the presets")
    parser.add_argument("--exporters", nargs="+", default=["dynamo", "legacy"])
    parser.add_argument("--with-past", type=int, metavar="N", help="decoders with a KV cache, N tokens generated")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.with_past:
        return _with_past(args)
    rows = []
    print(f"| {'model type' if args.model_types else 'preset'} | part | exporter | model | nodes (unpatched) | "
          "RotaryEmbedding | max abs diff / tolerance |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset_id, preset, config, part in _cases(args.model_types):
            for exporter in args.exporters:
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


def _with_past(args) -> int:
    from rope_export.hf.with_past import check_generation, export_with_past

    rows = []
    print(f"| {'model type' if args.model_types else 'preset'} | model | prompt | tokens | max logit diff / tolerance |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset_id, _, config, part in _cases(args.model_types):
            if part != "text":
                continue
            print(preset_id, file=sys.stderr)
            path = os.path.join(tmp, "decoder.onnx")
            try:
                model, kind = export_with_past(config, path, layers=args.layers)
                r = check_generation(model, kind, path, steps=args.with_past, batch=2)
                first = r.first_difference
                cells = [r.model, r.prompt, "identical" if first is None else f"differ from step {first}",
                         f"{r.max_logit_diff:.2g} / {r.tolerance:.2g} {'PASS' if r.passed else 'FAIL'}"]
                rows.append({"preset": preset_id, **r.to_dict()})
            except Exception as exc:  # noqa: BLE001 - the failure (or the refusal) is the finding
                message = error_line(exc)[:140]
                cells = ["-", "-", f"not exported: {message}", "-"]
                rows.append({"preset": preset_id, "error": message})
            print(f"| {preset_id} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
