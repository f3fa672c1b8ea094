"""Is a cos/sin table lookup faster than computing sin/cos in the graph? (onnxruntime)

Times, in one process, for a 1D preset: our fused graph (angles, Cos and Sin in the graph, then
RotaryEmbedding) against the same RotaryEmbedding op fed a precomputed cos/sin table through its
position_ids input (the table form bounds positions to the table length), and a numpy copy of
q and k as the floor. Prints times as ratios to the copy.

    python tools/table_vs_ingraph.py [--preset llama-3.1-8b] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch

import rope_export as rx


def table_graph(spec, table_len: int, heads_q: int, heads_k: int):
    """Two RotaryEmbedding nodes that look cos/sin up by position_ids (a benchmark baseline)."""
    from onnx import TensorProto, helper

    dim, half = spec.head_dim, spec.rotary_dim // 2
    attrs = dict(rotary_embedding_dim=spec.rotary_dim, interleaved=int(spec.layout == "interleaved"))
    nodes = [helper.make_node("RotaryEmbedding", [x, "cos_cache", "sin_cache", "position_ids"], [f"{x}_rot"],
                              num_heads=h, **attrs) for x, h in (("q", heads_q), ("k", heads_k))]
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f32, ["B", heads_q, "S", dim]),
              helper.make_tensor_value_info("k", f32, ["B", heads_k, "S", dim]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["B", "S"]),
              helper.make_tensor_value_info("cos_cache", f32, [table_len, half]),
              helper.make_tensor_value_info("sin_cache", f32, [table_len, half])]
    outputs = [helper.make_tensor_value_info(f"{x}_rot", f32, ["B", h, "S", dim]) for x, h in (("q", heads_q), ("k", heads_k))]
    graph = helper.make_graph(nodes, "table_rope", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def timeit(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-3.1-8b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    spec = rx.load_preset(args.preset)
    if spec.num_axes != 1 or spec.length_rule is not None:
        raise SystemExit("pick a one-axis preset without a length rule")
    hq, hk = 32, 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    shapes = {"prefill B=1 S=2048": (1, 2048), "prefill B=1 S=8192": (1, 8192), "decode B=64 S=1": (64, 1)}
    table_len = 16384
    rope = rx.RotaryEmbedding(spec)
    cos_t, sin_t = (t[0].numpy() for t in rope.cos_sin(torch.arange(table_len)[None]))
    with tempfile.TemporaryDirectory() as tmp:
        fused = ort.InferenceSession(rx.export_onnx(spec, f"{tmp}/f.onnx", num_q_heads=hq, num_kv_heads=hk), opts,
                                     providers=["CPUExecutionProvider"])
        table = ort.InferenceSession(table_graph(spec, table_len, hq, hk).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        print(f"onnxruntime {ort.__version__} CPU, {args.threads} threads, {args.preset}, Hq={hq} Hk={hk} D={spec.head_dim}")
        print(f"{'shape':22s} {'copy':>8s} {'in-graph':>10s} {'table':>10s}  (time / copy time)")
        for label, (b, s) in shapes.items():
            rng = np.random.default_rng(0)
            sets = [(rng.standard_normal((b, hq, s, spec.head_dim), dtype=np.float32),
                     rng.standard_normal((b, hk, s, spec.head_dim), dtype=np.float32),
                     rng.integers(0, table_len - s, (b, 1)) + np.arange(s)[None]) for _ in range(4)]
            i = iter(range(10**9))
            pick = lambda: sets[next(i) % len(sets)]  # noqa: E731 - rotate inputs so caches do not flatter

            def copy():
                q, k, _ = pick()
                q.copy(), k.copy()

            def run_fused():
                q, k, p = pick()
                fused.run(None, {"q": q, "k": k, "position_ids": p})

            def run_table():
                q, k, p = pick()
                table.run(None, {"q": q, "k": k, "position_ids": p, "cos_cache": cos_t, "sin_cache": sin_t})

            t_copy = timeit(copy, args.repeat)
            t_fused, t_table = timeit(run_fused, args.repeat), timeit(run_table, args.repeat)
            print(f"{label:22s} {1.0:8.2f} {t_fused / t_copy:10.2f} {t_table / t_copy:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
