"""GPU benchmark of the fused Triton kernel against the memory floor and torch baselines.

Times, in one process, per shape: a device-to-device copy of q and k (the floor: RoPE reads
q and k once and writes them once), the Triton kernel, our torch module eager, an HF-style
rotate_half module eager (what users run today) and that module under torch.compile. CUDA
events after warm-up, median of many synchronised calls (this includes the Python launch
cost), plus CUDA-graph replays of the copy, the raw kernel and the compiled module (the
kernel's own time; "x copy" of graph rows is against the graph-replayed copy). Inputs rotate
through several copies so the L2 cache does not flatter small shapes. Prints a table and writes JSON.

    python tools/bench_kernel.py --out results.json [--preset llama-3.1-8b] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import rope_export as rx
from rope_export.bench import HFStyleRotary, make_timer
from rope_export.kernels.triton_rope import rope_triton

time_cuda = make_timer("cuda", repeat=100, warmup=10)


def time_graph(fn, sets, iters=200):
    """Replay one captured CUDA graph per input set: the kernel's own time, without the
    Python launch cost (how serving stacks run it: CUDA graphs or TensorRT)."""
    for args in sets:
        fn(*args)
    torch.cuda.synchronize()
    graphs = []
    for args in sets:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn(*args)
        graphs.append(g)
    for g in graphs:
        g.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(iters):
        graphs[i % len(graphs)].replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", action="append")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    presets = args.preset or ["llama-3.1-8b", "qwen2-vl-7b"]
    heads = {"llama-3.1-8b": (32, 8), "qwen2-vl-7b": (28, 4)}
    shapes = [("prefill", 1, 2048), ("prefill", 1, 8192), ("decode", 64, 1)]
    rows = []
    dev = torch.cuda.get_device_name()
    print(f"{dev}, torch {torch.__version__}, {args.dtype}")
    print(f"{'preset':14s} {'shape':18s} {'backend':22s} {'ms':>8s} {'GB/s':>8s} {'x copy':>7s} {'vs HF eager':>11s}")
    for preset in presets:
        spec = rx.load_preset(preset)
        hq, hk = heads.get(preset, (32, 8))
        ours = rx.RotaryEmbedding(spec).cuda()
        fused = rx.RotaryEmbedding(spec, backend="triton").cuda()
        hf = HFStyleRotary(spec).cuda()
        hf_compiled = torch.compile(hf)
        for kind, b, s in shapes:
            nbytes = 2 * (b * (hq + hk) * s * spec.head_dim * dtype.itemsize)  # read + write q and k
            copies = max(2, int(4 * 60e6 // max(nbytes, 1)) + 1) if nbytes < 60e6 else 3
            copies = min(copies, 64)
            sets = []
            for i in range(copies):
                q = torch.randn(b, hq, s, spec.head_dim, device="cuda", dtype=dtype)
                k = torch.randn(b, hk, s, spec.head_dim, device="cuda", dtype=dtype)
                base = torch.randint(0, 30000, (b, 1), device="cuda") + torch.arange(s, device="cuda")
                pos = base if spec.num_axes == 1 else base.expand(spec.num_axes, b, s).contiguous()
                sets.append((q, k, pos, torch.empty_like(q), torch.empty_like(k)))
            backends = {
                "d2d copy (floor)": lambda q, k, p, qo, ko: (qo.copy_(q), ko.copy_(k)),
                "triton fused (module)": lambda q, k, p, qo, ko: fused(q, k, p),
                "triton kernel (raw)": lambda q, k, p, qo, ko: rope_triton(
                    q, k, p if p.dim() == 3 else p[None], ours.inv_freq, ours.axis_of_pair,
                    interleaved=spec.layout == "interleaved", rotary_dim=spec.rotary_dim, q_out=qo, k_out=ko),
                "ours torch eager": lambda q, k, p, qo, ko: ours(q, k, p),
                "HF-style eager": lambda q, k, p, qo, ko: hf(q, k, p),
                "HF-style compiled": lambda q, k, p, qo, ko: hf_compiled(q, k, p),
            }
            ms = {name: time_cuda(fn, sets) for name, fn in backends.items()}
            ms["d2d copy, CUDA graph"] = time_graph(backends["d2d copy (floor)"], sets)
            ms["triton kernel, CUDA graph"] = time_graph(backends["triton kernel (raw)"], sets)
            ms["HF-style compiled, CUDA graph"] = time_graph(backends["HF-style compiled"], sets)
            for name, t in ms.items():
                row = dict(preset=preset, shape=f"{kind} B={b} S={s}", backend=name, ms=t, gbps=nbytes / t / 1e6,
                           x_copy=t / ms["d2d copy, CUDA graph" if "graph" in name else "d2d copy (floor)"],
                           speedup_vs_hf=ms["HF-style eager"] / t, device=dev,
                           dtype=args.dtype, bytes=nbytes)
                rows.append(row)
                print(f"{preset:14s} {row['shape']:18s} {name:22s} {t:8.4f} {row['gbps']:8.0f} {row['x_copy']:7.2f} {row['speedup_vs_hf']:11.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"device": dev, "torch": torch.__version__, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
