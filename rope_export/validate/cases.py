"""The inputs a graph is validated on: bounded integer positions from 0 to far past the
trained context, real image/video grids for multi-axis specs, large magnitudes for
half-precision graphs, and positions outside a table-form graph's table (NaN or refused).

    >>> import rope_export as rx
    >>> [c.name for c in make_cases(rx.load_preset("mistral-7b"), "float32", 4, 2, seed=0)][:3]
    ['zero', 'small b1 s64', 'decode b3 s1']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._util import torch_dtype
from ..positions import mrope_position_ids, patch_grid_positions
from ..spec import RopeSpec

__all__ = ["Case", "make_cases", "fit_case", "fit_cases", "fixed_shape"]


@dataclass(init=False)
class Case:
    """One input set: q ``[B, Hq, S, D]``, k ``[B, Hk, S, D]`` in the graph's dtype, int64
    position_ids ``spec.position_shape(B, S)``. ``past_table``: every token reads a position
    outside a table-form graph's table (on one axis at least), so the runtime must return NaN in
    every head of every token (rope_export's guard row) or refuse the input. ``expect_error``
    is its former name, still accepted."""

    name: str
    q: torch.Tensor
    k: torch.Tensor
    position_ids: torch.Tensor
    past_table: bool = False

    def __init__(self, name: str, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor,
                 past_table: bool = False, *, expect_error: bool | None = None):
        self.name, self.q, self.k, self.position_ids = name, q, k, position_ids
        self.past_table = bool(past_table or expect_error)

    @property
    def expect_error(self) -> bool:
        return self.past_table


def make_cases(spec: RopeSpec, dtype: str, num_q_heads: int, num_kv_heads: int, seed: int,
               table_length: int | None = None) -> list[Case]:
    """Bounded integer positions only. Multi-axis specs get real grids where t, h, w differ,
    and per-axis random positions; text-only (equal-axis) positions are never the only case.
    A table-form graph (``table_length``) is exercised up to its last row, and positions
    outside it must give NaN or be refused (`_outside_cases`)."""
    g = torch.Generator().manual_seed(seed)
    tdtype = torch_dtype(dtype)
    # Positions stay below 2^24, where float32 still holds every integer (Llama 4 text says 10M).
    max_pos = min(spec.max_position_embeddings or 4096, 2**24 - 64)
    axes = spec.num_axes

    def qk(batch, seq, magnitude=1.0):
        q = (torch.randn(batch, num_q_heads, seq, spec.head_dim, generator=g) * magnitude).to(tdtype)
        k = (torch.randn(batch, num_kv_heads, seq, spec.head_dim, generator=g) * magnitude).to(tdtype)
        return q, k

    def rand_pos(batch, seq, low, high):
        return torch.randint(int(low), int(high), spec.position_shape(batch, seq), generator=g, dtype=torch.int64)

    cases = []
    q, k = qk(2, 7)
    cases.append(Case("zero", q, k, torch.zeros(spec.position_shape(2, 7), dtype=torch.int64)))
    q, k = qk(1, 64)
    cases.append(Case("small b1 s64", q, k, rand_pos(1, 64, 0, min(64, table_length or 64))))
    q, k = qk(3, 1)
    cases.append(Case("decode b3 s1", q, k, rand_pos(3, 1, 0, min(max_pos, table_length or max_pos))))
    if table_length is not None:
        q, k = qk(2, 33)
        cases.append(Case(f"table end {table_length}", q, k, rand_pos(2, 33, max(0, table_length - 64), table_length)))
        cases.extend(_outside_cases(spec, table_length, qk, rand_pos))
    else:
        q, k = qk(2, 33)
        cases.append(Case(f"near max {max_pos}", q, k, rand_pos(2, 33, max(0, max_pos - 64), max_pos + 64)))
        far = min(8 * max_pos, 2**24 - 10**6)  # far past the trained context: a window of 1e6 positions
        q, k = qk(2, 17)
        cases.append(Case(f"far beyond, from {far}", q, k, rand_pos(2, 17, far, far + 10**6)))
    rule = spec.length_rule
    switch = (rule.original_max_position_embeddings if rule is not None and rule.kind == "longrope" else
              rule.max_position_embeddings if rule is not None and rule.kind == "dynamic" else None)
    if switch is not None and switch < min(table_length or 2**24, 2**24):
        # Both sides of the switch: the largest position one below it (the short / static
        # table) and exactly at it (the long / stretched one), where a comparison written
        # > instead of >= (or a moved threshold) is the only thing that differs.
        for last in (switch - 1, switch):
            q, k = qk(1, 9)
            pos = torch.arange(last - 8, last + 1).clamp_min(0).expand(*spec.position_shape(1, 9)).contiguous()
            cases.append(Case(f"length rule switch, up to {last}", q, k, pos))
    grid = None
    if axes == 3:
        types = torch.tensor([[0] * 5 + [1] * 24 + [0] * 3 + [2] * 32 + [0] * 4])
        grid = ("image+video grid (t,h,w differ)",
                mrope_position_ids(types, torch.tensor([[1, 8, 12]]), torch.tensor([[2, 8, 8]]), spatial_merge_size=2))
    elif axes == 2 and spec.scaling_dict.get("column_first"):  # Llama 4 vision: patches from 1, a class token
        grid = ("patch grid 12x20 + class token", patch_grid_positions(12, 20, offset=1, cls_token="last"))
    elif axes == 2:
        grid = ("patch grid 12x20", patch_grid_positions(12, 20))
    if grid is not None and int(grid[1].max()) < (table_length or 2**24):  # a table shorter than the grid: random positions cover it
        q, k = qk(1, grid[1].shape[-1])
        cases.append(Case(grid[0], q, k, grid[1]))
    high = min(10**6, table_length or 10**6)
    if tdtype != torch.float32:
        q, k = qk(2, 19, magnitude=512.0)
        cases.append(Case("large magnitudes x512", q, k, rand_pos(2, 19, 0, high)))
    return cases


def _outside_cases(spec: RopeSpec, length: int, qk, rand_pos) -> list[Case]:
    """Positions outside ``[0, length)``, one kind per case (a runtime refusing one kind must not
    hide another): past the end (the first row past it up to int64's largest), negative within
    the table's length (-1 alone would land on the guard row that Gather wraps it to; -2 and
    -length wrap onto real rows), negative beyond it, and for several axes, one axis out while
    the rest are in."""
    axes = spec.num_axes

    def case(name, values):
        values = torch.tensor(values, dtype=torch.int64)
        if values.dim() == 1 and axes > 1:  # the same position on every axis
            values = values.expand(axes, -1)
        q, k = qk(1, values.shape[-1])
        pos = values.reshape(spec.position_shape(1, values.shape[-1])).contiguous()
        return Case(f"{name} (NaN or refused)", q, k, pos, past_table=True)

    # int32's largest, and int64 values whose low 32 bits are a row (OpenVINO's CPU plugin
    # computes int64 as int32: a guard compared in int64 let 2^32 + 1 read row 1).
    past = [length, length + 1, int(rand_pos(1, 1, length + 2, length + 1000).flatten()[0]), 2**31 - 1, 2**32 + 1,
            2**63 - 1]
    # Negative positions Gather would wrap onto real rows apart from the ones it refuses: a
    # refusal of -length - 1 must not hide a silent wrap of -2.
    cases = [case("past the table", past), case("negative positions", [-1, -2, -length]),
             case("far negative positions", [-length - 1, -2**32 + 1, -2**63])]
    if axes > 1:
        inside = rand_pos(1, axes, 0, length)[:, 0, :]  # [axis, token]
        for a in range(axes):
            inside[a, a] = length + a  # token a: axis a past the table, the others inside
        cases.append(case("past the table on one axis", inside.tolist()))
    return cases


def fit_case(case: Case, batch: int | None, seq: int | None) -> Case:
    """``case`` cut or tiled to a graph's fixed batch and sequence sizes (None: left as it is):
    rows and tokens repeat in order, so the positions a case exercises stay in it where they fit."""
    pos = case.position_ids
    start = 0
    if seq is not None and seq < pos.shape[-1] and pos.dim() == 3:
        # A cut multi-axis case keeps a window where its axes differ (a cut to the text before
        # an image would test equal-axis positions under the grid case's name).
        differs = (pos != pos[:1]).any(dim=0).any(dim=0).nonzero().flatten()
        start = min(int(differs[0]), pos.shape[-1] - seq) if len(differs) else 0

    def fit(t: torch.Tensor, axis: int, size: int | None, offset: int = 0) -> torch.Tensor:
        if size is None or t.shape[axis] == size:
            return t
        reps = [1] * t.dim()
        reps[axis] = -(-(size + offset) // t.shape[axis])
        return t.repeat(*reps).narrow(axis, offset, size)

    q, k = case.q, case.k
    q, k = (fit(fit(t, 0, batch), 2, seq, start) for t in (q, k))
    pos = fit(fit(pos, pos.dim() - 2, batch), pos.dim() - 1, seq, start)
    name = case.name if q.shape == case.q.shape else f"{case.name} (as b{q.shape[0]} s{q.shape[2]})"
    return Case(name, q.contiguous(), k.contiguous(), pos.contiguous(), case.past_table)


def fit_cases(case: Case, batch: int | None, seq: int | None) -> list[Case]:
    """`fit_case`, except that a ``past_table`` case a fixed shape would cut is split into as many
    cases as it takes to keep every one of its tokens (each is a position a runtime could read
    wrongly; a cut would drop them)."""
    tokens = case.q.shape[0] * case.q.shape[2]
    if not case.past_table or seq is None or tokens <= seq:
        return [fit_case(case, batch, seq)]
    pos = case.position_ids.reshape(*case.position_ids.shape[:-2], tokens)
    q, k = (t.transpose(1, 2).reshape(tokens, t.shape[1], t.shape[3]) for t in (case.q, case.k))
    pieces = range(0, tokens, seq)
    out = []
    for n, i in enumerate(pieces, 1):
        piece = Case(f"{case.name} [{n}/{len(pieces)}]", *(t[i:i + seq].transpose(0, 1).unsqueeze(0) for t in (q, k)),
                     pos[..., i:i + seq].unsqueeze(-2), past_table=True)
        out.append(fit_case(piece, batch, seq))
    return out


def fixed_shape(info) -> tuple:
    """(batch, sequence) a graph's inputs fix (None where dynamic; ``info`` from `read_graph`).
    Raises InputError for a size of 0 or one dimension fixed to different sizes."""
    from .._util import InputError

    seen = {"batch": set(), "sequence": set()}
    for name, (b, s) in (("q", (0, 2)), ("k", (0, 2)), ("position_ids", (-2, -1))):
        dims = info.inputs[name].dims
        for label, axis in (("batch", b), ("sequence", s)):
            value = dims[axis] if len(dims) >= 2 else None
            if isinstance(value, int) and value <= 0:
                raise InputError(f"{info.path}: input {name} fixes the {label} dimension to {value}: nothing to run")
            if isinstance(value, int):
                seen[label].add(value)
    for label, values in seen.items():
        if len(values) > 1:
            raise InputError(f"{info.path}: its inputs fix the {label} dimension to different sizes {sorted(values)}")
    return tuple(next(iter(v), None) for v in seen.values())
