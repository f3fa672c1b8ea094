"""Parse an exported rotary graph with TensorRT's ONNX parser and build an engine.

Engines are built strongly typed: every tensor keeps the type the ONNX graph gives it, so the
angle region (position cast, multiply by inv_freq, sin, cos) stays float32 in float16/bfloat16
graphs. A plain bf16 builder flag lets TensorRT compute angles of thousands of radians in
bf16, which breaks rotary embeddings near position 4k.

With TensorRT-RTX the build is ahead of time for a compute capability (``SM80``, ``SM89``, ...);
``"current"`` targets this machine's GPU and needs a driver.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from dataclasses import dataclass, field

from .._util import InputError, atomic_write
from . import flavor, require_tensorrt

__all__ = ["Profile", "Build", "parse_and_build", "build_engine", "DEFAULT_COMPUTE_CAPABILITY"]

# What an RTX build targets when no GPU is here to ask: Ampere, the oldest the RTX builder
# and the rotary layer both serve well. Pass the deployment GPU's instead.
DEFAULT_COMPUTE_CAPABILITY = "SM80"


SERVING_MAX_NEW = 512  # a with-past graph's prefill chunk in the default profile


@dataclass(frozen=True)
class Profile:
    """Optimization profile for the dynamic axes: (min, opt, max) batch and sequence."""

    batch: tuple[int, int, int] = (1, 1, 8)
    sequence: tuple[int, int, int] = (1, 2048, 8192)

    def __post_init__(self):
        for label, (lo, mid, hi) in (("batch", self.batch), ("sequence", self.sequence)):
            if not (1 <= lo <= mid <= hi):
                raise ValueError(f"{label} profile must satisfy 1 <= min <= opt <= max, got {(lo, mid, hi)}")


@dataclass
class Build:
    """What TensorRT made of a graph: parse and build verdicts, the network's layer types
    (``ROTARY_EMBEDDING`` for the native rotary), the parser's errors and warnings."""

    path: str
    tensorrt: str
    target: str
    parsed: bool = False
    built: bool = False
    layers: collections.Counter = field(default_factory=collections.Counter)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    engine: bytes | None = field(default=None, repr=False)

    @property
    def rotary_layers(self) -> int:
        return self.layers.get("ROTARY_EMBEDDING", 0)


def _logger(trt, messages: list):
    class Collect(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, message):
            messages.append((severity.name, str(message)))

    return Collect()


def _set_target(trt, config, compute_capability: str | None) -> str:
    if not hasattr(trt, "ComputeCapability"):  # TensorRT: builds for the GPU it runs on
        if compute_capability not in (None, "current"):
            raise InputError(f"--compute-capability {compute_capability}: only TensorRT-RTX builds for a named GPU")
        return "this GPU"
    name = (compute_capability or DEFAULT_COMPUTE_CAPABILITY).upper()
    known = [c for c in dir(trt.ComputeCapability) if c.startswith("SM") or c == "CURRENT"]
    if name not in known:
        raise InputError(f"compute capability {compute_capability!r} is not one of {', '.join(known)}")
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, name), 0)
    return name


def parse_and_build(onnx_path: str, *, profile: Profile = Profile(), plugin: bool = False,
                    compute_capability: str | None = None, timing_cache: str | None = None,
                    workspace_mib: int = 1024) -> Build:
    """Parse ``onnx_path`` and build a strongly typed engine with one optimization profile.

    Returns a `Build` whatever happens inside TensorRT (``parsed`` / ``built`` say how far it
    got, ``errors`` why not). ``plugin=True`` registers the fused plugin first, so plugin-form
    nodes become the plugin instead of their local function.

    Raises:
        RuntimeError: no TensorRT builder is importable (with the install hint).
        InputError: no such file, or an unknown compute capability.
    """
    trt = require_tensorrt()
    if not os.path.isfile(onnx_path):
        raise InputError(f"no such file: {onnx_path}")
    if plugin:
        from . import plugin as _plugin  # noqa: F401 - registers rope_export::MultiAxisRotary
    messages: list = []
    logger = _logger(trt, messages)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    report = Build(os.fspath(onnx_path), flavor(trt), _set_target(trt, config, compute_capability))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    report.parsed = bool(parser.parse_from_file(os.fspath(onnx_path)))
    report.errors += [str(parser.get_error(i)) for i in range(parser.num_errors)]
    report.layers.update(network.get_layer(i).type.name for i in range(network.num_layers))
    if report.parsed:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        config.add_optimization_profile(_profile(builder, network, profile, trt, _named_axes(onnx_path)))
        cache = None
        if timing_cache:  # (a no-op in TensorRT-RTX, which deprecates it)
            cache = config.create_timing_cache(Path(timing_cache).read_bytes() if os.path.isfile(timing_cache) else b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        engine = builder.build_serialized_network(network, config)
        report.built = engine is not None
        report.engine = bytes(engine) if engine is not None else None
        if cache is not None and report.built:
            atomic_write(timing_cache, bytes(cache.serialize()))
    report.warnings = [m for severity, m in messages if severity == "WARNING"]
    report.errors += [m for severity, m in messages if severity in ("ERROR", "INTERNAL_ERROR") and m not in report.errors]
    return report


def _named_axes(onnx_path) -> dict:
    """{input: {axis: name}} of the graph's symbolic dims (export-hf --with-past names them
    batch, sequence, past and total)."""
    import onnx

    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    return {i.name: {a: d.dim_param for a, d in enumerate(i.type.tensor_type.shape.dim) if d.dim_param}
            for i in model.graph.input}


def _profile(builder, network, profile: Profile, trt, named: dict):
    """Every dynamic dimension from its name in the ONNX graph: ``batch`` and ``sequence`` take
    the profile's ranges; graphs with a KV cache (``past``, ``total``) run the past from 0 to the
    sequence max, the new tokens (default profile) from 1 to 512 with 1 as the optimum, and
    total = past + new; any other name (a vision encoder's patch blocks) the sequence range,
    an expression of names (``4*blocks``) evaluated. q, k and position_ids without names:
    [B, H, S, D], [B, S] or [A, B, S]."""
    seq = profile.sequence
    serving = any(name in ("past", "total") for axes in named.values() for name in axes.values())
    new = (seq[0], seq[0], min(seq[2], SERVING_MAX_NEW)) if serving and profile == Profile() else seq
    by_name = {"batch": profile.batch, "sequence": new, "past": (0, seq[1], seq[2]),
               "total": (new[0], new[1] + seq[1], new[2] + seq[2])}
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        names = named.get(tensor.name, {})
        if tensor.name in ("q", "k", "position_ids") and not names:
            batch_axis, seq_axis = (len(shape) - 2, len(shape) - 1) if tensor.name == "position_ids" else (0, 2)
            names = {batch_axis: "batch", seq_axis: "sequence"}
        shapes = []
        for which in range(3):
            dims = list(shape)
            for axis, size in enumerate(shape):
                if size == -1:
                    dims[axis] = _dim_size(names.get(axis, "sequence"), by_name, which)
            shapes.append(trt.Dims(dims))
        opt_profile.set_shape(tensor.name, *shapes)
    return opt_profile


def _dim_size(name: str, by_name: dict, which: int) -> int:
    """The size of a named dimension (``4*blocks``: 4 times the sequence range's value)."""
    import ast

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return by_name.get(node.id, by_name["sequence"])[which]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(node)

    try:
        return max(0, int(value(ast.parse(name, mode="eval"))))
    except (SyntaxError, ValueError, RecursionError):
        return by_name["sequence"][which]


def build_engine(onnx_path: str, out_path: str, *, profile: Profile = Profile(), plugin: bool = False,
                 timing_cache: str | None = None, workspace_mib: int = 1024, compute_capability: str | None = None) -> Build:
    """`parse_and_build`, then write the engine atomically to ``out_path``.

    Raises:
        ValueError: the parser refused the graph (its messages); RuntimeError: the build failed.
    """
    report = parse_and_build(onnx_path, profile=profile, plugin=plugin, compute_capability=compute_capability,
                             timing_cache=timing_cache, workspace_mib=workspace_mib)
    if not report.parsed:
        raise ValueError(f"{report.tensorrt} could not parse {onnx_path}: {'; '.join(report.errors)}")
    if not report.built:
        raise RuntimeError(f"{report.tensorrt} failed to build the engine: {'; '.join(report.errors) or 'see the log'}")
    atomic_write(out_path, report.engine)
    return report
