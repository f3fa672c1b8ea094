"""Build a TensorRT engine from an exported rotary graph.

Engines are built strongly typed: every tensor keeps the type the ONNX graph gives it, so the
angle region (position cast, multiply by inv_freq, sin, cos) stays float32 in float16/bfloat16
graphs. A plain bf16 builder flag lets TensorRT compute angles of thousands of radians in
bf16, which breaks rotary embeddings near position 4k.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._util import atomic_write
from . import require_tensorrt


@dataclass(frozen=True)
class Profile:
    """Optimization profile for the dynamic axes: (min, opt, max) batch and sequence."""

    batch: tuple[int, int, int] = (1, 1, 8)
    sequence: tuple[int, int, int] = (1, 2048, 8192)

    def __post_init__(self):
        for label, (lo, mid, hi) in (("batch", self.batch), ("sequence", self.sequence)):
            if not (1 <= lo <= mid <= hi):
                raise ValueError(f"{label} profile must satisfy 1 <= min <= opt <= max, got {(lo, mid, hi)}")


def build_engine(onnx_path: str, out_path: str, *, profile: Profile = Profile(), plugin: bool = False,
                 timing_cache: str | None = None, workspace_mib: int = 1024) -> str:
    """Parse ``onnx_path``, build a strongly typed engine with one optimization profile and
    write it atomically to ``out_path``. ``plugin=True`` registers the fused plugin first, so
    plugin-form nodes become the plugin instead of their local function."""
    trt = require_tensorrt()
    if not os.path.isfile(onnx_path):
        raise ValueError(f"no such file: {onnx_path}")
    if plugin:
        from . import plugin as _plugin  # noqa: F401 - registers rope_export::MultiAxisRotary
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        # q, k: [B, H, S, D]; position_ids: [B, S] or [A, B, S]
        batch_axis, seq_axis = (len(shape) - 2, len(shape) - 1) if tensor.name == "position_ids" else (0, 2)
        shapes = []
        for which in range(3):
            dims = list(shape)
            dims[batch_axis], dims[seq_axis] = profile.batch[which], profile.sequence[which]
            shapes.append(trt.Dims(dims))
        opt_profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(opt_profile)
    cache_bytes = b""
    if timing_cache and os.path.isfile(timing_cache):
        with open(timing_cache, "rb") as fh:
            cache_bytes = fh.read()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    atomic_write(out_path, bytes(engine))
    if timing_cache:
        atomic_write(timing_cache, bytes(cache.serialize()))
    return out_path

