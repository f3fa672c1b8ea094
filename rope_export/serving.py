"""The serving loop of a decoder exported with its KV cache (``export-hf --with-past``):
greedy decoding on onnxruntime, with numpy alone (no torch), as a server writes it.

    from rope_export.serving import generate_onnx
    ids, logits = generate_onnx("decoder.onnx", input_ids, attention_mask, steps=20)

Positions: text decoders take transformers' rule from the attention mask (`text_position_ids`);
M-RoPE decoders take the prompt's ``[3, B, S]`` positions and ``rope_deltas`` from
`mrope_position_ids(..., return_deltas=True)`, and every decode step sits at
``past_length + rope_deltas`` (`decode_position_ids`). Phi-3's LongRoPE: the first time the
cache reaches ``original_max_position_embeddings`` the whole sequence is recomputed, as
transformers' ``generate`` does (the graph's metadata says where: ``recompute_cache_at``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .positions import decode_position_ids, text_position_ids

__all__ = ["METADATA_KEY", "read_serving", "parse_metadata", "generate_onnx"]

METADATA_KEY = "rope_export.serving"


def read_serving(proto_or_path) -> dict:
    """The serving metadata `export_with_past` wrote (ValueError if the graph has none)."""
    import onnx

    if isinstance(proto_or_path, onnx.ModelProto):
        proto = proto_or_path
    else:
        try:
            proto = onnx.load(os.fspath(proto_or_path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises protobuf's DecodeError, OSError, ...
            raise ValueError(f"{os.fspath(proto_or_path)}: not a readable ONNX file ({type(exc).__name__})") from None
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return parse_metadata(entry.value)
    raise ValueError("this graph has no serving metadata: export it with export-hf --with-past")


def parse_metadata(text: str) -> dict:
    """The metadata JSON, every field the loop reads of the type it reads (ValueError otherwise)."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        meta = None
    fields = {"inputs": list, "outputs": list, "layers": int, "tokens": str, "positions": str}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)
                                         for k, t in fields.items()):
        raise ValueError(f"the graph's {METADATA_KEY} metadata is not what export-hf --with-past writes")
    recompute, vision = meta.get("recompute_cache_at"), meta.get("vision_graph")
    if meta["tokens"] not in ("input_ids", "inputs_embeds") or meta["positions"] not in ("text", "mrope") \
            or not 1 <= meta["layers"] <= 4096 or len(meta["outputs"]) != 1 + 2 * meta["layers"] \
            or not (recompute is None or (isinstance(recompute, int) and not isinstance(recompute, bool) and recompute > 0)) \
            or not (vision is None or (isinstance(vision, str) and vision == os.path.basename(vision) and vision)):
        raise ValueError(f"the graph's {METADATA_KEY} metadata is not what export-hf --with-past writes")
    return meta


def generate_onnx(path, tokens, attention_mask, steps: int, *, position_ids=None, rope_deltas=None, embed=None,
                  providers=("CPUExecutionProvider",)):
    """Greedy decoding on onnxruntime with the KV cache: the loop a server runs.

    Args:
        path: a graph from ``export-hf --with-past`` (`rope_export.hf.with_past.export_with_past`).
        tokens: the prompt: ``input_ids`` [B, S] int64, or ``inputs_embeds`` [B, S, hidden]
            float32 (then ``embed`` maps new token ids [B, 1] to their embeddings).
        attention_mask: [B, S] (left padding as zeros).
        position_ids: the prompt's positions; default: `text_position_ids` of the mask. M-RoPE
            decoders: ``[3, B, S]`` from `mrope_position_ids`, with ``rope_deltas``.
    Returns:
        (new token ids [B, steps], logits per step [steps, B, vocab]) as numpy arrays.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    meta = read_serving(path)
    session = _session(path, providers)
    mrope, embeds = meta["positions"] == "mrope", meta["tokens"] == "inputs_embeds"
    mask = _mask(attention_mask)
    batch, seq = mask.shape
    feed_tokens = np.asarray(tokens)
    if embeds:
        width = session.get_inputs()[0].shape[2]
        if feed_tokens.ndim != 3 or feed_tokens.shape[:2] != (batch, seq) or feed_tokens.dtype.kind != "f" \
                or (isinstance(width, int) and feed_tokens.shape[2] != width):
            raise ValueError(f"tokens must be inputs_embeds [B, S, {width}] floats matching attention_mask [{batch}, "
                             f"{seq}], got {feed_tokens.dtype} {feed_tokens.shape}")
        if embed is None:
            raise ValueError("this graph takes inputs_embeds: pass embed, which maps token ids [B, 1] to embeddings")
        feed_tokens = feed_tokens.astype(np.float32)
    else:
        if feed_tokens.shape != (batch, seq) or feed_tokens.dtype.kind not in "iu":
            raise ValueError(f"tokens must be input_ids [B, S] ints matching attention_mask [{batch}, {seq}], got "
                             f"{feed_tokens.dtype} {feed_tokens.shape}")
        if embed is not None or rope_deltas is not None:
            raise ValueError("embed and rope_deltas are for graphs that take inputs_embeds / M-RoPE positions; "
                             "this one takes input_ids and [B, S] positions")
        feed_tokens = feed_tokens.astype(np.int64)
    if mrope and (position_ids is None or rope_deltas is None):
        raise ValueError("an M-RoPE decoder needs the prompt's position_ids and rope_deltas "
                         "(mrope_position_ids(..., return_deltas=True))")
    shape = (3, batch, seq) if mrope else (batch, seq)
    positions = np.asarray(position_ids) if position_ids is not None else text_position_ids(mask)
    if positions.shape != shape or positions.dtype.kind not in "iu":
        raise ValueError(f"position_ids must be {list(shape)} ints, got {positions.dtype} {positions.shape}")
    positions = positions.astype(np.int64)
    if mrope:
        rope_deltas = np.asarray(rope_deltas)
        if rope_deltas.shape != (batch,) or rope_deltas.dtype.kind not in "iu":
            raise ValueError(f"rope_deltas must be [{batch}] ints, got {rope_deltas.dtype} {rope_deltas.shape}")
    past_inputs = [i for i in session.get_inputs() if i.name.startswith("past_")]
    empty = {i.name: np.zeros([batch, i.shape[1], 0, i.shape[3]], np.float32) for i in past_inputs}
    recompute_at = meta.get("recompute_cache_at")
    past, all_tokens, all_positions = empty, feed_tokens, positions
    new_ids, logits = [], []
    for _ in range(steps):
        length = mask.shape[1] - feed_tokens.shape[1]  # tokens in the cache
        if recompute_at is not None and length == recompute_at:
            # Phi-3's LongRoPE: the cached keys were rotated with the short factors; transformers
            # drops the cache the first time the sequence passes the switch and recomputes it.
            past, feed_tokens, positions = empty, all_tokens, all_positions
        outputs = session.run(None, {meta["tokens"]: feed_tokens, "attention_mask": mask, "position_ids": positions,
                                     **past})
        step_logits = outputs[0][:, -1]
        token = step_logits.argmax(-1)[:, None].astype(np.int64)
        new_ids.append(token)
        logits.append(step_logits)
        past = {name.replace("present_", "past_"): value for name, value in zip(meta["outputs"][1:], outputs[1:])}
        if any(v.shape[2] != mask.shape[1] for v in past.values()):
            raise RuntimeError(f"a present has length {sorted({v.shape[2] for v in past.values()})}, not past + "
                               f"sequence = {mask.shape[1]}: the graph did not extend its cache")
        length = mask.shape[1]
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        # text: one past the last position (the mask rule, or the caller's own positions continued)
        positions = decode_position_ids(rope_deltas, length) if mrope else positions[:, -1:] + 1
        feed_tokens = _embedded(embed, token, feed_tokens.shape[2]) if embeds else token
        all_tokens = np.concatenate([all_tokens, feed_tokens], axis=1)
        all_positions = np.concatenate([all_positions, positions], axis=-1)
    return np.concatenate(new_ids, axis=1), np.stack(logits)


def _session(path, providers):
    """An onnxruntime session on exactly ``providers`` (never a silent fallback to another)."""
    import onnxruntime as ort

    providers = [providers] if isinstance(providers, str) else list(providers)
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if not providers or missing:
        raise ValueError(f"providers {missing or providers} are not available here; available: {', '.join(available)}")
    session = ort.InferenceSession(os.fspath(path), providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(f"onnxruntime runs this graph on {session.get_providers()[0]}, not {providers[0]}")
    return session


def _mask(attention_mask) -> np.ndarray:
    mask = np.asarray(attention_mask)
    if mask.ndim != 2 or mask.shape[1] < 1 or mask.dtype.kind not in "iub" or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"attention_mask must be [B, S] (S >= 1) of 0 and 1, got {mask.dtype} {mask.shape}")
    if not mask[:, -1].all():
        raise ValueError("attention_mask: the last token of every row must be a token (left padding only)")
    return mask.astype(np.int64)


def _embedded(embed, token, width):
    out = np.asarray(embed(token))
    if out.shape != (*token.shape, width) or out.dtype.kind != "f":
        raise ValueError(f"embed(ids [B, 1]) must give [B, 1, {width}] floats, got {out.dtype} {out.shape}")
    return out.astype(np.float32)
