"""Decoders exported with a KV cache, and the greedy loop that proves them token for token.

`export_with_past` writes the patched text decoder as one graph a server decodes with::

    inputs:  input_ids [B, S] int64          (text-only decoders)
             inputs_embeds [B, S, hidden]     (decoders of VLMs: image features merged by the caller)
             attention_mask [B, P + S] int64  (1 = token, 0 = left padding; covers the past)
             position_ids [B, S] or [3, B, S] int64
             past_key_0, past_value_0, ... [B, H_kv, P, D]   (P = 0 for the prefill)
    outputs: logits [B, S, vocab], present_key_0, present_value_0, ... [B, H_kv, P + S, D]

B, S and P are dynamic. The position rule, the names and the layer count are written into the
graph's metadata (``rope_export.serving``). `rope_export.serving.generate_onnx` is the loop a
server runs; `check_generation` runs it against transformers' ``generate(do_sample=False)`` on the same
weights. Sliding-window layers (Gemma 3) are exported with the full cache: the mask applies
the window, and every present has length P + S.

    model, kind = export_with_past("config.json", "decoder.onnx")   # the random model it exported
    report = check_generation(model, kind, "decoder.onnx", steps=20)
    print(report.summary())
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os

import numpy as np
import torch
from torch import nn

from .._util import check_output_path, same_file, write_together
from ..hf_config import load_config, select_part
from ..positions import mrope_position_ids
from ..serving import METADATA_KEY, generate_onnx, read_serving
from ..validate.compare import compare
from .export import _EXPORT_HINT, TOLERANCE, _exporter_reason, _failure_kind, exportable_experts, tiny_config

__all__ = ["WithPast", "serving_model", "export_with_past", "check_generation", "GenerationReport"]


MAX_LAYERS = 64  # the random model is small; more layers only cost time
MAX_GENERATE = 4096  # tokens check_generation decodes

# Vocabulary ids of the narrowed VLMs' special tokens: inside the 512-token vocabulary.
_VLM_TOKENS = {"image_token_id": 508, "video_token_id": 509, "vision_start_token_id": 510, "vision_end_token_id": 511}
# VLM families whose decoder export_with_past takes with inputs_embeds and check_generation
# proves with an image in the prompt: the merger's output width key of their vision config.
_VLM_OUT_WIDTH = {"qwen2_vl": "hidden_size", "qwen2_5_vl": "out_hidden_size"}


class WithPast(nn.Module):
    """A causal LM with its KV cache as tensors: ``forward(tokens, attention_mask,
    position_ids, past_key_0, past_value_0, ...) -> (logits, present_key_0, ...)``.

    Args:
        model: a transformers causal LM (``kind`` "text") or image-text model ("vlm"), as
            `serving_model` builds them.
    ``tokens`` are ``input_ids`` [B, S], or ``inputs_embeds`` [B, S, hidden] for a VLM. The
    cache is rebuilt from the past tensors on every call (a plain `DynamicCache`, every layer
    full length), so the exported graph holds no cache object.

    >>> wrapper = WithPast(*serving_model("config.json"))      # doctest: +SKIP
    >>> logits, *presents = wrapper(ids, mask, positions, *past)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model = model
        self.embeds = kind == "vlm"
        text = model.config.get_text_config()
        self.num_layers = int(text.num_hidden_layers)
        self.hidden_size = int(text.hidden_size)
        # The whole model's forward, head included: Cohere's logit_scale and Gemma's final
        # soft-capping are applied there, not in the decoder.
        params = inspect.signature(model.forward).parameters
        # transformers 5.25 renamed past_key_values to cache; an unknown keyword would be
        # swallowed by **kwargs and start a fresh cache, so the name is read off the signature.
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.input_names = ["inputs_embeds" if self.embeds else "input_ids", "attention_mask", "position_ids"] + [
            f"past_{kv}_{i}" for i in range(self.num_layers) for kv in ("key", "value")]
        self.output_names = ["logits"] + [f"present_{kv}_{i}" for i in range(self.num_layers) for kv in ("key", "value")]

    def forward(self, tokens, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        inputs = {"inputs_embeds" if self.embeds else "input_ids": tokens}
        out = self.model(**inputs, attention_mask=attention_mask, position_ids=position_ids,
                           **{self.cache_arg: cache}, use_cache=True)
        presents = [t for layer in cache.layers[: self.num_layers] for t in (layer.keys, layer.values)]
        return (out.logits, *presents)


def serving_model(config, layers: int = 2, *, seed: int = 0):
    """(model, kind): a small random transformers causal LM of ``config``'s text decoder.

    kind is "text" (an ``AutoModelForCausalLM``: input_ids, positions [B, S]) or "vlm" (the
    whole image-text model, vision encoder narrowed to 1 layer: inputs_embeds, M-RoPE
    positions [3, B, S]). Widths are narrowed as export-hf narrows them; special token ids
    are moved inside the 512-token vocabulary.
    """
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    raw = load_config(config)
    _, text, parent = select_part(raw, "text")
    model_type, text_obj = tiny_config(raw, "text", layers)
    parent_type = str(parent.get("model_type") or "")
    torch.manual_seed(seed)
    if parent_type in _VLM_OUT_WIDTH and "vision_config" in parent:
        _, vision_obj = tiny_config(raw, "vision", 1)
        vision = vision_obj.to_dict()
        vision[_VLM_OUT_WIDTH[parent_type]] = text_obj.hidden_size
        # the decoder's own fields (rope ones among them) are in text_obj: the top level keeps the rest
        top = {k: v for k, v in parent.items() if k not in text and k not in (
            "text_config", "vision_config", "architectures", "model_type", "torch_dtype", "dtype", "transformers_version",
            "rope_scaling", "rope_parameters", "rope_theta")}
        whole = transformers.AutoConfig.for_model(parent_type, **{**top, **_VLM_TOKENS}, text_config=text_obj.to_dict(),
                                                  vision_config=vision)
        whole._attn_implementation = "eager"
        for sub in (whole.text_config, whole.vision_config):
            sub._attn_implementation = "eager"
        model = transformers.AutoModelForImageTextToText.from_config(whole, attn_implementation="eager")
        kind = "vlm"
    elif _vision_inside_layers(model_type):
        raise ValueError(f"{model_type}: its decoder takes vision features inside its layers "
                         f"({', '.join(_vision_inside_layers(model_type))}), beside inputs_embeds; export-hf "
                         "--with-past exports decoders whose only vision input is inputs_embeds")
    elif model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        model = transformers.AutoModelForCausalLM.from_config(text_obj, attn_implementation="eager")
        kind = "text"
    else:
        raise ValueError(f"{model_type!r}: no causal LM class in transformers for this decoder, and its model "
                         f"({parent_type or 'none'}) is not one of the VLMs served with inputs_embeds "
                         f"({', '.join(_VLM_OUT_WIDTH)})")
    model.generation_config.update(eos_token_id=None, pad_token_id=None, bos_token_id=None)
    return model.float().eval(), kind


def _vision_inside_layers(model_type: str) -> list[str]:
    """The vision inputs a decoder's forward takes inside its layers (Qwen3-VL's deepstack)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    cls = getattr(transformers, str(MODEL_MAPPING_NAMES.get(model_type, "")), None)
    params = inspect.signature(cls.forward).parameters if cls is not None else {}
    return [p for p in params if "deepstack" in p or p == "visual_pos_masks"]


def _empty_past(wrapper: WithPast, batch: int) -> list:
    """Zero-length past tensors, shaped as the model's own cache shapes them."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        tokens = (torch.zeros(batch, 1, wrapper.hidden_size) if wrapper.embeds
                  else torch.zeros(batch, 1, dtype=torch.int64))
        wrapper.model(**{wrapper.input_names[0]: tokens}, **{wrapper.cache_arg: cache}, use_cache=True)
    return [t[:, :, :0].clone() for layer in cache.layers[:wrapper.num_layers] for t in (layer.keys, layer.values)]


def _example(model, kind, batch: int, seq: int, past: int, seed: int):
    """Inputs of `WithPast` for a random prompt continued after ``past`` cached tokens."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ids = torch.randint(0, 500, (batch, past + seq), generator=g)
        mask = torch.ones(batch, past + seq, dtype=torch.int64)
        tokens = model.get_input_embeddings()(ids) if kind == "vlm" else ids
        steps = torch.arange(past + seq).expand(batch, -1)
        positions = steps.expand(3, batch, -1).contiguous() if kind == "vlm" else steps.contiguous()
        wrapper = WithPast(model, kind)
        empty = _empty_past(wrapper, batch)
        prefix = wrapper(tokens[:, :past], mask[:, :past], positions[..., :past], *empty)[1:]
    return wrapper, (tokens[:, past:], mask, positions[..., past:], *prefix)


def export_with_past(config, out, *, layers: int = 2, seed: int = 0, opset: int = 23, fused: bool = True,
                     progress=None):
    """Write the patched text decoder of ``config`` with its KV cache to ``out`` (see the module).

    Returns:
        (model, kind): the unpatched random transformers model the graph was exported from,
        for `check_generation`.
    Raises:
        ValueError: a decoder this export does not take (no causal LM class, not a served VLM).
        RuntimeError: the exporter failed, or a present's length is not past + sequence (a
            cache the model did not use).
    """
    from .patch import patch

    say = progress or (lambda msg: None)
    check_output_path(out)
    if os.path.splitext(os.fspath(out))[1].lower() != ".onnx":
        raise ValueError(f"the output file must end in .onnx (binary ONNX), got {os.fspath(out)!r}")
    if isinstance(config, (str, os.PathLike)) and os.path.exists(config) and same_file(config, out):
        raise ValueError(f"the output {os.fspath(out)!r} is the config it reads: refusing to write over it")
    from ..export.forms import FUSED_OPSET, MIN_OPSET, max_opset

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset():
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {max_opset()}, got {opset!r}")
    if fused and opset < FUSED_OPSET:
        raise ValueError(f"the fused rotary needs opset {FUSED_OPSET} (RotaryEmbedding); got {opset}: use opset 23 or "
                         "fused=False")
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= MAX_LAYERS:
        raise ValueError(f"layers must be an int from 1 to {MAX_LAYERS} (a small random model), got {layers!r}")
    say("building the model")
    model, kind = serving_model(config, layers, seed=seed)
    vision_path = os.path.splitext(os.fspath(out))[0] + ".vision.onnx" if kind == "vlm" else None
    if vision_path:  # the second file gets the first's checks, before any export
        check_output_path(vision_path)
        if isinstance(config, (str, os.PathLike)) and os.path.exists(config) and same_file(config, vision_path):
            raise ValueError(f"the vision graph {vision_path!r} would overwrite the config it reads")
    try:
        wrapper, args = _example(model, kind, batch=2, seq=5, past=3, seed=seed)
        with torch.no_grad():
            presents = wrapper(*args)[1:]
    except (ValueError, TypeError, AttributeError, NotImplementedError) as exc:  # e.g. DeepSeek V3.2's indexer cache
        raise ValueError(f"{type(model).__name__}: its cache is not one key and one value tensor per layer, which "
                         f"export-hf --with-past exports ({type(exc).__name__}: {str(exc)[:200]})") from None
    if any(t.shape[2] != 3 + 5 for t in presents):
        raise RuntimeError(f"{type(model).__name__} did not extend the cache it was given (present lengths "
                           f"{sorted({t.shape[2] for t in presents})}, expected 8): its forward takes no "
                           f"{wrapper.cache_arg!r}")
    say(f"exporting {type(model).__name__} with its KV cache (patched, dynamo)")
    vision = None
    with patch(model, fused=fused) as patched, exportable_experts(model):
        try:
            proto = _export(wrapper, args, opset)
            if kind == "vlm":  # the vision encoder, patched too, with its dynamic grid
                say("exporting its vision encoder (grid inputs)")
                vision = _vision_graph(model, opset, fused, seed)
        except Exception as exc:  # noqa: BLE001 - the exporter's own failure, in one line
            raise RuntimeError(f"the dynamo exporter failed on {type(model).__name__} with a KV cache (patched: "
                               f"{', '.join(n for n, _, _ in patched.replaced)}): {_exporter_reason(exc)[:300]}"
                               + _EXPORT_HINT.get(_failure_kind(exc), "")) from None
    names = wrapper.input_names
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps({
        "inputs": names, "outputs": wrapper.output_names, "layers": wrapper.num_layers, "tokens": names[0],
        "positions": "mrope" if kind == "vlm" else "text",
        "rule": ("prefill: mrope_position_ids(..., return_deltas=True); decode: decode_position_ids(rope_deltas, "
                 "past_length)" if kind == "vlm" else "text_position_ids(attention_mask), last S columns"),
        "model": type(model).__name__, "fused": fused, "recompute_cache_at": _recompute_at(model),
        "vision_graph": os.path.basename(vision_path) if vision_path else None})
    write_together({out: proto.SerializeToString(), **({vision_path: vision} if vision_path else {})})
    return model, kind


def _vision_graph(model, opset: int, fused: bool, seed: int) -> bytes:
    """The VLM's vision encoder as a `GridEncoder` graph (the metadata `vision_grid_inputs` takes)."""
    from .export import export_bytes
    from .inputs import EXPORT_GRID
    import onnx

    from .vision_grid import METADATA_KEY as GRID_KEY, GridEncoder

    encoder = GridEncoder(model.model.visual)
    merge = encoder.params["spatial_merge_size"]
    args = encoder.example_args(EXPORT_GRID * [1, merge, merge], seed=seed)
    data = export_bytes(encoder, args, encoder.input_names, dict(zip(encoder.input_names, encoder.dynamic_shapes())),
                        exporter="dynamo", opset=opset, fused=fused)
    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = GRID_KEY, json.dumps(encoder.params)
    return proto.SerializeToString()


def _recompute_at(model) -> int | None:
    """The cache length at which transformers' generate drops the cache and recomputes it
    (Phi-3, PhiMoE, Phi-4-multimodal: LongRoPE's switch from the short to the long factors at
    ``original_max_position_embeddings``), read off the model's own generation code; else None."""
    prepare = getattr(type(model), "prepare_inputs_for_generation", None)
    try:
        source = inspect.getsource(prepare) if prepare is not None else ""
    except (OSError, TypeError):
        source = ""
    limit = getattr(model.config.get_text_config(), "original_max_position_embeddings", None)
    return int(limit) if "original_max_position_embeddings" in source and limit else None


def _export(wrapper, args, opset):
    """The ONNX model of ``wrapper(*args)``, every batch, sequence and past length dynamic,
    its symbolic dims renamed batch / sequence / total / past."""
    import re

    from .._util import quiet_exporter, silent_fds

    auto = torch.export.Dim.DYNAMIC  # the exporter finds total = past + sequence itself
    past = tuple({0: auto, 2: auto} for _ in args[3:])
    shapes = ({0: auto, 1: auto}, {0: auto, 1: auto}, {i: auto for i in range(args[2].dim() - 2, args[2].dim())}, past)
    with silent_fds(), quiet_exporter():
        program = torch.onnx.export(wrapper, args, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                    input_names=wrapper.input_names, output_names=wrapper.output_names,
                                    verify=False, report=False)
    proto = program.model_proto
    names = {}  # every input's symbols by role; outputs then read "sequence + past"
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        roles = {0: "batch", 1: "total"} if value.name == "attention_mask" else {0: "batch", 2: "past"} \
            if value.name.startswith("past_") else {len(dims) - 2: "batch", len(dims) - 1: "sequence"} \
            if value.name == "position_ids" else {0: "batch", 1: "sequence"}
        for axis, label in roles.items():
            if dims[axis].dim_param:
                names.setdefault(dims[axis].dim_param, label)
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = re.sub(r"\bs\d+\b", lambda m: names.get(m.group(0), m.group(0)), dim.dim_param)
    return proto


@dataclasses.dataclass
class GenerationReport:
    """Greedy generation on onnxruntime against transformers' ``generate`` on the same weights."""

    path: str
    model: str
    prompt: str  # what the prompt held, in words
    steps: int
    tokens_onnx: list  # [B][steps]
    tokens_transformers: list
    max_logit_diff: float
    tolerance: float
    within_tolerance: bool
    files: list = dataclasses.field(default_factory=list)  # the decoder graph, and its vision graph for a VLM

    @property
    def first_difference(self) -> int | None:
        """The first step where a row's token differs, or None."""
        for step in range(self.steps):
            if any(a[step] != b[step] for a, b in zip(self.tokens_onnx, self.tokens_transformers)):
                return step
        return None

    @property
    def passed(self) -> bool:
        return self.first_difference is None and self.within_tolerance

    def summary(self) -> str:
        lines = [f"{self.model}: greedy generation of {self.steps} tokens on onnxruntime with the KV cache "
                 f"({self.path}), prompt: {self.prompt}"]
        first = self.first_difference
        lines.append("  tokens: identical to transformers generate(do_sample=False)" if first is None else
                     f"  tokens differ from step {first}: onnxruntime {[r[first:first + 5] for r in self.tokens_onnx]} "
                     f"vs transformers {[r[first:first + 5] for r in self.tokens_transformers]}")
        lines.append(f"  logits: max |diff| {self.max_logit_diff:.3g} over every step (tolerance {self.tolerance:.3g}) "
                     f"-> {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "first_difference": self.first_difference, "passed": self.passed}


# The prompt check_generation uses for a VLM: text, an image of this patch grid, text, a video
# of this one (2 temporal steps, seconds per step), text. The video's temporal extent stays
# within its merged rows: there every transformers release since 5.0 and the trained rule
# (`mrope_position_ids`) agree on where the next text starts (transformers issue 45381).
_IMAGE_GRID = (1, 4, 6)
_VIDEO_GRID = (2, 8, 8)
_SECONDS_PER_GRID = 1.0


def _prompt(model, kind, batch: int, seed: int, vision_graph=None):
    """(generate kwargs for transformers, onnx loop kwargs, words): the same prompt for both."""
    g = torch.Generator().manual_seed(seed)
    if kind == "text":
        ids = torch.randint(0, 500, (batch, 11), generator=g)
        mask = torch.ones_like(ids)
        mask[1:, :4] = 0  # rows after the first are left-padded
        words = f"{batch} x 11 random tokens" + (", rows after the first left-padded by 4" if batch > 1 else "")
        return dict(input_ids=ids, attention_mask=mask), dict(tokens=ids.numpy(), attention_mask=mask.numpy()), words
    cfg = model.config
    vision = cfg.vision_config
    merge = int(vision.spatial_merge_size)
    # Qwen2.5-VL spaces a video's temporal positions by tokens_per_second * seconds per grid step
    interval = float(getattr(vision, "tokens_per_second", 1) or 1) * _SECONDS_PER_GRID

    def run(token, grid):
        return torch.full((batch, int(np.prod(grid)) // merge**2), token)

    def text(n):
        return torch.randint(0, 500, (batch, n), generator=g)

    start, end = torch.full((batch, 1), cfg.vision_start_token_id), torch.full((batch, 1), cfg.vision_end_token_id)
    ids = torch.cat([text(5), start, run(cfg.image_token_id, _IMAGE_GRID), end, text(3),
                     start, run(cfg.video_token_id, _VIDEO_GRID), end, text(4)], dim=1)
    width = int(vision.in_channels) * int(vision.temporal_patch_size) * int(vision.patch_size) ** 2
    pixels = {name: torch.randn(batch * int(np.prod(grid)), width, generator=g)
              for name, grid in (("image", _IMAGE_GRID), ("video", _VIDEO_GRID))}
    grids = {"image": torch.tensor([_IMAGE_GRID] * batch), "video": torch.tensor([_VIDEO_GRID] * batch)}  # one each per row
    mask = torch.ones_like(ids)
    mask[1:, :4] = 0  # rows after the first are left-padded (their first 4 text tokens)
    types = (ids == cfg.image_token_id).long() + 2 * (ids == cfg.video_token_id).long()
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        for name, token in (("image", cfg.image_token_id), ("video", cfg.video_token_id)):
            features = _vision_features(model, pixels[name], grids[name], vision_graph, video=name == "video")
            embeds[ids == token] = features.to(embeds.dtype)
    positions, deltas = mrope_position_ids(types, image_grid_thw=grids["image"], video_grid_thw=grids["video"],
                                           spatial_merge_size=merge, video_time_intervals=[interval] * batch,
                                           attention_mask=mask, return_deltas=True)
    table = model.get_input_embeddings().weight.detach().numpy()
    onnx_kwargs = dict(tokens=embeds.numpy(), attention_mask=mask.numpy(), position_ids=positions.numpy(),
                       rope_deltas=deltas.numpy(), embed=lambda token: table[token])
    (_, h, w), (vt, vh, vw) = _IMAGE_GRID, _VIDEO_GRID
    words = (f"{batch} x (text, a {h}x{w}-patch image, text, a {vt}-step {vh}x{vw}-patch video (temporal interval "
             f"{interval:g}), text: {ids.shape[1]} tokens, rope_deltas {int(deltas[0])})"
             + (", rows after the first left-padded by 4; " if batch > 1 else "; ")
             + "image and video features from "
             + (f"{os.path.basename(os.fspath(vision_graph))} on onnxruntime" if vision_graph else "the torch vision tower"))
    # the processor's token types: transformers computes M-RoPE from them (5.23 and later)
    reference = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels["image"], image_grid_thw=grids["image"],
                     pixel_values_videos=pixels["video"], video_grid_thw=grids["video"], mm_token_type_ids=types)
    if "second_per_grid_ts" in inspect.signature(model.forward).parameters:
        reference["second_per_grid_ts"] = torch.full((batch,), _SECONDS_PER_GRID)
    return reference, onnx_kwargs, words


def _vision_features(model, pixels, grid, vision_graph=None, *, video: bool = False):
    """The merged image or video features for ``grid``, [tokens, hidden]: from the exported
    vision graph on onnxruntime (its grid inputs built on the host, numpy only) or, without one,
    from the model's own vision tower."""
    if vision_graph is not None:
        import onnxruntime as ort

        from ..positions import vision_grid_inputs
        from .vision_grid import METADATA_KEY as GRID_KEY

        session = ort.InferenceSession(os.fspath(vision_graph), providers=["CPUExecutionProvider"])
        params = json.loads(session.get_modelmeta().custom_metadata_map[GRID_KEY])
        host = vision_grid_inputs(grid.numpy(), **params)
        feeds = {"pixel_values": pixels.numpy(), **{i.name: host[i.name] for i in session.get_inputs()[1:]}}
        return torch.from_numpy(session.run(None, feeds)[0])
    out = (model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid) if video else
           model.model.get_image_features(pixel_values=pixels, image_grid_thw=grid))
    out = getattr(out, "pooler_output", out)
    return torch.cat(list(out)) if isinstance(out, (list, tuple)) else out


def check_generation(model, kind, path, steps: int = 20, *, batch: int = 1, seed: int = 0,
                     drop_rope_deltas: bool = False) -> GenerationReport:
    """Greedy-decode ``steps`` tokens with `generate_onnx` and with transformers' ``generate``
    (``do_sample=False``) from the same prompt; compare tokens and every step's logits.

    Args:
        model, kind: from `export_with_past` (the unpatched transformers model).
        batch: prompt rows; text decoders: rows after the first are left-padded; VLMs: each row
            its own image.
        drop_rope_deltas: decode M-RoPE positions without ``rope_deltas`` (a negative control:
            the report must fail).
    """
    meta = read_serving(path)
    vision = meta.get("vision_graph")
    vision_graph = os.path.join(os.path.dirname(os.fspath(path)), vision) if vision else None
    for name, value, top in (("steps", steps, MAX_GENERATE), ("batch", batch, 64)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"{name} must be an int from 1 to {top}, got {value!r}")
    reference_kwargs, onnx_kwargs, words = _prompt(model, kind, batch, seed, vision_graph)
    switch = meta.get("recompute_cache_at")
    if switch:  # Phi-3's LongRoPE: say whether this generation exercised the cache recompute
        last = onnx_kwargs["attention_mask"].shape[1] + steps - 1
        words += (f"; the cache reaches {switch} (LongRoPE's switch: recomputed)" if last > switch else
                  f"; stays below LongRoPE's switch at {switch} (no cache recompute)")
    with torch.no_grad():
        ref = model.generate(**reference_kwargs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    want_ids = ref.sequences[:, -steps:].numpy()
    want_logits = torch.stack(ref.logits).numpy()  # [steps, B, vocab]
    if drop_rope_deltas:
        if "rope_deltas" not in onnx_kwargs:
            raise ValueError("drop_rope_deltas is for M-RoPE decoders")
        onnx_kwargs["rope_deltas"] = np.zeros_like(onnx_kwargs["rope_deltas"])
        words += "; decode positions WITHOUT rope_deltas"
    got_ids, got_logits = generate_onnx(path, steps=steps, **onnx_kwargs)
    stats = compare(got_logits, want_logits, TOLERANCE, scale="tensor") if got_logits.shape == want_logits.shape else None
    if stats is None:
        raise RuntimeError(f"logits shape {got_logits.shape} from onnxruntime, {want_logits.shape} from transformers")
    scale = max(1.0, float(np.abs(want_logits).max()))
    return GenerationReport(path=os.fspath(path), model=type(model).__name__, prompt=words, steps=steps,
                            tokens_onnx=got_ids.tolist(), tokens_transformers=want_ids.tolist(),
                            max_logit_diff=stats["max_abs_err"], tolerance=TOLERANCE["rtol"] * scale,
                            within_tolerance=stats["ok"], files=[os.fspath(path)] + ([vision_graph] if vision_graph else []))
