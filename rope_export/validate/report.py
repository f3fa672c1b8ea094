"""The validation report: one `CaseResult` per runner x case, a verdict, a table and JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from .._util import printable

__all__ = ["CaseResult", "ValidationReport"]


@dataclass
class CaseResult:
    provider: str
    case: str
    ran_on: str | None
    status: str  # "pass" | "fail" | "unavailable" | "error"
    max_abs_err: float = math.nan
    max_rel_err: float = math.nan
    cosine: float = math.nan
    ref_err: float = math.nan
    ref_bound: float = math.nan
    detail: str = ""


@dataclass
class ValidationReport:
    path: str
    spec: dict
    dtype: str
    form: str
    seed: int
    tolerance: dict
    results: list[CaseResult] = field(default_factory=list)
    allow_missing: bool = False
    graph_spec: dict | None = None  # the graph's own spec, where the one checked against was given instead
    structure: dict = field(default_factory=lambda: {"status": "not applicable", "detail": "not checked"})
    require_structure: bool = False  # "not applicable" structure FAILS too
    fixed_shape: dict | None = None  # the batch / sequence sizes the graph fixes, every case fitted to them

    @property
    def passed(self) -> bool:
        """True when no constant of the graph differs from the spec's (`structure`; with
        require_structure, every constant was proven), every requested provider ran every case
        and passed (or, with allow_missing, was unavailable), and at least one provider ran."""
        ran = [r for r in self.results if r.status != "unavailable"]
        status = self.structure.get("status")
        if not ran or status == "fail" or (self.require_structure and status != "pass"):
            return False
        bad = [r for r in self.results if r.status in ("fail", "error") or (r.status == "unavailable" and not self.allow_missing)]
        return not bad

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["passed"] = self.passed
        return out

    def to_json(self) -> str:
        """Strict JSON: a number no case measured is null, never NaN."""
        return json.dumps(_no_nan(self.to_dict()), indent=2, allow_nan=False)

    def table(self) -> str:
        """Compact provider x case x error x verdict table. "vs f64" is the largest distance
        from the float64 reference (exact maths), checked against its own bound."""
        rows = [("provider", "ran on", "case", "max abs", "max rel", "cosine", "vs f64", "verdict")]
        for r in self.results:
            fmt = lambda v: "-" if math.isnan(v) else f"{v:.2e}"  # noqa: E731
            cos = "-" if math.isnan(r.cosine) else f"{r.cosine:.9f}"
            rows.append((printable(r.provider), printable(r.ran_on or "-"), r.case, fmt(r.max_abs_err), fmt(r.max_rel_err),
                         cos, fmt(r.ref_err), r.status.upper() + (f" ({printable(r.detail)})" if r.detail and r.status != "pass" else "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
        verdict = "PASSED" if self.passed else "FAILED"
        skipped = sorted({r.provider for r in self.results if r.status == "unavailable"})
        head = [_structure_line(self.structure)]
        if self.graph_spec is not None:
            head.append(f"spec: the one given ({_spec_text(self.spec)}), not the graph's own ({_spec_text(self.graph_spec)})")
        if self.fixed_shape:
            fixed = ", ".join(f"{k} {v}" for k, v in self.fixed_shape.items() if v is not None)
            head.append(f"shape: the graph fixes {fixed}; every case is cut or tiled to it")
        tail = f"{verdict}: {printable(os.path.basename(self.path))} ({self.form}, {self.dtype}, seed {self.seed})"
        if not any(r.status != "unavailable" for r in self.results):
            tail += "; no provider ran"
        if skipped:
            tail += f"; unavailable: {', '.join(skipped)}" + (" (allowed)" if self.allow_missing else "")
        if self.require_structure and self.structure.get("status") != "pass":
            tail += "; constants not proven (required)"
        return "\n".join([printable(h) for h in head] + lines + [tail])


def _no_nan(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def _structure_line(structure: dict) -> str:
    from .structure import StructureResult

    return StructureResult(**structure).line()


def _spec_text(spec: dict) -> str:
    from ..spec import RopeSpec

    try:
        return RopeSpec.from_dict(spec).describe()
    except ValueError:
        return "unreadable"
