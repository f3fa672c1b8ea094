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

__all__ = ["METADATA_KEY", "read_serving", "generate_onnx"]

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
            return json.loads(entry.value)
    raise ValueError("this graph has no serving metadata: export it with export-hf --with-past")


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
    import onnxruntime as ort

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    meta = read_serving(path)
    session = ort.InferenceSession(os.fspath(path), providers=list(providers))
    mrope = meta["positions"] == "mrope"
    if mrope and (position_ids is None or rope_deltas is None):
        raise ValueError("an M-RoPE decoder needs the prompt's position_ids and rope_deltas "
                         "(mrope_position_ids(..., return_deltas=True))")
    if meta["tokens"] == "inputs_embeds" and embed is None:
        raise ValueError("this graph takes inputs_embeds: pass embed, which maps token ids [B, 1] to embeddings")
    mask = np.asarray(attention_mask, dtype=np.int64)
    feed_tokens = np.asarray(tokens)
    positions = np.asarray(position_ids if position_ids is not None else text_position_ids(mask), dtype=np.int64)
    batch = mask.shape[0]
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
        positions = decode_position_ids(rope_deltas, length) if mrope else text_position_ids(mask)[:, -1:]
        feed_tokens = np.asarray(embed(token), dtype=np.float32) if meta["tokens"] == "inputs_embeds" else token
        all_tokens = np.concatenate([all_tokens, feed_tokens], axis=1)
        all_positions = np.concatenate([all_positions, positions], axis=-1)
    return np.concatenate(new_ids, axis=1), np.stack(logits)
