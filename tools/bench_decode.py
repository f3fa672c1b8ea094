"""Decode-step time of a decoder exported with its KV cache (export-hf --with-past): onnxruntime
CPU against transformers eager on the same weights, one new token (S=1) after P cached ones.

Both contenders are timed round by round in one run (`rope_export.bench.timing.time_interleaved`),
so the ratio holds on a busy machine; the table gives median, min and spread per contender.

    python tools/bench_decode.py --preset llama-3.1-8b --past 128,1024
    python tools/bench_decode.py --hf-config config.json --layers 4 --out decode.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--preset", default="llama-3.1-8b", help="a preset's config (default llama-3.1-8b)")
    p.add_argument("--hf-config", help="a model's config.json instead of a preset")
    p.add_argument("--layers", type=int, default=2, help="decoder layers of the narrowed random model")
    p.add_argument("--past", default="128,1024", help="cached tokens before the timed step, comma separated")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=50, help="timed rounds per past length")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import transformers

    from rope_export.hf.with_past import export_with_past
    from rope_export.presets import preset_info

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    config = args.hf_config or preset_info(args.preset)["config"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "decoder.onnx")
        model, kind = export_with_past(config, path, layers=args.layers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        rows = [(past, _time_step(model, kind, session, int(past), args)) for past in args.past.split(",")]
    name = type(model).__name__
    lines = [f"Decode step (S=1), {name}, {args.layers} layers, narrowed random weights, batch {args.batch}, "
             f"{args.threads} thread(s); {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"onnxruntime {ort.__version__}, transformers {transformers.__version__}", "",
             "| past | onnxruntime median ms (min, spread) | transformers eager median ms (min, spread) | eager / onnxruntime |",
             "|---:|---:|---:|---:|"]
    for past, t in rows:
        o, e = t["onnxruntime"], t["transformers eager"]
        flag = " (noisy)" if o.noisy or e.noisy else ""
        lines.append(f"| {past} | {o.median:.3f} ({o.min:.3f}, {o.spread:.0%}) | {e.median:.3f} ({e.min:.3f}, "
                     f"{e.spread:.0%}) | {e.median / o.median:.2f}x{flag} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def _time_step(model, kind, session, past, args):
    """Both contenders on the same cache of ``past`` random tokens, then one new token."""
    from transformers import DynamicCache

    from rope_export.bench.timing import time_interleaved
    from rope_export.hf.with_past import WithPast, _empty_past

    g = torch.Generator().manual_seed(past)
    batch = args.batch
    ids = torch.randint(0, 500, (batch, past + 1), generator=g)
    mask = torch.ones(batch, past + 1, dtype=torch.int64)
    with torch.no_grad():
        tokens = model.get_input_embeddings()(ids) if kind == "vlm" else ids
        positions = torch.arange(past + 1).expand(batch, -1)
        positions = positions.expand(3, batch, -1).contiguous() if kind == "vlm" else positions.contiguous()
        wrapper = WithPast(model, kind)
        cached = wrapper(tokens[:, :past], mask[:, :past], positions[..., :past], *_empty_past(wrapper, batch))[1:]
    feeds = {wrapper.input_names[0]: tokens[:, past:].numpy(), "attention_mask": mask.numpy(),
             "position_ids": positions[..., past:].numpy(),
             **{n: t.numpy() for n, t in zip(wrapper.input_names[3:], cached)}}

    def onnx_step():
        session.run(None, feeds)

    def eager_step():
        cache = DynamicCache()
        for i in range(wrapper.num_layers):
            cache.update(cached[2 * i], cached[2 * i + 1], i)
        with torch.no_grad():
            model_inputs = {wrapper.input_names[0]: tokens[:, past:]}
            wrapper.model(**model_inputs, attention_mask=mask, position_ids=positions[..., past:],
                          **{wrapper.cache_arg: cache}, use_cache=True)

    # same logits first: the timed step is the step that generates identically
    want = wrapper(tokens[:, past:], mask, positions[..., past:], *cached)[0].detach().numpy()
    got = session.run(None, feeds)[0]
    if not np.allclose(got, want, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(want).max()))):
        sys.exit(f"past {past}: onnxruntime logits differ from transformers by {np.abs(got - want).max():.3g}")
    return time_interleaved({"onnxruntime": (onnx_step, [()]), "transformers eager": (eager_step, [()])}, "cpu",
                            args.repeat)


if __name__ == "__main__":
    sys.exit(main())
