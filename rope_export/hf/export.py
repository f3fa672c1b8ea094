"""Whole-model export, proven end to end: build a small random transformers model from a
config.json, patch its rotary (`rope_export.hf`), export it, and check the ONNX on onnxruntime
against the unpatched model on the same inputs.

    report = export_hf("config.json", "model.onnx", part="text", layers=2)
    print(report.summary())

No weights and no downloads: the model is randomly initialised from the config, with N layers
and, unless ``full_width``, narrower layers (at most 4 query heads, vocabulary 512). Every
field the rotary depends on (head_dim, rope parameters, sections, partial rotary) is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import tempfile

import numpy as np
import torch
from torch import nn

from .._util import atomic_write, check_output_path, error_line, quiet_exporter, same_file, silent_fds
from ..architectures import (LAYER_COUNT_KEY, NARROWED_FIELDS, NARROWING, TEXT_OF, VERIFIED_TEXT, VISION_CLASSES, VISION_OF,
                             VISION_TYPES)
from ..export.forms import FUSED_OPSET
from ..hf_config import head_dim_of, load_config, select_part
from ..validate.compare import compare
from ..validate.runners import OnnxRuntimeRunner
from .inputs import example_inputs, reference_cases
from .patch import patch
from .vision_grid import METADATA_KEY as GRID_METADATA_KEY, GridEncoder

__all__ = ["HFExportReport", "export_hf", "tiny_model", "example_inputs", "export_bytes", "RTOL", "TOLERANCE"]

# The ONNX output against the unpatched model, float32: |diff| <= RTOL * max(1, max|reference|)
# (`compare` with scale "tensor"). Measured: at most 1.8e-6 relative (float32 rounding; every
# preset's architecture at 2 layers, no growth at 8: benchmarks/results/hf_export_matrix.md),
# so 10x headroom; swapped M-RoPE sections in a tiny random model already differ by 30x RTOL
# (tests/hf/test_export.py).
RTOL = 2e-5
TOLERANCE = {"rtol": RTOL, "atol": 0.0}


_LAYER_INDEX_LISTS = ("hybrid_layer_ids", "global_attn_indexes")


def _narrow(cfg: dict, part: str, layers: int) -> dict:
    """Fewer layers, fewer heads, smaller vocabulary; head_dim and every rope field kept."""
    cfg = dict(cfg)
    if part == "text":
        heads = int(cfg.get("num_attention_heads") or cfg["n_head"])
        head_dim = head_dim_of(cfg)
        kv = int(cfg.get("num_key_value_heads") or heads)
        new_kv = min(kv, 2)
        new_heads = new_kv * min(heads // kv, 2)
        cfg.update(num_attention_heads=new_heads, num_key_value_heads=new_kv, hidden_size=new_heads * head_dim,
                   intermediate_size=2 * new_heads * head_dim, vocab_size=min(int(cfg.get("vocab_size", 512)), 512))
        if "head_dim" in cfg:
            cfg["head_dim"] = head_dim
        linear = "linear_attention" in (cfg.get("layer_types") or [])
        for key in ("layer_types", "max_window_layers"):
            cfg.pop(key, None)
        if linear:  # Qwen3.5 / Qwen3-Next: the rotary is in the full-attention layers; the linear ones
            cfg["layer_types"] = ["full_attention"] * layers  # specialise the graph to the traced length
        # Per-layer lists sized by the layer count (Gemma 3n's sparsity, Llama 4's no_rope_layers,
        # Zamba2's block types): the first layers'. Lists of layer indices: those below the count.
        total = cfg.get("num_hidden_layers")
        for key, value in list(cfg.items()):
            if key in _LAYER_INDEX_LISTS and isinstance(value, list):
                cfg[key] = [i for i in value if isinstance(i, int) and i < layers]
            elif isinstance(value, list) and total and len(value) == total:
                cfg[key] = value[:layers]
        if cfg.get("num_kv_shared_layers"):
            cfg["num_kv_shared_layers"] = 0  # Gemma 3n: the last layers reuse earlier layers' caches; none left
        if isinstance(cfg.get("activation_sparsity_pattern"), list):
            cfg["activation_sparsity_pattern"] = [0.0] * layers  # Gemma 3n: its sparsity needs erfinv, which no exporter takes
        # Dense MLPs where the config has a switch for them: neither torch exporter takes an MoE
        # router (histc, grouped_mm), and the rotary is in the attention.
        if "moe_layers" in cfg:
            cfg["moe_layers"] = []  # Llama 4
        if "mlp_only_layers" in cfg:
            cfg["mlp_only_layers"] = list(range(layers))  # Qwen2/3-MoE, Qwen3-Next
        if "first_k_dense_replace" in cfg:
            cfg["first_k_dense_replace"] = layers  # DeepSeek, GLM-4.5, ...
        if NARROWING.get(cfg.get("model_type")) == "hybrid_blocks":  # Zamba2: its rotary is in the hybrid blocks
            cfg.update(layers_block_type=["hybrid"] * layers, hybrid_layer_ids=list(range(layers)),
                       # its attention runs on [hidden, embeddings], twice as wide: its head is 2 * hidden / heads
                       hidden_size=new_heads * int(cfg.get("attention_head_dim") or 2 * head_dim) // 2)
            for derived in ("attention_hidden_size", "attention_head_dim", "mamba_headdim", "kv_channels", "num_query_groups"):
                cfg.pop(derived, None)  # recomputed from hidden_size by its config
        if isinstance(cfg.get("per_layer_config"), dict):
            cfg["per_layer_config"] = {k: v for k, v in cfg["per_layer_config"].items() if int(k) < layers}
        cfg.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)  # ids past the smaller vocabulary
        return cfg
    heads = int(cfg.get("num_heads") or cfg["num_attention_heads"])
    head_dim = head_dim_of(cfg, width_keys=("embed_dim", "hidden_size"), head_keys=("num_heads", "num_attention_heads"))
    new_heads = min(heads, 2)
    new_width = new_heads * head_dim
    model_type = cfg.get("model_type")
    rule = NARROWING.get(model_type)
    if rule == "pixel_shuffle":  # the projector takes hidden / ratio**2 features
        ratio = float(cfg.get("pixel_shuffle_ratio", 0.5))
        cfg.update(hidden_size=new_width, num_attention_heads=new_heads, intermediate_size=int(new_width / ratio**2),
                   vision_output_dim=new_width, projector_input_dim=new_width, projector_output_dim=new_width)
    elif rule == "hidden_width":
        cfg.update(hidden_size=new_width, num_attention_heads=new_heads, intermediate_size=2 * new_width)
    else:  # Qwen vision: embed_dim is the attention width, hidden_size the merger's output
        cfg.update(embed_dim=new_width, num_heads=new_heads, hidden_size=new_width, intermediate_size=2 * new_width,
                   out_hidden_size=new_width)
        # Keep every kind of layer in the narrowed encoder (architectures.NARROWED_FIELDS).
        cfg.update({key: value(layers) for key, value in NARROWED_FIELDS.get(model_type, {}).items()})
    return cfg


def tiny_config(config, part: str = "text", layers: int = 2, *, full_width: bool = False):
    """The transformers config object `tiny_model` builds from: the part's config, narrowed
    (unless ``full_width``) to ``layers`` layers, eager attention. Returns (model_type, config)."""
    import transformers

    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")
    raw = load_config(config)
    part, sub, parent = select_part(raw, part)
    model_type = str(sub.get("model_type") or parent.get("model_type") or "")
    model_type = (TEXT_OF if part == "text" else VISION_OF).get(model_type, model_type)
    supported = VERIFIED_TEXT if part == "text" else VISION_TYPES
    if model_type not in supported:
        raise ValueError(f"model_type {model_type!r} ({part}) is not supported by export-hf; supported: "
                         f"{'the verified text model types (rope_export.architectures.VERIFIED_TEXT)' if part == 'text' else ', '.join(supported)}")
    drop = ("text_config", "vision_config", "architectures", "auto_map", "torch_dtype", "dtype", "transformers_version")
    cfg = {k: v for k, v in sub.items() if k not in drop}
    cfg["model_type"] = model_type
    scaling = cfg.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("type", scaling.get("rope_type")) in ("su", "longrope"):
        # Older Phi-3 files: "su" is LongRoPE, and transformers 5 wants the original length inside.
        cfg["rope_scaling"] = {**{k: v for k, v in scaling.items() if k != "type"}, "rope_type": "longrope"}
        if "original_max_position_embeddings" in cfg:
            cfg["rope_scaling"].setdefault("original_max_position_embeddings", cfg["original_max_position_embeddings"])
    if not full_width:
        cfg = _narrow(cfg, part, layers)
    cfg.pop("model_type")
    cfg[LAYER_COUNT_KEY.get(model_type, "num_hidden_layers")] = layers
    try:
        config_obj = transformers.AutoConfig.for_model(model_type, **cfg)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a bad config
        raise ValueError(f"transformers cannot build a {model_type} config from this file: {exc}") from None
    config_obj._attn_implementation = "eager"
    return model_type, config_obj


def tiny_model(config, part: str = "text", layers: int = 2, *, seed: int = 0, full_width: bool = False) -> nn.Module:
    """A randomly initialised transformers model of the config's architecture.

    Args:
        config: a config.json path or dict (a whole VLM config: ``part`` picks the half).
        part: "text" (the decoder) or "vision" (the vision encoder).
        layers: decoder / encoder layers.
        full_width: keep the config's widths (heads, hidden size, vocabulary).
    Returns:
        the model, float32, in eval mode (eager attention).
    """
    import transformers

    model_type, config_obj = tiny_config(config, part, layers, full_width=full_width)
    torch.manual_seed(seed)
    if model_type in VISION_CLASSES:
        module, cls = VISION_CLASSES[model_type]
        model = getattr(importlib.import_module(f"transformers.models.{module}"), cls)(config_obj)
    else:
        model = transformers.AutoModel.from_config(config_obj, attn_implementation="eager")
    return model.float().eval()


@contextlib.contextmanager
def exportable_experts(model: nn.Module):
    """Mixture-of-experts layers computed with transformers' "batched_mm" experts (every
    expert on every token, then the router's weights): the default "grouped_mm" sorts tokens
    by expert with data-dependent shapes, which neither torch exporter takes. Same maths; the
    reference runs keep the model's own implementation."""
    saved = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_experts_implementation", None) not in (None, "batched_mm", "eager"):
            saved.append((config, config._experts_implementation))
            config._experts_implementation = "batched_mm"
    try:
        yield
    finally:
        for config, value in reversed(saved):
            config._experts_implementation = value


def export_bytes(wrapper, args, names, axes, *, exporter: str, opset: int, fused: bool = False) -> bytes:
    """The ONNX bytes of ``wrapper(*args)`` (`example_inputs`) from the dynamo or the legacy
    exporter; ``fused``: the model is patched with the fused rotary, which needs opset 23."""
    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    if fused and opset < FUSED_OPSET:
        # The dynamo exporter would write RotaryEmbedding into the lower-opset graph anyway.
        raise ValueError(f"the fused rotary needs opset {FUSED_OPSET} (RotaryEmbedding); got {opset}: "
                         "use opset 23 or fused=False")
    with silent_fds():  # both exporters print whole graphs when they fail; the exception says enough
        return _export_bytes(wrapper, args, names, axes, exporter=exporter, opset=opset)


def _export_bytes(wrapper, args, names, axes, *, exporter: str, opset: int) -> bytes:
    outputs = list(getattr(wrapper, "output_names", ["last_hidden_state"]))
    if exporter == "dynamo":
        dims = {}
        for name, spec in axes.items():  # a label, or a torch.export.Dim (derived dims: GridEncoder)
            dims[name] = {i: torch.export.Dim(d, min=1) if isinstance(d, str) else d for i, d in spec.items()}
        dynamic = tuple(dims.get(n) for n in names) if dims else None
        with quiet_exporter():
            program = torch.onnx.export(wrapper, args, dynamo=True, opset_version=opset, dynamic_shapes=dynamic,
                                        input_names=names, output_names=outputs, verify=False, report=False)
        return program.model_proto.SerializeToString()
    with tempfile.TemporaryDirectory() as tmp, quiet_exporter():
        path = os.path.join(tmp, "m.onnx")
        labels = {n: {i: str(d) for i, d in spec.items()} for n, spec in axes.items()}
        torch.onnx.export(wrapper, args, path, dynamo=False, opset_version=opset, input_names=names,
                          output_names=outputs, dynamic_axes=labels or None)
        with open(path, "rb") as f:
            return f.read()


# What an exporter failure in an otherwise patched model usually means.
_EXPORT_HINT = {"moe": "; this is the model's MoE router (grouped_mm / histc), which neither torch exporter takes and "
                       "export-hf can narrow away only where the config has a dense-layer switch"}


def _exporter_reason(exc: BaseException) -> str:
    """The line of an exporter's (multi-line, coloured) message that names what it could not take."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    telling = next((line for line in lines if re.search(r"No ONNX function|[Uu]nsupported|not supported", line)), None)
    return f"{type(exc).__name__}: {telling}" if telling else error_line(exc)


def _failure_kind(exc: BaseException) -> str:
    text = str(exc)
    return "moe" if any(w in text for w in ("grouped_mm", "histc", "experts", "router")) else ""


@dataclasses.dataclass
class HFExportReport:
    path: str
    model: str
    exporter: str
    replaced: list
    nodes: int
    rotary_nodes: int
    nodes_unpatched: int | None
    unpatched_error: str | None
    max_abs_diff: float
    tolerance: float
    checked_shapes: list  # a label per case: the input shape, or the image grid
    within_tolerance: bool  # every element of every case, NaN and infinity failing
    errors: list = dataclasses.field(default_factory=list)  # cases onnxruntime could not run

    @property
    def passed(self) -> bool:
        return self.within_tolerance and not self.errors

    def summary(self) -> str:
        lines = [f"{self.model}: exported with the {self.exporter} exporter to {self.path}"]
        for name, cls, spec in self.replaced:
            lines.append(f"  patched {name} ({cls}): {spec.describe()}")
        before = (f"{self.nodes_unpatched} nodes unpatched" if self.nodes_unpatched is not None
                  else f"unpatched export fails: {self.unpatched_error}" if self.unpatched_error
                  else "unpatched not exported")
        lines.append(f"  graph: {self.nodes} nodes, {self.rotary_nodes} RotaryEmbedding ({before})")
        lines.append(f"  onnxruntime vs unpatched transformers at {'; '.join(self.checked_shapes)}: max |diff| "
                     f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}) -> {'PASS' if self.passed else 'FAIL'}")
        lines.extend(f"  onnxruntime could not run {err}" for err in self.errors)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["replaced"] = [(n, c, s.to_dict()) for n, c, s in self.replaced]
        d["passed"] = self.passed
        return d


def export_hf(config, out, *, part: str = "text", layers: int = 2, exporter: str = "dynamo", opset: int = 23,
              fused: bool = True, seed: int = 0, full_width: bool = False, compare_unpatched: bool = True,
              progress=None) -> HFExportReport:
    """Build a small random model from ``config``, patch, export to ``out``, validate.

    The ONNX runs on onnxruntime (CPU) at the export shapes and, for text models, at a second
    batch/sequence size; each output is compared with the unpatched transformers model on the
    same inputs. ``compare_unpatched`` also exports the unpatched model (node count, or the
    exporter's error). Nothing is written at ``out`` if the export fails.
    """
    import onnx

    say = progress or (lambda msg: None)
    check_output_path(out)
    if os.path.splitext(os.fspath(out))[1].lower() != ".onnx":
        raise ValueError(f"the output file must end in .onnx (binary ONNX), got {os.fspath(out)!r}")
    if isinstance(config, (str, os.PathLike)) and os.path.exists(config) and same_file(config, out):
        raise ValueError(f"the output {os.fspath(out)!r} is the config it reads: refusing to write over it")
    say("building the model")
    model = tiny_model(config, part, layers, seed=seed, full_width=full_width)
    wrapper, args, names, axes = example_inputs(model, seed=seed)
    say(f"exporting {type(model).__name__} (patched, {exporter})")
    with patch(model, fused=fused) as patched, exportable_experts(model):
        try:
            data = export_bytes(wrapper, args, names, axes, exporter=exporter, opset=opset, fused=fused)
        except Exception as exc:  # noqa: BLE001 - the exporter's own failure, in one line, with what it usually means
            raise RuntimeError(f"the {exporter} exporter failed on the patched {type(model).__name__} (the rotary was "
                               f"patched: {', '.join(n for n, _, _ in patched.replaced)}): {_exporter_reason(exc)[:300]}"
                               + _EXPORT_HINT.get(_failure_kind(exc), "")) from None
        replaced = patched.replaced
    proto = onnx.load_from_string(data)
    ops = [n.op_type for n in proto.graph.node]
    if isinstance(wrapper, GridEncoder):  # what a serving process passes to vision_grid_inputs
        entry = proto.metadata_props.add()
        entry.key, entry.value = GRID_METADATA_KEY, json.dumps(wrapper.params)
        data = proto.SerializeToString()
    unpatched_nodes = unpatched_error = None
    if compare_unpatched:
        say("exporting the unpatched model, for comparison")
        try:
            with exportable_experts(model):
                unpatched_nodes = len(onnx.load_from_string(export_bytes(wrapper, args, names, axes, exporter=exporter,
                                                                         opset=opset)).graph.node)
        except Exception as exc:  # noqa: BLE001 - the exporter's own failure is the finding
            unpatched_error = error_line(exc)[:200]
    say("running onnxruntime")
    runner = OnnxRuntimeRunner(data, "cpu")
    fed = set(runner.input_names)  # the legacy exporter folds inputs used only in Python
    worst, scale, shapes, ok, errors = 0.0, 1.0, [], True, []
    for label, case, wants in reference_cases(model, wrapper, args, axes, seed):
        try:
            gots = runner.run_feeds({n: a.numpy() for n, a in zip(names, case) if n in fed})
        except Exception as exc:  # noqa: BLE001 - e.g. a graph the exporter specialised to the traced shape
            errors.append(f"{label}: {error_line(exc)[:300]}")
            continue
        if len(gots) != len(wants):
            raise RuntimeError(f"{label}: onnxruntime gave {len(gots)} outputs, transformers {len(wants)}")
        for got, want in zip(gots, (w.numpy() for w in wants)):
            if got.shape != want.shape:
                raise RuntimeError(f"{label}: onnxruntime output shape {got.shape} != transformers {want.shape}")
            stats = compare(got, want, TOLERANCE, scale="tensor")
            ok = ok and stats["ok"]
            worst = max(worst, stats["max_abs_err"])
            scale = max(scale, float(np.abs(want).max()))
        shapes.append(label)
    atomic_write(out, data)
    return HFExportReport(path=os.fspath(out), model=type(model).__name__, exporter=exporter, replaced=replaced,
                          nodes=len(ops), rotary_nodes=ops.count("RotaryEmbedding"), nodes_unpatched=unpatched_nodes,
                          unpatched_error=unpatched_error, max_abs_diff=worst, tolerance=RTOL * scale,
                          checked_shapes=shapes, within_tolerance=ok, errors=errors)
