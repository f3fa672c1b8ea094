"""Which graph form is fastest on onnxruntime CPU, per preset, shape and head count?

Times, in one process and round by round (every contender once a round), each form's graph
(fused: sin/cos in the graph; table: cos/sin rows gathered, no Sin/Cos) against a numpy copy
of q and k into preallocated arrays (the floor), at the model's own head counts and at a
tensor-parallel shard's 4+2, for prefill (1 x 2048) and decode (64 x 1). Prints time / copy
per form; ``auto`` picks by these numbers. The table form is also timed without its guard
(``unguarded``: the five ops that send positions outside the table to its NaN row removed)
and again as a second session of the same graph (``table2``, the run's noise), so the guard's
cost is a ratio of one run beside the noise it must stay in.

    python tools/ort_forms.py [--presets qwen2-vl-7b llama-3.1-8b] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile

import numpy as np
import onnx
import torch

import rope_export as rx
from rope_export.bench import unguarded_table_graph
from rope_export.bench.timing import time_interleaved
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
    rows = []
    for heads_label, (hq, hk) in (("model", heads_of(preset)), ("4+2", (4, 2))):
        paths = {f: export_onnx(spec, os.path.join(tmp, f"{f}-{hq}.onnx"), form=f, num_q_heads=hq, num_kv_heads=hk,
                                table_length=table_length if f == "table" else None, force=f == "table")
                 for f in forms}
        if "table" in paths:
            paths["unguarded"] = os.path.join(tmp, f"unguarded-{hq}.onnx")
            onnx.save(unguarded_table_graph(onnx.load(paths["table"])), paths["unguarded"])
            paths["table2"] = paths["table"]
        sessions = {f: session(p, threads) for f, p in paths.items()}
        for label, batch, seq in SHAPES:
            g = torch.Generator().manual_seed(0)
            sets = []
            for _ in range(4):
                q = torch.randn(batch, hq, seq, spec.head_dim, generator=g).numpy()
                k = torch.randn(batch, hk, seq, spec.head_dim, generator=g).numpy()
                # inside the table (a vision table may be shorter than the sequence: wrap round)
                pos = (torch.randint(0, max(1, min(4096, table_length - seq)), (batch, 1), generator=g)
                       + torch.arange(seq)) % table_length
                pos = pos.expand(spec.position_shape(batch, seq)).contiguous().numpy()
                sets.append({"q": q, "k": k, "position_ids": pos})
            copy_sets = [(f["q"], f["k"], np.empty_like(f["q"]), np.empty_like(f["k"])) for f in sets]
            # Round by round, every contender once per round: a machine slowing down mid-run
            # moves them alike, so the ratios (table / unguarded, table / table2) hold.
            contenders = {"copy": (lambda q, k, qd, kd: (np.copyto(qd, q), np.copyto(kd, k)), copy_sets)}
            contenders.update({form: (lambda f, s=sess: s.run(None, f), [(f,) for f in sets])
                               for form, sess in sessions.items()})
            ms = {name: t.median for name, t in time_interleaved(contenders, "cpu", repeat).items()}
            copy = ms.pop("copy")
            row = {"preset": preset, "heads": heads_label, "hq": hq, "hk": hk, "shape": f"{label} {batch}x{seq}",
                   "copy_ms": copy}
            row.update({form: t / copy for form, t in ms.items()})
            rows.append(row)
            print(f"{preset:22s} {heads_label:5s} {row['shape']:16s} " +
                  "  ".join(f"{f} {row[f]:.2f}x" for f in sessions), flush=True)
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


def guard_markdown(rows) -> str:
    """The table form's time with its guard over without, per row, beside the same graph's second
    session (the run's noise); docs/export.md quotes their medians."""
    lines = ["| preset | heads (q+kv) | shape | table / unguarded | table / table2 (noise) |", "|---|---|---|---|---|"]
    rows = [r for r in rows if "unguarded" in r]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['hq']}+{r['hk']} | {r['shape']} | {r['table'] / r['unguarded']:.3f} | "
                     f"{r['table'] / r['table2']:.3f} |")
    for label, other in (("table / unguarded", "unguarded"), ("table / table2", "table2")):
        ratios = sorted(r["table"] / r[other] for r in rows)
        if ratios:
            lines.append(f"\n{label}: median {statistics.median(ratios):.3f}, range {ratios[0]:.3f} .. "
                         f"{ratios[-1]:.3f} over {len(ratios)} rows")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", metavar="JSON", help="print docs/export.md's table of a saved run and stop")
    parser.add_argument("--presets", nargs="*", default=rx.list_presets())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=200, help="rounds (each contender at most ~10 s)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.markdown:
        with open(args.markdown, encoding="utf-8") as fh:
            rows = json.load(fh)["rows"]
        print(markdown(rows))
        print()
        print(guard_markdown(rows))
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
