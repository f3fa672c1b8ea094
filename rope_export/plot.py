"""Draw a spec: which position stream each rotation pair follows, how fast it turns, and
which dims of the head it touches in the chosen layout.

    rope-export plot --preset qwen3-vl-8b --out qwen3vl.png

Needs matplotlib (``pip install "rope-export[plot]"``).
"""

from __future__ import annotations

import math
import os

from .spec import RopeSpec

__all__ = ["plot_spec", "axis_names", "save_png"]

_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]
_TAIL = "#D9D9D9"


def axis_names(spec: RopeSpec) -> list[str]:
    """Human names of the position streams: position (1D), row/col (2D), t/h/w (3 axes)."""
    return {1: ["position"], 2: ["row", "col"], 3: ["t", "h", "w"]}.get(spec.num_axes, [f"axis {a}" for a in range(spec.num_axes)])


def save_png(fig, path) -> None:
    """A figure as a PNG at ``path``, written atomically (`_util.atomic_write`: a folder, device or
    pipe at ``path`` is refused before anything is drawn there, and a failure leaves nothing)."""
    import io

    from ._util import atomic_write, check_output_path

    check_output_path(path)
    if not os.fspath(path).lower().endswith(".png"):  # a .svg, .json or .onnx name holding PNG bytes misleads
        raise ValueError(f"the picture is a PNG: its file name must end in .png, got {os.fspath(path)!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format="png")
    atomic_write(path, buffer.getvalue())


def plot_spec(spec: RopeSpec, path: str | os.PathLike, *, title: str | None = None) -> str:
    """Write a PNG picture of ``spec`` to ``path`` and return the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch, Rectangle
    except ImportError:
        raise RuntimeError('plotting needs matplotlib: pip install "rope-export[plot]"') from None

    P, D = spec.num_pairs, spec.head_dim
    names = axis_names(spec)
    fig, (ax_axis, ax_freq, ax_dims) = plt.subplots(3, 1, figsize=(max(8.0, D / 10), 6.2),
                                                   gridspec_kw={"height_ratios": [0.5, 1.4, 0.9]})
    fig.suptitle(title or spec.describe(), fontsize=10)

    # 1. which stream each pair follows
    for i, a in enumerate(spec.axis_of_pair):
        ax_axis.add_patch(Rectangle((i, 0), 1, 1, color=_COLORS[a % len(_COLORS)], ec="white", lw=0.3))
    ax_axis.set_xlim(0, P), ax_axis.set_ylim(0, 1), ax_axis.set_yticks([])
    ax_axis.set_xlabel("rotation pair i (0 .. P-1): position stream it follows", fontsize=8)

    # 2. rotation speed: log10 inv_freq per pair (0-frequency pairs of proportional RoPE drawn at the floor)
    logs = [math.log10(f) if f > 0 else None for f in spec.inv_freq]
    floor = min((v for v in logs if v is not None), default=0.0) - 0.5
    ax_freq.bar(range(P), [(v if v is not None else floor) - floor for v in logs], bottom=floor, width=0.9,
                color=[_COLORS[a % len(_COLORS)] if v is not None else _TAIL for a, v in zip(spec.axis_of_pair, logs)])
    ax_freq.set_xlim(-0.5, P - 0.5)
    ax_freq.set_ylabel("log10 inv_freq", fontsize=8)
    ax_freq.set_xlabel("fast (left) to slow (right) within each stream's table", fontsize=8)

    # 3. head dims: colour of the pair's stream, the pair index inside; tail in grey
    for d in range(D):
        ax_dims.add_patch(Rectangle((d, 0), 1, 1, color=_TAIL, ec="white", lw=0.3))
    for i in range(P):
        for d in spec.pair_dims(i):
            ax_dims.add_patch(Rectangle((d, 0), 1, 1, color=_COLORS[spec.axis_of_pair[i] % len(_COLORS)], ec="white", lw=0.3))
            if D <= 64:
                ax_dims.text(d + 0.5, 0.5, str(i), ha="center", va="center", fontsize=5, color="white")
    ax_dims.set_xlim(0, D), ax_dims.set_ylim(0, 1), ax_dims.set_yticks([])
    pairing = {"half": "pair i = dims (i, i+P)", "interleaved": "pair i = dims (2i, 2i+1)",
               "interleaved_to_half": "pair i = dims (2i, 2i+1) in, (i, i+P) out"}[spec.layout]
    tail = f"; dims {spec.rotary_dim}..{D - 1} pass through" if spec.rotary_dim < D else ""
    ax_dims.set_xlabel(f"head dims 0 .. {D - 1}, layout '{spec.layout}': {pairing}{tail}", fontsize=8)

    handles = [Patch(color=_COLORS[a % len(_COLORS)], label=n) for a, n in enumerate(names)]
    if spec.rotary_dim < D or any(f == 0 for f in spec.inv_freq):
        handles.append(Patch(color=_TAIL, label="not rotated"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.955), fontsize=8, ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    path = os.fspath(path)
    save_png(fig, path)
    plt.close(fig)
    return path
