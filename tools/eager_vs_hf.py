"""Our torch module eager against the HF-style module (`rope_export.bench.baselines.HFStyleRotary`)
on CPU, every preset, decode and prefill, at the model's heads and at a 4+2 shard. The two run
alternately, 7 rounds each; the table gives the median ratio (HF time / ours: > 1 means we are
faster), so machine noise hits both sides alike.

    python tools/eager_vs_hf.py [--threads 2] [PRESET ...] > table.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import torch

import rope_export as rx
from rope_export.bench.baselines import HFStyleRotary
from rope_export.presets import heads_of


def _per_call_us(fn, args, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="default: every preset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"{datetime.date.today()}\n")
    print("| preset | decode B=64 model heads | decode B=64 4+2 | prefill S=2048 model heads | prefill S=2048 4+2 |")
    print("|---|---|---|---|---|")
    for preset_id in args.presets or rx.list_presets():
        spec, model = rx.load_preset(preset_id), heads_of(preset_id)
        cells = []
        for batch, seq, (hq, hk) in ((64, 1, model), (64, 1, (4, 2)), (1, 2048, model), (1, 2048, (4, 2))):
            g = torch.Generator().manual_seed(0)
            q = torch.randn(batch, hq, seq, spec.head_dim, generator=g)
            k = torch.randn(batch, hk, seq, spec.head_dim, generator=g)
            pos = torch.randint(0, 100, spec.position_shape(batch, seq), generator=g)
            ours, hf = rx.RotaryEmbedding(spec), HFStyleRotary(spec)
            calls = 200 if seq == 1 else max(2, 20 * 16 // (hq + hk))
            times = {"ours": [], "hf": []}
            with torch.no_grad():
                for fn in (ours, hf):
                    _per_call_us(fn, (q, k, pos), 5)  # warm-up
                for _ in range(args.rounds):
                    times["ours"].append(_per_call_us(ours, (q, k, pos), calls))
                    times["hf"].append(_per_call_us(hf, (q, k, pos), calls))
            ratios = sorted(h / o for h, o in zip(times["hf"], times["ours"]))
            cells.append(f"{ratios[len(ratios) // 2]:.2f}x")
            print(f"{preset_id} B={batch} S={seq} {hq}+{hk}", file=sys.stderr)
        print(f"| {preset_id} ({model[0]}+{model[1]}) | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
