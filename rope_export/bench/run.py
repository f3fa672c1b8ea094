"""Benchmark every path of one preset against the memory floor, in one process.

RoPE is memory-bound: the floor is reading q and k and writing them back once, so every
backend is reported as time / copy time, with the copy of the same bytes measured in the
same run (a numpy copy on CPU, a device-to-device copy on GPU).

Backends: an HF-style rotate_half module (what users run today) eager, our torch module eager
and under torch.compile, onnxruntime on our fused / table / decomposed / plugin-form graphs,
onnxruntime on torch's own dynamo export of the HF-style module (the baseline), onnxruntime's
RotaryEmbedding op fed precomputed cos/sin (the op alone), the Triton kernel (CUDA only) and
TensorRT (skipped: no builder here). onnxruntime rows run on its CPU provider. Backends are
timed interleaved, round by round, so a machine that gets busier mid-run slows them alike; a
row whose median is far above its fastest call is flagged noisy.

    rope-export bench --preset llama-3.1-8b [--json out.json] [--plot scaling.png]
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .._util import torch_dtype
from ..export.forms import forms_for
from ..export.graph import export_onnx
from ..modules import RotaryEmbedding
from ..presets import heads_of, load_preset
from ..spec import RopeSpec
from .baselines import HFStyleRotary, hf_baseline_graph, op_alone_graph
from .timing import NOISY_SPREAD, time_interleaved

__all__ = ["BenchRow", "bench", "format_table", "rows_to_json", "plot_scaling", "DEFAULT_SHAPES"]

DEFAULT_SHAPES = (("prefill", 1, 2048), ("prefill", 1, 8192), ("decode", 64, 1))


@dataclass
class BenchRow:
    """One backend at one shape. ``ms``: the median call; ``min_ms``; ``spread``: median / min - 1
    (above `timing.NOISY_SPREAD` the note says the row is noisy). ``x_copy`` and
    ``speedup_vs_hf`` are ratios of medians measured in the same interleaved rounds."""

    preset: str
    shape: str
    backend: str
    ms: float | None
    gbps: float | None
    x_copy: float | None
    speedup_vs_hf: float | None
    note: str = ""
    batch: int = 0
    seq: int = 0
    min_ms: float | None = None
    spread: float | None = None


def _ort_session(path: str, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def bench(preset: str | RopeSpec, *, shapes=DEFAULT_SHAPES, dtype: str = "float32", device: str | None = None,
          heads: tuple[int, int] | None = None,
          repeat: int = 30, threads: int | None = None, compile: bool = True, onnx: bool = True,
          progress=None) -> list[BenchRow]:
    """Time every backend for ``preset`` (a preset name, or a `RopeSpec` with ``heads``) at
    ``shapes`` ((label, batch, seq), ...), with the model's own head counts or ``heads`` =
    (Hq, Hk) (a tensor-parallel shard's, say). Backends are timed interleaved, ``repeat``
    rounds (`timing.time_interleaved`)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tdtype = torch_dtype(dtype)
    if threads:
        torch.set_num_threads(threads)
    if isinstance(preset, RopeSpec):
        if heads is None:
            raise ValueError("bench(spec) needs heads=(Hq, Hk): a spec does not know its model's head counts")
        spec, preset = preset, preset.name or "spec"
    else:
        spec = load_preset(preset)
    hq, hk = heads or heads_of(preset)
    ours = RotaryEmbedding(spec).to(device)
    hf = HFStyleRotary(spec).to(device)
    compiled = torch.compile(ours) if compile else None
    triton_reason = None
    if device == "cuda":
        from ..kernels import triton_available

        triton_reason = triton_available(device)
        fused = RotaryEmbedding(spec, backend="triton").to(device) if triton_reason is None else None
    else:
        triton_reason = "the Triton kernel runs on CUDA tensors"
    sessions, ort_reason = {}, None
    tmp = tempfile.TemporaryDirectory()
    if onnx and dtype == "bfloat16":
        ort_reason = "onnxruntime CPU has no bfloat16 kernels for these ops"
    elif onnx:
        try:
            usable = forms_for(spec)
            for form in ("fused", "table", "decomposed", "plugin"):
                if form not in usable or (form == "table" and not spec.max_position_embeddings):
                    continue
                label = f"ort {'plugin-form' if form == 'plugin' else form} (ours)"
                p = export_onnx(spec, os.path.join(tmp.name, f"{form}.onnx"), form=form, dtype=dtype, num_q_heads=hq,
                                num_kv_heads=hk)
                sessions[label] = _ort_session(p, threads)
            sessions["ort HF-style dynamo export (baseline)"] = _ort_session(
                hf_baseline_graph(spec, os.path.join(tmp.name, "hf.onnx"), hq, hk, tdtype), threads)
            op_alone = op_alone_graph(spec, hq, hk, dtype)
            sessions["ort RotaryEmbedding fed cos/sin"] = _ort_session(op_alone.SerializeToString(), threads)
        except ImportError as exc:
            ort_reason = f"onnxruntime missing ({exc})"
    rows: list[BenchRow] = []
    for label, batch, seq in shapes:
        shape = f"{label} B={batch} S={seq} H={hq}+{hk}"
        nbytes = 2 * batch * (hq + hk) * seq * spec.head_dim * tdtype.itemsize
        copies = 3 if nbytes > 50e6 else 8
        g = torch.Generator().manual_seed(0)
        sets = []
        for _ in range(copies):
            q = torch.randn(batch, hq, seq, spec.head_dim, generator=g).to(device=device, dtype=tdtype)
            k = torch.randn(batch, hk, seq, spec.head_dim, generator=g).to(device=device, dtype=tdtype)
            # Positions the model was trained for, so every form (the table too) is timed: an
            # image's (row, column) inside the encoder's grid; text from below 4096, inside the context.
            if spec.num_axes == 2:
                pos = torch.randint(0, spec.max_position_embeddings or 64, spec.position_shape(batch, seq), generator=g)
            else:
                room = 4096 if not spec.max_position_embeddings else min(4096, spec.max_position_embeddings - seq)
                base = torch.randint(0, max(1, room), (batch, 1), generator=g) + torch.arange(seq)
                pos = base.expand(spec.position_shape(batch, seq)).contiguous()
            sets.append((q, k, pos.to(device)))
        contenders: dict[str, tuple] = {}
        notes: dict[str, str] = {}

        def run(name, fn, data=sets):
            contenders[name] = (fn, data)

        if device == "cuda":
            outs = [(torch.empty_like(q), torch.empty_like(k)) for q, k, _ in sets]
            run("copy (floor)", lambda q, k, p, i: (outs[i][0].copy_(q), outs[i][1].copy_(k)),
                [(q, k, p, i) for i, (q, k, p) in enumerate(sets)])
        else:
            if tdtype == torch.bfloat16:
                dst = [(torch.empty_like(q), torch.empty_like(k)) for q, k, _ in sets]
                run("copy (floor)", lambda q, k, i: (dst[i][0].copy_(q), dst[i][1].copy_(k)),
                    [(q, k, i) for i, (q, k, _) in enumerate(sets)])
                notes["copy (floor)"] = "torch copy_ (numpy has no bfloat16)"
            else:
                # Into preallocated arrays: a fresh allocation would time page faults, not memory traffic.
                np_sets = [(q.numpy(), k.numpy(), np.empty_like(q.numpy()), np.empty_like(k.numpy())) for q, k, _ in sets]
                run("copy (floor)", lambda q, k, qd, kd: (np.copyto(qd, q), np.copyto(kd, k)), np_sets)
        with torch.no_grad():
            run("HF-style torch eager", lambda q, k, p: hf(q, k, p))
            run("ours torch eager", lambda q, k, p: ours(q, k, p))
            if compiled is not None:
                run("ours torch.compile", lambda q, k, p: compiled(q, k, p))
                notes["ours torch.compile"] = "compile time excluded"
            if device == "cuda" and triton_reason is None:
                run("ours Triton kernel", lambda q, k, p: fused(q, k, p))
        if sessions:
            feeds = [{"q": q.cpu().numpy(), "k": k.cpu().numpy(), "position_ids": p.cpu().numpy()} for q, k, p in sets]
            for name, sess in sessions.items():
                if name.startswith("ort RotaryEmbedding fed"):
                    host_rope = RotaryEmbedding(spec)  # onnxruntime runs on the host: cos/sin there too
                    with torch.no_grad():
                        cs = [host_rope.cos_sin(p.cpu()) for _, _, p in sets]
                    data = [({"q": f["q"], "k": f["k"], "cos": c.numpy().astype(f["q"].dtype), "sin": s.numpy().astype(f["q"].dtype)},)
                            for f, (c, s) in zip(feeds, cs)]
                else:
                    data = [(f,) for f in feeds]
                if name.startswith("ort table") and max(int(p.max()) for _, _, p in sets) >= spec.max_position_embeddings:
                    notes[name] = "positions past the table"
                    continue
                run(name, lambda f, sess=sess: sess.run(None, f), data)
                if device == "cuda":
                    notes[name] = "onnxruntime CPU provider (host inputs)"
        timings = time_interleaved(contenders, device, repeat,
                                   progress=(lambda m: progress(f"{preset} {shape}: {m}")) if progress else None)
        ms = {name: t.median for name, t in timings.items()}
        copy = ms["copy (floor)"]
        hf_ms = ms["HF-style torch eager"]
        for name, t in ms.items():
            timing = timings[name]
            note = "; ".join(filter(None, [notes.get(name, ""),
                                           f"noisy: spread {timing.spread:.0%}" if timing.noisy else ""]))
            rows.append(BenchRow(preset, shape, name, t, nbytes / t / 1e6, t / copy, hf_ms / t, note, batch, seq,
                                 timing.min, timing.spread))
        skipped = {"ours Triton kernel": triton_reason,
                   "TensorRT": "not timed by this benchmark (engines: rope-export build-engine, then validate --engine on a GPU)"}
        if ort_reason:
            skipped["onnxruntime graphs"] = ort_reason
        for name, why in skipped.items():
            if why:
                rows.append(BenchRow(preset, shape, name, None, None, None, None, f"skipped: {why}", batch, seq))
        for name, why in notes.items():
            if name not in ms:
                rows.append(BenchRow(preset, shape, name, None, None, None, None, f"skipped: {why}", batch, seq))
    tmp.cleanup()
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """The rows as a table, and a last line that says when some rows are too noisy to trust."""
    head = ("preset", "shape", "backend", "median ms", "min ms", "spread", "GB/s", "x copy", "vs HF eager", "note")
    lines = [head]
    for r in rows:
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        lines.append((r.preset, r.shape, r.backend, f(r.ms, ".3f"), f(r.min_ms, ".3f"), f(r.spread, ".0%"),
                      f(r.gbps, ".1f"), f(r.x_copy, ".2f"), f(r.speedup_vs_hf, ".2f"), r.note))
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(l, widths)).rstrip() for l in lines)
    noisy = [r for r in rows if r.spread is not None and r.spread > NOISY_SPREAD]
    if noisy:
        text += (f"\n{len(noisy)} of {sum(r.ms is not None for r in rows)} rows are noisy (spread above "
                 f"{NOISY_SPREAD:.0%}): the machine was busy; rerun on an idle one before trusting their ratios")
    return text


def rows_to_json(rows: list[BenchRow], **meta) -> dict:
    return {**meta, "rows": [asdict(r) for r in rows]}


def plot_scaling(rows: list[BenchRow], path: str, *, title: str) -> str:
    """Time vs sequence length per backend from a length sweep's rows (batch 1), the copy floor
    drawn dashed; ``title`` should say the machine, threads and provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plot import save_png

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r.backend for r in rows if r.ms is not None):
        pts = [(r.seq, r.ms) for r in rows if r.backend == name and r.ms is not None]
        style = dict(ls="--", color="black") if name.startswith("copy") else {}
        ax.plot(*zip(*pts), marker="o", label=name, **style)
    ax.set_xscale("log", base=2), ax.set_yscale("log")
    ax.set_xlabel("sequence length (batch 1)"), ax.set_ylabel("ms (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path
