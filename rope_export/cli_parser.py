"""The ``rope-export`` command line's arguments: subcommands, options, their types and help
(`rope_export.cli` runs them). Imports nothing heavy, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse

from ._util import DEFAULT_PROVIDERS, DTYPE_NAMES, FORM_NAMES

__all__ = ["build_parser", "DEFAULT_PRESET"]

DEFAULT_PRESET = "qwen2-vl-7b"


def _add_spec_args(p, default_note=True):
    p.add_argument("--preset", help=f"a preset name (rope-export presets){'; default ' + DEFAULT_PRESET if default_note else ''}")
    p.add_argument("--hf-config", help="a model's config.json (or its folder)")
    p.add_argument("--part", help="text, vision, or the key path of a nested config (audio_config, ...); "
                                  "default: text when the config has a decoder")
    p.add_argument("--layer-type", help="decoders with a rotary per layer type (Gemma 3): full_attention, sliding_attention, ...")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _at_most(top: int):
    """A positive int no larger than ``top`` (argparse type)."""
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > top:
            raise argparse.ArgumentTypeError(f"expected at most {top}, got {value}")
        return value
    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number, or 'none'), got {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 1e6), got {text!r}")
    return value


def _shape(text: str) -> tuple[str, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected LABEL:BATCH:SEQUENCE such as prefill:1:2048, got {text!r}")
    return parts[0], _positive_int(parts[1]), _positive_int(parts[2])


def _head_regimes(text: str) -> list:
    """'model,4+2' -> [None, (4, 2)]: None is the preset's own head counts."""
    regimes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "model":
            regimes.append(None)
            continue
        parts = item.split("+")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected 'model' or HQ+HK such as 4+2, got {item!r}")
        regimes.append(tuple(_positive_int(p) for p in parts))
    return regimes


def _lengths(text: str) -> tuple[int, ...]:
    return tuple(_positive_int(t) for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="rope-export", description="Export rotary position embeddings to ONNX and prove parity.")
    parser.add_argument("--version", action="version", version=f"rope-export {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, **kw):  # every option's help shows its default
        return sub.add_parser(name, formatter_class=_HelpWithDefaults, **kw)

    p = command("presets", help="list the built-in model presets")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each spec and its source")
    p.add_argument("--json", action="store_true", help="print them as JSON")

    p = command("export", help="write the rotary graph of a preset or config.json")
    _add_spec_args(p)
    p.add_argument("--out", default="rope.onnx", help="output file")
    p.add_argument("--opset", type=_positive_int, default=23, help="ONNX opset, 17 to 25 (fused, table and plugin need 23)")
    p.add_argument("--form", default="auto", choices=FORM_NAMES, help="graph form (docs/export.md: Forms)")
    p.add_argument("--table-length", type=_positive_int, help="form table: rows of the cos/sin table (default max_position_embeddings)")
    p.add_argument("--force", action="store_true", help="form table: write a table larger than the cap (the size is in the error)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="q/k dtype (angles stay float32)")
    p.add_argument("--num-q-heads", type=_positive_int, default=4, help="query heads in the graph")
    p.add_argument("--num-kv-heads", type=_positive_int, default=2, help="key heads in the graph")
    p.add_argument("--validate", action="store_true", help="validate the file afterwards (rope-export validate)")
    p.add_argument("--providers", help=f"with --validate: comma list (default {','.join(DEFAULT_PROVIDERS)})")
    p.add_argument("--json", help="with --validate: write the validation report here")

    p = command("validate", help="run an exported graph on onnxruntime and compare with torch")
    p.add_argument("onnx", help="the graph to check")
    _add_spec_args(p, default_note=False)
    p.add_argument("--providers", default=",".join(DEFAULT_PROVIDERS), help="comma list: tensorrt,cuda,cpu (onnxruntime providers), openvino[:gpu|:npu] (OpenVINO's runtime)")
    p.add_argument("--allow-missing", action="store_true", help="an unavailable provider is reported, not failed")
    p.add_argument("--engine", help="also run this TensorRT engine (rope-export build-engine) and compare it")
    p.add_argument("--seed", type=_seed, help="fixed input seed (default: fresh each run, printed)")
    p.add_argument("--case-timeout", type=_seconds, default=60.0,
                   help="seconds one case may run on a runtime before it is stopped and FAILS ('none': no limit)")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--rtol", type=_tolerance, help="override the dtype's relative tolerance (docs/validation.md: tolerances)")
    p.add_argument("--atol", type=_tolerance, help="override the dtype's absolute tolerance")
    p.add_argument("--require-structure", action="store_true",
                   help="FAIL a graph whose constants cannot be proven (structure 'not applicable'), not only a wrong one")

    p = command("build-engine", help="build a TensorRT engine (needs TensorRT's builder)")
    p.add_argument("onnx", help="an exported graph")
    p.add_argument("--out", required=True, help="engine file (.plan)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="assert the graph is float16 (engines are strongly typed)")
    precision.add_argument("--bf16", action="store_true", help="assert the graph is bfloat16")
    p.add_argument("--plugin", action="store_true", help="register the fused MultiAxisRotary plugin before parsing")
    p.add_argument("--batch", type=_positive_int, nargs=3, default=(1, 1, 8), metavar=("MIN", "OPT", "MAX"),
                   help="batch profile")
    p.add_argument("--sequence", type=_positive_int, nargs=3, default=(1, 2048, 8192), metavar=("MIN", "OPT", "MAX"),
                   help="sequence profile")
    p.add_argument("--timing-cache", help="read and update this timing cache file")
    p.add_argument("--compute-capability", help="TensorRT-RTX: the GPU to build for, SM80, SM86, SM89, SM120, ... or "
                                                "current (needs a driver); default SM80")

    p = command("check-trt", help="parse and build graphs with TensorRT; check the rotary became its native layer")
    p.add_argument("onnx", nargs="+", help="exported graphs")
    p.add_argument("--compute-capability", help="TensorRT-RTX: the GPU to build for (default SM80; works without a GPU)")
    p.add_argument("--plugin", action="store_true", help="register the fused plugin first (plugin-form graphs)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = command("bench", help="time every backend against a copy of the same bytes")
    p.add_argument("--preset", help="the preset to time (default llama-3.1-8b)")
    p.add_argument("--hf-config", help="a model's config.json (or its folder) instead of a preset")
    p.add_argument("--part", help="text or vision (with --hf-config; default: text when the config has a decoder)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="q/k dtype")
    p.add_argument("--shape", action="append", type=_shape, metavar="LABEL:B:S",
                   help="e.g. prefill:1:2048 (repeatable; default prefill 2048 and 8192, decode 64x1)")
    p.add_argument("--heads", type=_head_regimes, default="model,4+2",
                   help="head regimes, comma list of 'model' (the model's own) and HQ+HK (a shard's)")
    p.add_argument("--repeat", type=_positive_int, default=30,
                   help="timed rounds, each calling every backend once (median, min and spread reported)")
    p.add_argument("--threads", type=_positive_int, help="torch and onnxruntime intra-op threads (default: theirs)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json", help="write all rows here (after the length sweep, if any)")
    p.add_argument("--plot", help="also time prefill at --lengths tokens and draw time vs length (PNG)")
    p.add_argument("--lengths", type=_lengths, default=(256, 1024, 2048, 4096, 8192), help="the --plot sweep, comma list")

    p = command("export-hf", help="export a small random transformers model of a config, patched, and validate it")
    p.add_argument("--hf-config", "--config", dest="config", help="a model's config.json")
    p.add_argument("--preset", help="a preset's config instead of --hf-config")
    p.add_argument("--part", choices=("text", "vision"), help="decoder (default) or vision encoder; a preset's "
                   "':vision' suffix says the same")
    p.add_argument("--layers", type=_at_most(64), default=2, help="layers of the random model (at most 64)")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo", help="torch exporter")
    p.add_argument("--opset", type=_positive_int, default=23, help="ONNX opset")
    p.add_argument("--no-fused", action="store_true", help="plain elementwise rotary (opsets below 23)")
    p.add_argument("--full-width", action="store_true", help="keep the config's widths (default: at most 4 heads, vocab 512)")
    p.add_argument("--no-compare", action="store_true", help="skip exporting the unpatched model for the node count")
    p.add_argument("--seed", type=_seed, default=0, help="weights and inputs seed")
    p.add_argument("--with-past", action="store_true",
                   help="the text decoder with its KV cache (past in, present and logits out), proven by greedy "
                        "generation against transformers' generate (docs/serving.md)")
    p.add_argument("--generate", type=_at_most(4096), default=None, metavar="N",
                   help="with --with-past: tokens to generate greedily (default 8, at most 4096)")
    p.add_argument("--batch", type=_at_most(64), default=1,
                   help="with --with-past: prompt rows (text decoders; rows after the first left-padded)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command("plot", help="draw a spec: axes of the pairs, their speeds, the dims they touch")
    _add_spec_args(p)
    p.add_argument("--out", default="rope_spec.png", help="output PNG")

    p = command("inspect", help="print an exported graph's spec, inputs, outputs and op histogram")
    p.add_argument("onnx", help="an ONNX file")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the full spec JSON")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    return parser
