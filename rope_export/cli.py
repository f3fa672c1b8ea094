"""``rope-export``: a thin command line over the library.

Exit codes: 0 success, 1 validation failed, 2 bad input (missing file, unknown preset, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._util import DEFAULT_PROVIDERS, DTYPE_NAMES

DEFAULT_PRESET = "qwen2-vl-7b"


class UsageError(Exception):
    pass


def _spec_from_args(args, required: bool = True):
    from .presets import load_preset
    from .spec import RopeSpec

    if getattr(args, "preset", None) and getattr(args, "hf_config", None):
        raise UsageError("give --preset or --hf-config, not both")
    layer_type = getattr(args, "layer_type", None)
    if getattr(args, "hf_config", None):
        return RopeSpec.from_hf_config(args.hf_config, part=args.part, layer_type=layer_type,
                                       name=os.path.basename(os.path.dirname(os.path.abspath(args.hf_config))))
    if getattr(args, "preset", None):
        return load_preset(args.preset, part=args.part, layer_type=layer_type)
    if required:
        return load_preset(DEFAULT_PRESET, part=args.part, layer_type=layer_type)
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
    from .export import export_onnx, read_graph

    spec = _spec_from_args(args)
    path = export_onnx(spec, args.out, opset=args.opset, form=args.form, dtype=args.dtype,
                       num_q_heads=args.num_q_heads, num_kv_heads=args.num_kv_heads, table_length=args.table_length)
    print(f"wrote {path}: {spec.describe()} (opset {args.opset}, form {args.form}, {args.dtype})")
    print(read_graph(path).histogram())
    if args.validate:
        return _validate(path, None, providers=DEFAULT_PROVIDERS)
    return 0


def cmd_inspect(args) -> int:
    from .export import read_graph

    info = read_graph(args.onnx)
    print(f"file: {info.path}")
    print(f"opsets: {', '.join(f'{domain} {version}' for domain, version in info.opsets.items())}")
    if info.spec is not None:
        print(f"spec: {info.spec.describe()}")
        print(f"form: {info.form}  dtype: {info.dtype}  rope_export {info.version}")
        if args.verbose:
            print(json.dumps(info.spec.to_dict(), indent=2))
    else:
        print("spec: (no rope_export metadata)")
    for kind, values in (("input", info.inputs), ("output", info.outputs)):
        for name, tensor in values.items():
            print(f"{kind}: {name} {tensor.describe()}")
    print(info.histogram())
    return 0


def cmd_validate(args) -> int:
    spec = _spec_from_args(args, required=False)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    tolerances = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
    return _validate(args.onnx, spec, providers=providers, seed=args.seed, allow_missing=args.allow_missing,
                     tolerances=tolerances or None, engine=args.engine, json_path=args.json)


def _validate(path, spec, *, providers, seed=None, allow_missing=False, tolerances=None, engine=None,
              json_path=None) -> int:
    from ._util import atomic_write, clear_progress, stderr_progress
    from .validate import validate

    report = validate(path, spec, providers=providers, seed=seed, allow_missing=allow_missing, tolerances=tolerances,
                      progress=stderr_progress, engine=engine)
    clear_progress()
    print(report.table())
    if json_path:
        atomic_write(json_path, report.to_json().encode("utf-8"))
        print(f"report: {json_path}")
    return 0 if report.passed else 1


def cmd_build_engine(args) -> int:
    from .tensorrt import INSTALL_HINT, tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason:
        print(f"rope-export build-engine: TensorRT cannot build engines here: {reason}\n  install: {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    from .export import read_graph
    from .tensorrt.engine import Profile, build_engine

    graph_dtype = read_graph(args.onnx).dtype
    wanted = "float16" if args.fp16 else "bfloat16" if args.bf16 else None
    if wanted and wanted != graph_dtype:
        raise UsageError(f"--{'fp16' if args.fp16 else 'bf16'} asked, but the graph is {graph_dtype}: engines are built "
                         f"strongly typed (angles stay float32), so export with --dtype {wanted} instead")
    profile = Profile(batch=tuple(args.batch), sequence=tuple(args.sequence))
    path = build_engine(args.onnx, args.out, profile=profile, plugin=args.plugin, timing_cache=args.timing_cache)
    print(f"wrote {path}")
    return 0


def cmd_export_hf(args) -> int:
    from ._util import stderr_progress
    from .hf.export import export_hf

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

    from ._util import clear_progress, stderr_progress
    from .bench import bench, format_table, plot_scaling, rows_to_json

    shapes = [tuple([lbl, int(b), int(s)]) for lbl, b, s in (x.split(":") for x in args.shape)] if args.shape else None
    kw = dict(dtype=args.dtype, repeat=args.repeat, threads=args.threads, compile=not args.no_compile, progress=stderr_progress)
    rows = bench(args.preset, shapes=shapes, **kw) if shapes else bench(args.preset, **kw)
    clear_progress()
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
    p.add_argument("--part", help="text, vision, or the key path of a nested config (audio_config, ...)")
    p.add_argument("--layer-type", help="decoders with a rotary per layer type (Gemma 3): full_attention, sliding_attention, ...")


def build_parser() -> argparse.ArgumentParser:
    from .export.forms import FORMS

    parser = argparse.ArgumentParser(prog="rope-export", description="Export rotary position embeddings to ONNX and prove parity.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the built-in model presets")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("export", help="write the rotary graph of a preset or config.json")
    _add_spec_args(p)
    p.add_argument("--out", default="rope.onnx", help="output file (default rope.onnx)")
    p.add_argument("--opset", type=int, default=23)
    p.add_argument("--form", default="auto", choices=FORMS)
    p.add_argument("--table-length", type=int, help="form table: rows of the cos/sin table (default max_position_embeddings)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    p.add_argument("--num-q-heads", type=int, default=4)
    p.add_argument("--num-kv-heads", type=int, default=2)
    p.add_argument("--validate", action="store_true", help="validate the file on onnxruntime CPU afterwards")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", help="run an exported graph on onnxruntime and compare with torch")
    p.add_argument("onnx")
    _add_spec_args(p, default_note=False)
    p.add_argument("--providers", default=",".join(DEFAULT_PROVIDERS),
                   help=f"comma list: tensorrt,cuda,cpu (default {','.join(DEFAULT_PROVIDERS)})")
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
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
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
