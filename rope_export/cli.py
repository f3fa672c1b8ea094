"""``rope-export``: a thin command line over the library.

Exit codes: 0 success, 1 validation failed, 2 bad input (missing file, unknown preset, ...).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys

from ._util import DEFAULT_PROVIDERS, PipeSafeStdout, printable
from .cli_parser import DEFAULT_PRESET, build_parser


class UsageError(Exception):
    pass


def _spec_from_args(args, required: bool = True):
    from .presets import load_preset
    from .spec import RopeSpec

    if getattr(args, "preset", None) and getattr(args, "hf_config", None):
        raise UsageError("give --preset or --hf-config, not both")
    layer_type = getattr(args, "layer_type", None)
    if getattr(args, "hf_config", None):
        return RopeSpec.from_hf_config(args.hf_config, part=args.part, layer_type=layer_type)
    if getattr(args, "preset", None):
        return load_preset(args.preset, part=args.part, layer_type=layer_type)
    if required:
        return load_preset(DEFAULT_PRESET, part=args.part, layer_type=layer_type)
    return None


def cmd_presets(args) -> int:
    from .presets import list_presets, load_preset, preset_info

    if args.json:
        print(json.dumps({name: {"variant": preset_info(name)["variant"], "source": preset_info(name)["source"],
                                 "spec": load_preset(name).to_dict()} for name in list_presets()}, indent=1))
        return 0
    for name in list_presets():
        print(f"{name:24s} {preset_info(name)['variant']}")
        if args.verbose:
            print(f"{'':24s} {load_preset(name).describe()}\n{'':24s} source: {preset_info(name)['source']}")
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx, read_graph

    if args.table_length is not None and args.form not in ("table", "auto"):
        raise UsageError(f"--table-length applies to --form table, not --form {args.form}")
    if not args.validate and (args.json or args.providers):
        raise UsageError("--providers and --json apply to --validate")
    spec = _spec_from_args(args)
    from ._util import clear_progress, stderr_progress

    path = export_onnx(spec, args.out, opset=args.opset, form=args.form, dtype=args.dtype,
                       num_q_heads=args.num_q_heads, num_kv_heads=args.num_kv_heads, table_length=args.table_length,
                       force=args.force, progress=stderr_progress)
    clear_progress()
    info = read_graph(path)
    print(f"wrote {printable(path)} ({_size(os.path.getsize(path))}): {spec.describe()} (opset {args.opset}, "
          f"form {info.form}{' chosen by auto' if args.form == 'auto' else ''}, {args.dtype})")
    print(info.histogram())
    if args.validate:
        return _validate(path, None, providers=args.providers or ",".join(DEFAULT_PROVIDERS), json_path=args.json)
    return 0


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def cmd_inspect(args) -> int:
    from .export.metadata import read_graph

    info = read_graph(args.onnx)
    if args.json:
        print(json.dumps({"file": info.path, "opsets": info.opsets, "form": info.form, "dtype": info.dtype,
                          "version": info.version, "table_length": info.table_length,
                          "spec": info.spec.to_dict() if info.spec else None,
                          "inputs": {n: t.describe() for n, t in info.inputs.items()},
                          "outputs": {n: t.describe() for n, t in info.outputs.items()}, "ops": dict(info.ops),
                          "metadata": info.metadata}, indent=1))
        return 0
    print(f"file: {printable(info.path)}")
    print(f"opsets: {', '.join(f'{domain} {version}' for domain, version in info.opsets.items())}")
    if info.spec is not None:
        print(f"spec: {printable(info.spec.describe())}")
        print(f"form: {printable(info.form)}  dtype: {printable(info.dtype)}  rope_export {printable(str(info.version))}")
        if args.verbose:
            print(json.dumps(info.spec.to_dict(), indent=2))
    elif "rope_export.serving" in info.metadata:  # export-hf --with-past
        from .serving import parse_metadata

        try:
            serving = parse_metadata(info.metadata["rope_export.serving"])
            print(f"decoder with its KV cache: {printable(str(serving.get('model')))}, {serving['layers']} layers, "
                  f"{serving['tokens']} in, positions: {printable(str(serving.get('rule')))}"
                  + (f", cache recomputed at {serving['recompute_cache_at']}" if serving.get("recompute_cache_at") else "")
                  + (f", vision graph {printable(serving['vision_graph'])}" if serving.get("vision_graph") else ""))
        except ValueError as exc:
            print(f"decoder metadata: {printable(str(exc))}")
    else:
        print("spec: (no rope_export metadata)")
    for kind, values in (("input", info.inputs), ("output", info.outputs)):
        for name, tensor in values.items():
            print(f"{kind}: {printable(name)} {tensor.describe()}")
    print(info.histogram())
    return 0


def cmd_validate(args) -> int:
    spec = _spec_from_args(args, required=False)
    tolerances = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
    return _validate(args.onnx, spec, providers=args.providers, seed=args.seed, allow_missing=args.allow_missing,
                     tolerances=tolerances or None, engine=args.engine, json_path=args.json, case_timeout=args.case_timeout,
                     require_structure=args.require_structure)


def _validate(path, spec, *, providers, seed=None, allow_missing=False, tolerances=None, engine=None,
              json_path=None, case_timeout=60.0, require_structure=False) -> int:
    from ._util import atomic_write, clear_progress, stderr_progress
    from .validate import validate

    report = validate(path, spec, providers=providers, seed=seed, allow_missing=allow_missing, tolerances=tolerances,
                      progress=stderr_progress, engine=engine, case_timeout=case_timeout,
                      require_structure=require_structure)
    clear_progress()
    print(report.table())
    if json_path:
        atomic_write(json_path, report.to_json().encode("utf-8"))
        print(f"report: {printable(json_path)}")
    return 0 if report.passed else 1


def _tensorrt_missing(command: str) -> bool:
    """Say, once, that no TensorRT builder is here and what to install; True when missing."""
    from .tensorrt import INSTALL_HINT, tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason:
        hint = "" if INSTALL_HINT in reason else f"\n  install: {INSTALL_HINT}"
        print(f"rope-export {command}: no TensorRT builder here: {reason}{hint}", file=sys.stderr)
    return reason is not None


def cmd_build_engine(args) -> int:
    if _tensorrt_missing("build-engine"):
        return 2
    from .export import read_graph
    from .tensorrt.engine import Profile, build_engine

    graph_dtype = read_graph(args.onnx).dtype
    wanted = "float16" if args.fp16 else "bfloat16" if args.bf16 else None
    if wanted and wanted != graph_dtype:
        raise UsageError(f"--{'fp16' if args.fp16 else 'bf16'} asked, but the graph is {graph_dtype}: engines are built "
                         f"strongly typed (angles stay float32), so export with --dtype {wanted} instead")
    profile = Profile(batch=tuple(args.batch), sequence=tuple(args.sequence))
    build = build_engine(args.onnx, args.out, profile=profile, plugin=args.plugin, timing_cache=args.timing_cache,
                         compute_capability=args.compute_capability)
    print(f"wrote {printable(args.out)}: {build.tensorrt}, target {build.target}, {build.rotary_layers} ROTARY_EMBEDDING layers")
    return 0


def cmd_check_trt(args) -> int:
    if _tensorrt_missing("check-trt"):
        return 2
    from .tensorrt.check import check_graphs, format_checks

    results = check_graphs(args.onnx, compute_capability=args.compute_capability, plugin=args.plugin)
    print(json.dumps([r.to_dict() for r in results], indent=1) if args.json else format_checks(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_export_hf(args) -> int:
    from ._util import stderr_progress
    from .hf.export import export_hf

    if bool(args.config) == bool(args.preset):
        raise UsageError("give --hf-config FILE or --preset NAME")
    if args.preset:
        from .presets import preset_info

        preset, _, suffix = args.preset.partition(":")
        if suffix and args.part and args.part != suffix:
            raise UsageError(f"--preset {args.preset} names the {suffix} part, --part says {args.part}")
        args.part = suffix or args.part
        config = preset_info(preset)["config"]
    elif not os.path.isfile(args.config) and not os.path.isfile(os.path.join(args.config, "config.json")):
        raise UsageError(f"no such file: {args.config}" + (" (a folder without config.json)" if os.path.isdir(args.config) else ""))
    else:
        config = args.config
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError('export-hf needs transformers: pip install "rope-export[hf]"') from None
    args.part = args.part or "text"
    if args.with_past:
        return _export_with_past(args, config)
    if args.generate is not None or args.batch != 1:
        raise UsageError("--generate and --batch go with --with-past")
    report = export_hf(config, args.out, part=args.part, layers=args.layers, exporter=args.exporter,
                       opset=args.opset, fused=not args.no_fused, seed=args.seed, full_width=args.full_width,
                       compare_unpatched=not args.no_compare, progress=stderr_progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print("\n".join(printable(line) for line in report.summary().splitlines()))
    return 0 if report.passed else 1


def _export_with_past(args, config) -> int:
    from ._util import clear_progress, stderr_progress
    from .hf.with_past import check_generation, export_with_past

    if args.part != "text":
        raise UsageError("--with-past exports the text decoder: drop --part vision")
    for flag, given in (("--exporter legacy", args.exporter != "dynamo"), ("--full-width", args.full_width),
                        ("--no-compare", args.no_compare)):
        if given:
            raise UsageError(f"{flag} does not go with --with-past (dynamo exporter, narrowed widths, checked by generation)")
    model, kind = export_with_past(config, args.out, layers=args.layers, seed=args.seed, opset=args.opset,
                                   fused=not args.no_fused, progress=stderr_progress)
    stderr_progress(f"generating {args.generate or 8} tokens on onnxruntime and with transformers")
    report = check_generation(model, kind, args.out, steps=args.generate or 8, batch=args.batch, seed=args.seed)
    clear_progress()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        for path in report.files:
            print(f"wrote {printable(path)} ({_size(os.path.getsize(path))})")
        print("\n".join(printable(line) for line in report.summary().splitlines()))
    return 0 if report.passed else 1


def cmd_plot(args) -> int:
    from .plot import plot_spec

    spec = _spec_from_args(args)
    print(f"wrote {printable(plot_spec(spec, args.out, title=spec.describe()))}")
    return 0


def cmd_bench(args) -> int:
    import platform

    import torch

    from ._util import atomic_write, clear_progress, stderr_progress
    from .bench import bench, format_table, plot_scaling, rows_to_json

    if args.preset and args.hf_config:
        raise UsageError("give --preset or --hf-config, not both")
    if args.hf_config:
        from .config_file import load_config
        from .presets import config_heads
        from .spec import RopeSpec

        target = RopeSpec.from_hf_config(args.hf_config, part=args.part)
        own = config_heads(load_config(args.hf_config), args.part)
    else:
        target, own = args.preset or "llama-3.1-8b", None
    if args.plot and not args.plot.lower().endswith(".png"):  # before minutes of timing, not after
        raise UsageError(f"--plot writes a PNG: its file name must end in .png, got {args.plot!r}")
    name = target if isinstance(target, str) else target.name or "config"
    kw = dict(dtype=args.dtype, repeat=args.repeat, threads=args.threads, compile=not args.no_compile, progress=stderr_progress)
    rows = [r for heads in args.heads for r in bench(target, heads=heads or own, **({"shapes": args.shape} if args.shape else {}), **kw)]
    sweep = bench(target, heads=own, shapes=[("sweep", 1, n) for n in args.lengths], **kw) if args.plot else []
    clear_progress()
    print(format_table(rows + sweep))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    threads = args.threads or torch.get_num_threads()
    if args.json:
        atomic_write(args.json, json.dumps(rows_to_json(rows + sweep, device=device, cpus=os.cpu_count(), threads=threads,
                                                        torch=torch.__version__, dtype=args.dtype,
                                                        date=datetime.date.today().isoformat()), indent=1).encode())
        print(f"results: {printable(args.json)}")
    if args.plot:
        where = f"{device}, {threads} threads; onnxruntime rows: CPU provider"
        print(f"plot: {printable(plot_scaling(sweep, args.plot, title=f'{name}: rotary of q and k, {args.dtype} ({where})'))}")
    return 0


_KEYWORDS = re.compile(r"\b(form|opset|dtype|table_length|layer_type|part|fused|providers)=('?)([\w.,-]*)\2")


def _cli_words(message: str) -> str:
    """A library message in the words of the command line: form='decomposed' -> --form decomposed."""
    def option(m):
        flag = "--" + m[1].replace("_", "-")
        if m[1] == "fused" and m[3] == "False":
            return "--no-fused"
        return f"{flag} {m[3]}".rstrip()
    return _KEYWORDS.sub(option, message)


# Per command: the options (or positionals) it reads and those it writes. No command writes
# over one of its own inputs, whatever the path says (symlinks, hard links, "./x").
_FILES = {"export": (("hf_config",), ("out", "json")), "validate": (("onnx", "engine", "hf_config"), ("json",)),
          "build-engine": (("onnx",), ("out",)), "export-hf": (("config",), ("out",)), "plot": (("hf_config",), ("out",)),
          "bench": (("hf_config",), ("json", "plot"))}


def _inputs(args, reads) -> list[str]:
    """Every file the command reads: the named ones, a config folder's config.json, a preset's
    file, and the external-data files of an ONNX graph it reads."""
    out = []
    for name in reads:
        value = getattr(args, name, None)
        if not value:
            continue
        out.append(value)
        if name in ("hf_config", "config") and os.path.isdir(value):
            out.append(os.path.join(value, "config.json"))
        if name == "onnx" and os.path.isfile(value):
            out.extend(_external_data_files(value))
    preset = getattr(args, "preset", None)
    if preset:
        from .presets import preset_path

        path = preset_path(preset)
        if path:
            out.append(path)
    return out


def _is_a_standard_stream(path: str) -> bool:
    try:
        target = os.stat(path)
    except OSError:
        return False
    for fd in (1, 2):
        try:
            stream = os.fstat(fd)
        except OSError:
            continue
        if (stream.st_dev, stream.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def _external_data_files(path: str) -> list[str]:
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data

        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: the command says so itself
        return []
    base = os.path.dirname(os.path.abspath(path))
    return sorted({os.path.join(base, dict((e.key, e.value) for e in t.external_data).get("location", ""))
                   for t in model.graph.initializer if uses_external_data(t)})


def _refuse_overwriting_inputs(args) -> None:
    from ._util import check_output_path, same_file

    reads, writes = _FILES.get(args.command, ((), ()))
    inputs = _inputs(args, reads)
    outputs = [(name, getattr(args, name, None)) for name in writes]
    for name, out in outputs:
        if out:
            check_output_path(out)  # before the work, not after it (a pipe, a folder, no directory)
            if _is_a_standard_stream(out):
                raise UsageError(f"--{name} {out} is where this command prints: give it a file of its own")
    for name, out in outputs:
        for src in inputs:
            if out and src and same_file(out, src):
                raise UsageError(f"--{name} {out} is the file this command reads ({src}): refusing to write over it")
    written = [o for _, o in outputs if o]
    if len(written) == 2 and same_file(*written):
        raise UsageError(f"--{writes[0]} and --{writes[1]} name the same file ({written[0]})")


COMMANDS = {"presets": cmd_presets, "export": cmd_export, "validate": cmd_validate, "build-engine": cmd_build_engine,
            "check-trt": cmd_check_trt,
            "bench": cmd_bench, "export-hf": cmd_export_hf, "plot": cmd_plot, "inspect": cmd_inspect}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("rope-export: interrupted", file=sys.stderr)
        return 130
    for stream in (sys.stdout, sys.stderr):  # a name the terminal's encoding cannot show is escaped, never fatal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    guard = sys.stdout = PipeSafeStdout(sys.stdout) if not isinstance(sys.stdout, PipeSafeStdout) else sys.stdout
    try:
        _refuse_overwriting_inputs(args)
        return COMMANDS[args.command](args)  # a closed pipe drops the output, never the exit status
    except KeyboardInterrupt:
        print(f"rope-export {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, OSError, RuntimeError) as exc:
        print(f"rope-export {args.command}: error: {printable(_cli_words(str(exc)))}", file=sys.stderr)
        return 2
    finally:
        guard.flush()


if __name__ == "__main__":
    sys.exit(main())
