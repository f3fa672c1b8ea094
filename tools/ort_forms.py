"""Which graph form is fastest on onnxruntime CPU, per preset, shape and head count?

Times, in one process, each form's graph (fused: sin/cos in the graph; table: cos/sin rows
gathered, no Sin/Cos) against a numpy copy of q and k into preallocated arrays (the floor), at
the model's own head counts and at a tensor-parallel shard's 4+2, for prefill (1 x 2048) and
decode (64 x 1). Prints time / copy per form; ``auto`` picks by these numbers.

    python tools/ort_forms.py [--presets qwen2-vl-7b llama-3.1-8b] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import numpy as np
import torch

import rope_export as rx
from rope_export.bench.timing import make_timer
from rope_export.export import export_onnx, forms_for
from rope_export.presets import heads_of

SHAPES = (("prefill", 1, 2048), ("decode", 64, 1))


def session(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def measure(preset, threads, repeat, tmp):
    spec = rx.load_preset(preset)
    table_length = spec.max_position_embeddings or 8192
    forms = [f for f in ("fused", "table") if f in forms_for(spec)]
    timer = make_timer("cpu", repeat)
    rows = []
    for heads_label, (hq, hk) in (("model", heads_of(preset)), ("4+2", (4, 2))):
        sessions = {f: session(export_onnx(spec, os.path.join(tmp, f"{f}-{hq}.onnx"), form=f, num_q_heads=hq,
                                           num_kv_heads=hk, table_length=table_length if f == "table" else None), threads)
                    for f in forms}
        for label, batch, seq in SHAPES:
            g = torch.Generator().manual_seed(0)
            sets = []
            for _ in range(4):
                q = torch.randn(batch, hq, seq, spec.head_dim, generator=g).numpy()
                k = torch.randn(batch, hk, seq, spec.head_dim, generator=g).numpy()
                pos = torch.randint(0, max(1, min(4096, table_length - seq)), (batch, 1), generator=g) + torch.arange(seq)
                pos = pos.expand(spec.position_shape(batch, seq)).contiguous().numpy()
                sets.append({"q": q, "k": k, "position_ids": pos})
            copy_sets = [(f["q"], f["k"], np.empty_like(f["q"]), np.empty_like(f["k"])) for f in sets]
            copy = timer(lambda q, k, qd, kd: (np.copyto(qd, q), np.copyto(kd, k)), copy_sets)
            row = {"preset": preset, "heads": heads_label, "hq": hq, "hk": hk, "shape": f"{label} {batch}x{seq}",
                   "copy_ms": copy}
            for form, sess in sessions.items():
                row[form] = timer(lambda f, s=sess: s.run(None, f), [(f,) for f in sets]) / copy
            rows.append(row)
            print(f"{preset:22s} {heads_label:5s} {row['shape']:16s} " +
                  "  ".join(f"{f} {row[f]:.2f}x" for f in forms), flush=True)
    return rows


def markdown(rows) -> str:
    """docs/export.md's Forms table: one line per preset and head count, prefill and decode per form."""
    lines = ["| preset | heads (q+kv) | prefill 1x2048 fused | prefill table | decode 64x1 fused | decode table |",
             "|---|---|---|---|---|---|"]
    keyed = {(r["preset"], r["heads"], r["shape"].split()[0]): r for r in rows}
    for preset, heads in dict.fromkeys((r["preset"], r["heads"]) for r in rows):
        pre, dec = keyed[(preset, heads, "prefill")], keyed[(preset, heads, "decode")]
        cell = lambda r, f: f"{r[f]:.2f}x" if f in r else "-"  # noqa: E731
        lines.append(f"| {preset} | {pre['hq']}+{pre['hk']} | {cell(pre, 'fused')} | {cell(pre, 'table')} | "
                     f"{cell(dec, 'fused')} | {cell(dec, 'table')} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", metavar="JSON", help="print docs/export.md's table of a saved run and stop")
    parser.add_argument("--presets", nargs="*", default=rx.list_presets())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.markdown:
        with open(args.markdown, encoding="utf-8") as fh:
            print(markdown(json.load(fh)["rows"]))
        return
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            rows.extend(measure(preset, args.threads, args.repeat, tmp))
    if args.json:
        import onnxruntime

        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
                       "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
