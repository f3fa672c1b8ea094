"""The one behavioural check of a transformers rotary: its rotary module on probe positions and
the apply function its attention calls, run the way the model runs them.

`rope_export.hf.probe` holds a config's spec against this rotation (coverage); the patch
(`rope_export.hf.adapters`, `rope_export.hf.tables`) holds its replacements against it before
anything is swapped. Both use these pieces, so both see a model the same way.

    >>> pos = probe_positions("text", max_pos=2048)
    >>> pos.shape
    torch.Size([1, 11])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PROBE_STEPS", "probe_positions", "call_rotary", "rotation", "vision_rotation", "complex_layout", "random_qk",
           "device_of", "max_error"]

# Positions every check runs: short contexts, a long one, and (given the trained length) its
# last position and past twice it, where length rules switch.
PROBE_STEPS = (0, 1, 2, 3, 7, 31, 100, 1000, 4000)


def probe_positions(kind: str, max_pos: int | None = None) -> torch.Tensor:
    """Probe positions for a rotary of ``kind``.

    Args:
        kind: "text" / "complex" (``[1, S]``), "mrope" (``[3, 1, S]``, three different
            streams, as an image grid gives) or "vision_hw" (``[N, 2]`` rows and columns).
        max_pos: the trained length, when known: adds ``max_pos - 1`` and ``2 * max_pos + 5``.
    """
    steps = torch.tensor(list(PROBE_STEPS) + ([max_pos - 1, 2 * max_pos + 5] if max_pos else []))
    if kind in ("text", "complex"):
        return steps[None]
    if kind == "mrope":
        return torch.stack([steps, steps // 2 + 1, (steps * 3) % 97])[:, None]
    if kind == "vision_hw":
        return torch.stack([steps % 37, (steps * 7) % 41], dim=-1)
    raise ValueError(f"no probe positions for rotary kind {kind!r}")


def device_of(module: nn.Module) -> torch.device:
    return next((b.device for b in module.buffers()), torch.device("cpu"))


def call_rotary(rotary: nn.Module, position_ids: torch.Tensor, layer_type: str | None = None):
    """What a rotary module returns at ``position_ids``: its two tensors in its own order
    (``(cos, sin)``; GPT-J: ``(sin, cos)``), or ``(freqs_cis, None)`` for a complex one, computed
    without gradients on the module's device.

    A rotary backed by a table of its trained length (GPT-J in transformers 5.25) has no rows
    past it: positions at or past the table are dropped, and the positions used come back too.

    Returns:
        ``((cos, sin), position_ids used)``.
    """
    x = torch.zeros(1, device=device_of(rotary))
    position_ids = position_ids.to(x.device)

    def run(pos):
        with torch.no_grad():
            out = rotary(x, pos) if layer_type is None else rotary(x, pos, layer_type)
        if isinstance(out, torch.Tensor) and out.is_complex():
            return out, None  # Meta-style freqs_cis: applied by complex multiplication
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise TypeError(f"forward returned {type(out).__name__}, not (cos, sin)")
        return out

    try:
        return run(position_ids), position_ids
    except IndexError:
        rows = _table_rows(rotary)
        if rows is None:
            raise
        kept = position_ids[..., (position_ids < rows).reshape(-1, position_ids.shape[-1]).all(0)]
        return run(kept), kept


def _table_rows(rotary: nn.Module) -> int | None:
    table = getattr(rotary, "embed_positions", None)
    return int(table.shape[0]) if isinstance(table, torch.Tensor) else None


def random_qk(width: int, tokens: int, *, seed: int = 0, heads: tuple[int, int] = (2, 1)):
    """Random q ``[1, Hq, S, D]`` and k ``[1, Hk, S, D]`` (float32, CPU): a probe's inputs."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads[0], tokens, width, generator=g), torch.randn(1, heads[1], tokens, width, generator=g))


def complex_layout(fn, freqs: torch.Tensor, width: int) -> str:
    """How a Meta-style ``apply_rotary_emb(xq, xk, freqs_cis)`` takes q/k: "complex_bshd"
    (``[B, S, H, D]``, Llama 4) or "complex_bhsd" (``[B, H, S, D]``, DeepSeek V2), told by
    running it with 2 heads (the probe's token count differs, so one of the two fails). ``freqs``:
    the complex ``[B, S, P]`` table, or rope_export's float32 ``[B, S, P, 2]`` (cos, sin) pairs."""
    tokens = freqs.shape[-2] if freqs.is_complex() else freqs.shape[-3]
    for layout, shape in (("complex_bshd", (1, tokens, 2, width)), ("complex_bhsd", (1, 2, tokens, width))):
        try:
            with torch.no_grad():
                fn(torch.zeros(shape, device=freqs.device), torch.zeros(shape, device=freqs.device), freqs)
            return layout
        except RuntimeError:
            continue
    raise ValueError("its apply_rotary_emb takes neither [B, S, H, D] nor [B, H, S, D] q/k")


def _call(fn, form: str, q, k, a, b):
    """``fn`` on q, k ``[B, H, S, D]`` in its own calling convention, given the rotary's two
    outputs ``(a, b)`` in the order the rotary returns them and the attention passes them on
    ((cos, sin); GPT-J: (sin, cos); a complex ``freqs_cis``: ``(freqs_cis, None)``)."""
    if form == "qk":
        return tuple(fn(q, k, a, b))
    if form == "x":
        return fn(q, a, b), fn(k, a, b)
    if form == "sincos":  # GPT-J: apply_rotary_pos_emb(tensor [B, S, H, R], sin, cos), one tensor a call
        return tuple(fn(t.transpose(1, 2), a, b).transpose(1, 2) for t in (q, k))
    if form == "complex":
        if complex_layout(fn, a, q.shape[-1]) == "complex_bhsd":
            return tuple(fn(q, k, a))
        return tuple(t.transpose(1, 2) for t in fn(q.transpose(1, 2), k.transpose(1, 2), a))
    raise ValueError(f"no text rotation for apply form {form!r}")


def rotation(fn, form: str, q, k, a, b, rotary_dim: int | None = None):
    """The rotation of q, k ``[B, H, S, D]`` by an apply function of ``form`` (`ApplySite.form`)
    given what the rotary returned, ``(a, b)`` in its own order (see `_call`).

    Where the function cannot take the whole head, the attention slices its rotary dims off
    first (Phi, GPT-J, DeepSeek V3.2's indexer): the first ``rotary_dim`` dims (default: the
    width of ``a``) are rotated and the rest pass through, as those attentions do.

    Raises:
        ValueError: it takes neither the whole head nor its rotary dims.
    """
    try:
        with torch.no_grad():
            return _call(fn, form, q, k, a, b)
    except (RuntimeError, ValueError) as exc:
        error = exc
    width = rotary_dim or a.shape[-1]
    if width >= q.shape[-1]:
        raise ValueError(f"it does not take the whole head ({type(error).__name__}: {str(error)[:120]})")
    try:
        with torch.no_grad():
            q_rot, k_rot = _call(fn, form, q[..., :width], k[..., :width], a, b)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"it takes neither the whole head nor its first {width} dims "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return torch.cat((q_rot, q[..., width:]), dim=-1), torch.cat((k_rot, k[..., width:]), dim=-1)


def vision_rotation(fn, form: str, q, k, a, b=None):
    """The rotation of packed patches q, k ``[N, H, D]`` by a vision apply function, given what
    its rotary returned (``a``, ``b``: cos/sin ``[N, D]``; Llama 4: a complex ``[N, 1, P]`` table
    and ``b`` None, or rope_export's (cos, sin) pair), results ``[N, H, D]``. Forms: "packed"
    (Qwen-VL: ``fn(q, k, cos, sin)`` on ``[N, H, D]``), "qk" (Pixtral: ``[1, H, N, D]`` with
    ``unsqueeze_dim=0``), "llama4_vision" (``[1, N, H, D]``, the table or pair as one argument)."""
    with torch.no_grad():
        if form == "packed":
            return tuple(fn(q, k, a, b))
        if form == "qk":
            out = fn(q.transpose(0, 1)[None], k.transpose(0, 1)[None], a, b, unsqueeze_dim=0)
            return tuple(t[0].transpose(0, 1) for t in out)
        if form == "llama4_vision":
            return tuple(t[0] for t in fn(q[None], k[None], a if b is None else (a, b)))
    raise ValueError(f"no vision rotation for apply form {form!r}")


def max_error(want, got) -> float:
    """The largest |difference| over pairs of tensors (NaN when any is not finite)."""
    worst = 0.0
    for w, g in zip(want, got):
        diff = (w.float().cpu() - g.float().cpu()).abs()
        if not bool(torch.isfinite(diff).all()):
            return float("nan")
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst
