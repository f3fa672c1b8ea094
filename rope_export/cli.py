"""``rope-export``: a thin command line over the library.

Exit codes: 0 success, 1 validation failed, 2 bad input (missing file, unknown preset, ...).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

DEFAULT_PRESET = "qwen2-vl-7b"


class UsageError(Exception):
    pass


def _spec_from_args(args, required: bool = True):
    from .presets import load_preset
    from .spec import RopeSpec

    if getattr(args, "preset", None) and getattr(args, "hf_config", None):
        raise UsageError("give --preset or --hf-config, not both")
    if getattr(args, "hf_config", None):
        return RopeSpec.from_hf_config(args.hf_config, part=args.part, name=os.path.basename(os.path.dirname(os.path.abspath(args.hf_config))))
    if getattr(args, "preset", None):
        return load_preset(args.preset, part=args.part)
    if required:
        return load_preset(DEFAULT_PRESET, part=args.part)
    return None


def cmd_presets(args) -> int:
    from .presets import list_presets, load_preset, preset_info

    for name in list_presets():
        spec = load_preset(name)
        print(f"{name:24s} {preset_info(name)['variant']}")
        if args.verbose:
            print(f"{'':24s} {spec.describe()}\n{'':24s} source: {preset_info(name)['source']}")
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx

    spec = _spec_from_args(args)
    path = export_onnx(spec, args.out, opset=args.opset, form=args.form, dtype=args.dtype,
                       num_q_heads=args.num_q_heads, num_kv_heads=args.num_kv_heads, table_length=args.table_length)
    print(f"wrote {path}: {spec.describe()} (opset {args.opset}, form {args.form}, {args.dtype})")
    _print_histogram(path)
    if args.validate:
        args.onnx, args.json, args.seed, args.allow_missing, args.rtol, args.atol = path, None, None, False, None, None
        args.engine = None
        args.providers = "cpu"
        return cmd_validate(args, spec=None)
    return 0


def _print_histogram(path: str) -> None:
    import onnx

    model = onnx.load(path, load_external_data=False)
    counts = collections.Counter(n.op_type for n in model.graph.node)
    print(f"nodes: {len(model.graph.node)}  " + ", ".join(f"{op} {n}" for op, n in sorted(counts.items())))


def cmd_inspect(args) -> int:
    import onnx

    from .export import METADATA_SPEC_KEY
    from .spec import RopeSpec

    if not os.path.isfile(args.onnx):
        raise UsageError(f"no such file: {args.onnx}")
    try:
        model = onnx.load(args.onnx, load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{args.onnx} is not an ONNX model ({exc})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    print(f"file: {args.onnx}")
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    print(f"opsets: {opsets}")
    if METADATA_SPEC_KEY in meta:
        spec = RopeSpec.from_dict(meta[METADATA_SPEC_KEY])
        print(f"spec: {spec.describe()}")
        print(f"form: {meta.get('rope_export.form')}  dtype: {meta.get('rope_export.dtype')}  rope_export {meta.get('rope_export.version')}")
        if args.verbose:
            print(json.dumps(spec.to_dict(), indent=2))
    else:
        print("spec: (no rope_export metadata)")
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
            print(f"{kind}: {v.name} {onnx.TensorProto.DataType.Name(t.elem_type).lower()} [{', '.join(dims)}]")
    _print_histogram(args.onnx)
    return 0


def cmd_validate(args, spec=None) -> int:
    from .validate import stderr_progress, validate

    if spec is None and (getattr(args, "preset", None) or getattr(args, "hf_config", None)):
        spec = _spec_from_args(args)
    tol = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    report = validate(args.onnx, spec, providers=providers, seed=args.seed, allow_missing=args.allow_missing,
                      tolerances=tol or None, progress=stderr_progress, engine=getattr(args, "engine", None))
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    print(report.table())
    if args.json:
        from .export import atomic_write

        atomic_write(args.json, report.to_json().encode("utf-8"))
        print(f"report: {args.json}")
    return 0 if report.passed else 1


def cmd_build_engine(args) -> int:
    from .tensorrt import INSTALL_HINT, tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason:
        print(f"rope-export build-engine: TensorRT cannot build engines here: {reason}\n  install: {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    from .tensorrt.engine import Profile, build_engine

    if not os.path.isfile(args.onnx):
        raise UsageError(f"no such file: {args.onnx}")
    meta_dtype = _graph_dtype(args.onnx)
    wanted = "float16" if args.fp16 else "bfloat16" if args.bf16 else None
    if wanted and wanted != meta_dtype:
        raise UsageError(f"--{'fp16' if args.fp16 else 'bf16'} asked, but the graph is {meta_dtype}: engines are built "
                         f"strongly typed (angles stay float32), so export with --dtype {wanted} instead")
    profile = Profile(batch=tuple(args.batch), sequence=tuple(args.sequence))
    path = build_engine(args.onnx, args.out, profile=profile, plugin=args.plugin, timing_cache=args.timing_cache)
    print(f"wrote {path}")
    return 0


def _graph_dtype(path: str) -> str:
    import onnx

    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return meta.get("rope_export.dtype", "float32")


def cmd_export_hf(args) -> int:
    from .hf_export import export_hf
    from .validate import stderr_progress

    if not os.path.isfile(args.config):
        raise UsageError(f"no such file: {args.config}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError('export-hf needs transformers: pip install "rope-export[hf]"') from None
    report = export_hf(args.config, args.out, part=args.part, layers=args.layers, exporter=args.exporter,
                       opset=args.opset, fused=not args.no_fused, seed=args.seed, full_width=args.full_width,
                       compare_unpatched=not args.no_compare, progress=stderr_progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.summary())
    return 0 if report.passed else 1


def cmd_plot(args) -> int:
    from .plot import plot_spec

    spec = _spec_from_args(args)
    print(f"wrote {plot_spec(spec, args.out, title=spec.describe())}")
    return 0


def cmd_bench(args) -> int:
    import platform

    import torch

    from .bench import bench, format_table, plot_scaling, rows_to_json
    from .validate import stderr_progress

    shapes = [tuple([lbl, int(b), int(s)]) for lbl, b, s in (x.split(":") for x in args.shape)] if args.shape else None
    kw = dict(dtype=args.dtype, repeat=args.repeat, threads=args.threads, compile=not args.no_compile, progress=stderr_progress)
    rows = bench(args.preset, shapes=shapes, **kw) if shapes else bench(args.preset, **kw)
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    print(format_table(rows))
    if args.json:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows_to_json(rows, device=device, cpus=os.cpu_count(), torch=torch.__version__, dtype=args.dtype), fh, indent=1)
        print(f"results: {args.json}")
    if args.plot:
        print(f"plot: {plot_scaling(args.preset, args.plot, **kw)}")
    return 0


def _add_spec_args(p, default_note=True):
    p.add_argument("--preset", help=f"a preset name (rope-export presets){'; default ' + DEFAULT_PRESET if default_note else ''}")
    p.add_argument("--hf-config", help="a model's config.json (or its folder)")
    p.add_argument("--part", choices=("text", "vision"), help="sub-config of a multimodal config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rope-export", description="Export rotary position embeddings to ONNX and prove parity.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the built-in model presets")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("export", help="write the rotary graph of a preset or config.json")
    _add_spec_args(p)
    p.add_argument("--out", default="rope.onnx", help="output file (default rope.onnx)")
    p.add_argument("--opset", type=int, default=23)
    p.add_argument("--form", default="auto", choices=("auto", "fused", "decomposed", "contrib", "table", "plugin"))
    p.add_argument("--table-length", type=int, help="form table: rows of the cos/sin table (default max_position_embeddings)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--num-q-heads", type=int, default=4)
    p.add_argument("--num-kv-heads", type=int, default=2)
    p.add_argument("--validate", action="store_true", help="validate the file on onnxruntime CPU afterwards")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", help="run an exported graph on onnxruntime and compare with torch")
    p.add_argument("onnx")
    _add_spec_args(p, default_note=False)
    p.add_argument("--providers", default="cpu", help="comma list: tensorrt,cuda,cpu (default cpu)")
    p.add_argument("--allow-missing", action="store_true", help="an unavailable provider is reported, not failed")
    p.add_argument("--engine", help="also run this TensorRT engine (rope-export build-engine) and compare it")
    p.add_argument("--seed", type=int, help="fixed input seed (default: fresh each run, printed)")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--rtol", type=float)
    p.add_argument("--atol", type=float)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("build-engine", help="build a TensorRT engine (needs TensorRT's builder)")
    p.add_argument("onnx")
    p.add_argument("--out", required=True, help="engine file (.plan)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="assert the graph is float16 (engines are strongly typed)")
    precision.add_argument("--bf16", action="store_true", help="assert the graph is bfloat16")
    p.add_argument("--plugin", action="store_true", help="register the fused MultiAxisRotary plugin before parsing")
    p.add_argument("--batch", type=int, nargs=3, default=(1, 1, 8), metavar=("MIN", "OPT", "MAX"))
    p.add_argument("--sequence", type=int, nargs=3, default=(1, 2048, 8192), metavar=("MIN", "OPT", "MAX"))
    p.add_argument("--timing-cache", help="read and update this timing cache file")
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("bench", help="time every backend against a copy of the same bytes")
    p.add_argument("--preset", default="llama-3.1-8b")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--shape", action="append", metavar="LABEL:B:S",
                   help="e.g. prefill:1:2048 (repeatable; default prefill 2048 and 8192, decode 64x1)")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per backend (median reported)")
    p.add_argument("--threads", type=int, help="torch and onnxruntime intra-op threads")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json", help="write all rows here")
    p.add_argument("--plot", help="also time prefill at 256..8192 tokens and draw time vs length (PNG)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export-hf", help="export a small random transformers model of a config, patched, and validate it")
    p.add_argument("--config", required=True, help="a model's config.json")
    p.add_argument("--part", choices=("text", "vision"), default="text")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    p.add_argument("--opset", type=int, default=23)
    p.add_argument("--no-fused", action="store_true", help="plain elementwise rotary (opsets below 23)")
    p.add_argument("--full-width", action="store_true", help="keep the config's widths (default: at most 4 heads, vocab 512)")
    p.add_argument("--no-compare", action="store_true", help="skip exporting the unpatched model for the node count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("plot", help="draw a spec: axes of the pairs, their speeds, the dims they touch")
    _add_spec_args(p)
    p.add_argument("--out", default="rope_spec.png")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("inspect", help="print an exported graph's spec, inputs, outputs and op histogram")
    p.add_argument("onnx")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the full spec JSON")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, ValueError, OSError, RuntimeError) as exc:
        print(f"rope-export {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
