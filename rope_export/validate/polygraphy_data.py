"""A Polygraphy data loader that feeds a rope_export graph what `validate` feeds it: q and k of
the graph's heads, and positions from 0 to far past the trained context (real image grids for
multi-axis specs), read from the spec in the graph's metadata.

Polygraphy's defaults (every dynamic dimension 1, integer inputs 0 or 1) run a rotary graph
without exercising a position; with this loader, comparing runtimes compares rotations::

    polygraphy run rope.onnx --onnxrt --trt --data-loader-script "$(python -m rope_export.validate.polygraphy_data)"

The graph is the first ``.onnx`` argument of the command line (``ROPE_EXPORT_GRAPH`` overrides
it); ``ROPE_EXPORT_SEED`` sets the seed (default 0). Positions past a table's end are left out:
their outputs are NaN by design (or the runtime refuses them), and Polygraphy fails NaN outputs.
"""

from __future__ import annotations

import os
import sys

# Absolute imports: Polygraphy loads this file as a script, outside its package.
__all__ = ["load_data", "feeds_for"]


def feeds_for(path: str, seed: int = 0) -> list[dict]:
    """``[{"q": ..., "k": ..., "position_ids": ...}]`` numpy feeds for the graph at ``path``: the
    validator's cases (`cases.make_cases`) at the graph's dtype and head counts."""
    from rope_export.export.metadata import read_graph
    from rope_export.validate.cases import fit_case, fixed_shape, make_cases
    from rope_export.validate.runners import _to_numpy

    info = read_graph(path)
    if info.spec is None:
        raise ValueError(f"{path} has no rope_export.spec metadata: the loader reads the spec from it")
    try:
        heads = [int(info.inputs[n].dims[1]) for n in ("q", "k")]
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"{path}: expected q and k inputs [B, H, S, D] with fixed head counts") from None
    cases = make_cases(info.spec, info.dtype, heads[0], heads[1], seed, table_length=info.table_length)
    fixed = fixed_shape(info)
    cases = [fit_case(c, *fixed) for c in cases if not c.past_table]  # a graph with fixed shapes: cut or tiled
    return [{"q": _to_numpy(c.q), "k": _to_numpy(c.k), "position_ids": c.position_ids.numpy()} for c in cases]


def _graph_path() -> str:
    named = next((a for a in sys.argv[1:] if a.endswith(".onnx")), None)
    override = os.environ.get("ROPE_EXPORT_GRAPH")
    if override and named and os.path.abspath(override) != os.path.abspath(named):
        raise ValueError(f"ROPE_EXPORT_GRAPH names {override}, the command line runs {named}: feeds from one graph "
                         "would be compared on another")
    path = override or named
    if not path:
        raise ValueError("no graph: name an .onnx file on polygraphy's command line or set ROPE_EXPORT_GRAPH")
    return path


def _seed() -> int:
    text = os.environ.get("ROPE_EXPORT_SEED", "0")
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**63:
        raise ValueError(f"ROPE_EXPORT_SEED must be an int from 0 to 2**63 - 1, got {text!r}")
    return seed


def load_data():
    """Polygraphy's entry point: yields one feed dict per case."""
    yield from feeds_for(_graph_path(), _seed())


if __name__ == "__main__":  # prints this file's path, for --data-loader-script
    print(os.path.abspath(__file__))
