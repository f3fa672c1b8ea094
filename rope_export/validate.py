"""Parity validator: run an exported rotary graph on onnxruntime execution providers and
prove it computes what the torch module computes.

Layout after Polygraphy: one *runner* per backend (torch module, float64 reference,
onnxruntime with one execution provider), one *comparator*, one *report*.

Example:
    >>> import rope_export as rx
    >>> report = rx.validate("rope.onnx", providers=("cpu",))        # doctest: +SKIP
    >>> report.passed, report.table()                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .export import DTYPES, METADATA_SPEC_KEY
from .modules import RotaryEmbedding
from .positions import mrope_position_ids, patch_grid_positions
from .reference import inv_freq_for, rotate
from .spec import RopeSpec

__all__ = ["validate", "ValidationReport", "CaseResult", "ValidationInputError", "TOLERANCES", "PROVIDERS"]

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

# Parity with the torch module, per element: |ort - torch| <= atol + rtol * scale, where
# scale is the largest |value| of that token's head vector (a rotation keeps pair norms, so
# this is the size the rounding acts on). float32: both sides compute the same float32
# angle; sin/cos implementations differ by a few ulps -> 1e-5 (~80 ulps) leaves room for
# that and nothing for a wrong frequency (one ulp of inv_freq moves outputs ~1e-4 at 100k).
# float16 / bfloat16: the standard op rotates with cos/sin rounded to the activation dtype
# and rounds the result once: 4 units of the dtype's epsilon.
TOLERANCES = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float16": {"rtol": 4 * 2.0**-10, "atol": 2.0**-14},
    "bfloat16": {"rtol": 4 * 2.0**-7, "atol": 2.0**-14},
}


class ValidationInputError(ValueError):
    """The file, spec or inputs cannot be validated (exit code 2 in the CLI)."""


@dataclass
class Case:
    name: str
    q: torch.Tensor
    k: torch.Tensor
    position_ids: torch.Tensor
    expect_error: bool = False  # positions past a table-form graph's table: the runtime must refuse


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

    @property
    def passed(self) -> bool:
        """True when every requested provider ran every case and passed (or, with
        allow_missing, was unavailable) and at least one provider ran."""
        ran = [r for r in self.results if r.status != "unavailable"]
        if not ran:
            return False
        bad = [r for r in self.results if r.status in ("fail", "error") or (r.status == "unavailable" and not self.allow_missing)]
        return not bad

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["passed"] = self.passed
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)

    def table(self) -> str:
        """Compact provider x case x error x verdict table."""
        rows = [("provider", "ran on", "case", "max abs", "max rel", "cosine", "vs f64", "verdict")]
        for r in self.results:
            fmt = lambda v: "-" if math.isnan(v) else f"{v:.2e}"  # noqa: E731
            cos = "-" if math.isnan(r.cosine) else f"{r.cosine:.9f}"
            rows.append((r.provider, r.ran_on or "-", r.case, fmt(r.max_abs_err), fmt(r.max_rel_err), cos, fmt(r.ref_err),
                         r.status.upper() + (f" ({r.detail})" if r.detail and r.status != "pass" else "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
        verdict = "PASSED" if self.passed else "FAILED"
        skipped = sorted({r.provider for r in self.results if r.status == "unavailable"})
        tail = f"{verdict}: {os.path.basename(self.path)} ({self.form}, {self.dtype}, seed {self.seed})"
        if skipped:
            tail += f"; unavailable: {', '.join(skipped)}" + (" (allowed)" if self.allow_missing else "")
        return "\n".join(lines + [tail])


# ------------------------------------------------------------------------ runners
class TorchRunner:
    """The parity target: `RotaryEmbedding` on CPU, in the graph's activation dtype."""

    name = "torch"

    def __init__(self, spec: RopeSpec):
        self.module = RotaryEmbedding(spec)

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            q, k = self.module(case.q, case.k, case.position_ids)
        return q.float().numpy(), k.float().numpy()


class ReferenceRunner:
    """Exact maths in float64 (`rope_export.reference`)."""

    name = "float64"

    def __init__(self, spec: RopeSpec):
        self.spec = spec

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        return rotate(case.q, case.position_ids, self.spec).numpy(), rotate(case.k, case.position_ids, self.spec).numpy()


class OnnxRuntimeRunner:
    """One onnxruntime session pinned to one execution provider; `ran_on` is what the
    session reports it actually uses (``get_providers()``), never what was asked."""

    def __init__(self, path: str, provider: str):
        import onnxruntime as ort

        self.name = provider
        self.requested = PROVIDERS.get(provider, provider)
        self.session = None
        self.ran_on: str | None = None
        self.unavailable = ""
        if self.requested not in ort.get_available_providers():
            self.unavailable = f"{self.requested} is not in this onnxruntime build ({ort.__version__}: {', '.join(ort.get_available_providers())})"
            return
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, sess_options=options, providers=[self.requested])
        self.ran_on = session.get_providers()[0]
        if self.ran_on != self.requested:
            self.unavailable = f"asked for {self.requested}, onnxruntime fell back to {self.ran_on}"
            return
        self.session = session

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"q": _to_numpy(case.q), "k": _to_numpy(case.k), "position_ids": case.position_ids.numpy()}
        q, k = self.session.run(["q_rot", "k_rot"], feeds)
        return _from_numpy(q), _from_numpy(k)


class TensorRTEngineRunner:
    """A serialized TensorRT engine (``rope-export build-engine``) run on CUDA tensors.
    Written against TensorRT 10's documented API; not run on our machines (no TensorRT)."""

    def __init__(self, plan_path: str):
        self.name = "tensorrt-engine"
        self.ran_on: str | None = None
        self.unavailable = ""
        try:
            import tensorrt as trt
        except ImportError as exc:
            self.unavailable = f"TensorRT is not importable ({exc})"
            return
        if not torch.cuda.is_available():
            self.unavailable = "a TensorRT engine needs a CUDA device"
            return
        if not os.path.isfile(plan_path):
            raise ValidationInputError(f"no such engine file: {plan_path}")
        with open(plan_path, "rb") as fh:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise ValidationInputError(f"{plan_path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        self.ran_on = f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"

    def run(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"q": case.q.cuda(), "k": case.k.cuda(), "position_ids": case.position_ids.cuda().contiguous()}
        outs = {"q_rot": torch.empty_like(feeds["q"]), "k_rot": torch.empty_like(feeds["k"])}
        for name, t in feeds.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in outs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outs["q_rot"].float().cpu().numpy(), outs["k_rot"].float().cpu().numpy()


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # onnxruntime takes bfloat16 numpy arrays through ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _from_numpy(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


# ---------------------------------------------------------------------- comparator
def compare(got: np.ndarray, want: np.ndarray, tol: dict) -> dict:
    """Errors of ``got`` against ``want`` (both float arrays [B, H, S, D])."""
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = np.abs(want).max(axis=-1, keepdims=True).astype(np.float64)
    within = err <= tol["atol"] + tol["rtol"] * scale
    a, b = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return {
        "max_abs_err": float(err.max()) if err.size else 0.0,
        "max_rel_err": float((err / np.maximum(scale, tol["atol"])).max()) if err.size else 0.0,
        "cosine": float(a @ b / denom) if denom > 0 else 1.0,
        "ok": bool(within.all()) and bool(np.isfinite(got).all()),
    }


def case_tolerance(spec: RopeSpec, position_ids: torch.Tensor, tol: dict) -> dict:
    """The parity tolerance for one set of positions. Dynamic NTK builds its table in the
    graph with float32 Pow, which runtimes do not round identically (a few ulps), so the
    angle may move by |angle| * 4 * 2^-24 on top of the dtype's tolerance."""
    rule = spec.length_rule
    if rule is None or rule.kind != "dynamic" or int(position_ids.max()) < rule.max_position_embeddings:
        return dict(tol)  # the static table applies: no Pow in play
    max_angle = float(position_ids.abs().max()) * max(inv_freq_for(spec, int(position_ids.max())), default=0.0)
    return {**tol, "rtol": tol["rtol"] + 4 * 2.0**-24 * max_angle}


def reference_bound(spec: RopeSpec, case: Case, dtype: str) -> float:
    """Allowed distance from exact maths: float32 angles drift by |angle| * 2^-24, plus
    the activation dtype's own rounding of the result."""
    freqs = inv_freq_for(spec, int(case.position_ids.max()))
    max_angle = float(case.position_ids.abs().max()) * max(freqs, default=0.0)
    norm = float(max(case.q.float().abs().max(), case.k.float().abs().max())) * math.sqrt(2)
    eps = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}[dtype]
    return 2 * spec.attention_scaling * norm * (4 * max_angle * 2.0**-24 + 8 * 2.0**-24 + 4 * eps)


# ---------------------------------------------------------------------------- cases
def make_cases(spec: RopeSpec, dtype: str, num_q_heads: int, num_kv_heads: int, seed: int,
               table_length: int | None = None) -> list[Case]:
    """Bounded integer positions only. Multi-axis specs get real grids where t, h, w differ,
    and per-axis random positions; text-only (equal-axis) positions are never the only case.
    A table-form graph (``table_length``) is exercised up to its last row, and positions past
    it must be refused."""
    g = torch.Generator().manual_seed(seed)
    tdtype = DTYPES[dtype]
    max_pos = spec.max_position_embeddings or 4096
    axes = spec.num_axes

    def qk(batch, seq, magnitude=1.0):
        q = (torch.randn(batch, num_q_heads, seq, spec.head_dim, generator=g) * magnitude).to(tdtype)
        k = (torch.randn(batch, num_kv_heads, seq, spec.head_dim, generator=g) * magnitude).to(tdtype)
        return q, k

    def rand_pos(batch, seq, low, high):
        shape = (batch, seq) if axes == 1 else (axes, batch, seq)
        return torch.randint(int(low), int(high), shape, generator=g, dtype=torch.int64)

    cases = []
    q, k = qk(2, 7)
    cases.append(Case("zero", q, k, torch.zeros((2, 7) if axes == 1 else (axes, 2, 7), dtype=torch.int64)))
    q, k = qk(1, 64)
    cases.append(Case("small b1 s64", q, k, rand_pos(1, 64, 0, 64)))
    q, k = qk(3, 1)
    cases.append(Case("decode b3 s1", q, k, rand_pos(3, 1, 0, min(max_pos, table_length or max_pos))))
    if table_length is not None:
        q, k = qk(2, 33)
        cases.append(Case(f"table end {table_length}", q, k, rand_pos(2, 33, max(0, table_length - 64), table_length)))
        q, k = qk(1, 5)
        cases.append(Case("past the table (must be refused)", q, k, rand_pos(1, 5, table_length, table_length + 1000),
                          expect_error=True))
        return cases
    q, k = qk(2, 33)
    cases.append(Case(f"near max {max_pos}", q, k, rand_pos(2, 33, max(0, max_pos - 64), max_pos + 64)))
    q, k = qk(2, 17)
    cases.append(Case("far beyond (<=1e6)", q, k, rand_pos(2, 17, 8 * max_pos, min(2**24, 8 * max_pos + 10**6))))
    if axes == 3:
        types = torch.tensor([[0] * 5 + [1] * 24 + [0] * 3 + [2] * 32 + [0] * 4])
        pos = mrope_position_ids(types, torch.tensor([[1, 8, 12]]), torch.tensor([[2, 8, 8]]), spatial_merge_size=2)
        q, k = qk(1, pos.shape[-1])
        cases.append(Case("image+video grid (t,h,w differ)", q, k, pos))
    elif axes == 2:
        pos = patch_grid_positions(12, 20, offset=1, cls_token="last")
        q, k = qk(1, pos.shape[-1])
        cases.append(Case("patch grid 12x20 + cls", q, k, pos))
    if tdtype != torch.float32:
        q, k = qk(2, 19, magnitude=512.0)
        cases.append(Case("large magnitudes x512", q, k, rand_pos(2, 19, 0, 10**6)))
    return cases


# ------------------------------------------------------------------------ validate
def read_model(path: str | os.PathLike, spec: RopeSpec | None):
    """(spec, metadata, input shapes) of an exported graph, or a ValidationInputError."""
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValidationInputError(f"no such file: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any decode failure means "not an ONNX model"
        raise ValidationInputError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ValidationInputError(f"{path} is not an ONNX model with a graph")
    meta = {p.key: p.value for p in model.metadata_props}
    if spec is None:
        if METADATA_SPEC_KEY not in meta:
            raise ValidationInputError(f"{path} has no '{METADATA_SPEC_KEY}' metadata: pass the spec (--preset / --hf-config)")
        spec = RopeSpec.from_dict(meta[METADATA_SPEC_KEY])
    inputs = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input}
    if "rope_export.table_length" not in meta:
        # A table-form graph without our metadata: the table's rows bound the positions.
        tables = {t.name: t.dims[0] for t in model.graph.initializer if len(t.dims) == 2}
        for node in model.graph.node:
            if node.op_type == "RotaryEmbedding" and node.domain in ("", "ai.onnx") and len(node.input) == 4 and node.input[3]:
                if node.input[1] in tables:
                    meta["rope_export.table_length"] = str(tables[node.input[1]])
    outputs = {o.name for o in model.graph.output}
    if set(inputs) != {"q", "k", "position_ids"} or outputs != {"q_rot", "k_rot"}:
        raise ValidationInputError(
            f"{path}: expected inputs q, k, position_ids and outputs q_rot, k_rot; got inputs {sorted(inputs)} "
            f"and outputs {sorted(outputs)}"
        )
    return spec, meta, inputs


def validate(
    onnx_path: str | os.PathLike,
    spec: RopeSpec | None = None,
    *,
    providers: Sequence[str] = ("cuda", "cpu"),
    seed: int | None = None,
    allow_missing: bool = False,
    tolerances: dict | None = None,
    cases: Iterable[Case] | None = None,
    progress: Callable[[str], None] | None = None,
    engine: str | os.PathLike | None = None,
) -> ValidationReport:
    """Run ``onnx_path`` on each requested onnxruntime provider and compare with torch.

    Args:
        onnx_path: a graph written by `export_onnx` (or any graph with inputs q, k,
            position_ids and outputs q_rot, k_rot).
        spec: defaults to the ``rope_export.spec`` metadata in the file.
        providers: "cpu", "cuda", "tensorrt", ... (or full onnxruntime provider names).
        seed: fixed seed for the random inputs; default: a fresh one (reported).
        allow_missing: a provider that is not available is reported "unavailable" and does
            not fail the run (at least one provider must still run).
        tolerances: overrides ``{"rtol": .., "atol": ..}`` for the graph's dtype.
        cases: your own `Case` list instead of the built-in ones.
        progress: called with a short message before each provider x case.
        engine: also run this TensorRT engine (built from ``onnx_path``) as provider
            "tensorrt-engine"; unavailable without TensorRT and CUDA.
    Returns:
        a `ValidationReport`; ``report.passed`` is the verdict.
    Raises:
        ValidationInputError: missing file, not ONNX, no spec, unexpected input names.
    """
    path = os.fspath(onnx_path)
    spec, meta, inputs = read_model(path, spec)
    dtype = meta.get("rope_export.dtype", "float32")
    if dtype not in DTYPES:
        raise ValidationInputError(f"unknown rope_export.dtype metadata {dtype!r}")
    if not providers:
        raise ValidationInputError("providers: name at least one execution provider")
    heads_q, heads_k = (inputs["q"][1] or 4), (inputs["k"][1] or 2)
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    tol = {**TOLERANCES[dtype], **(tolerances or {})}
    report = ValidationReport(path=path, spec=spec.to_dict(), dtype=dtype, form=meta.get("rope_export.form", "unknown"),
                              seed=seed, tolerance=tol, allow_missing=allow_missing)
    table_length = int(meta["rope_export.table_length"]) if "rope_export.table_length" in meta else None
    case_list = list(cases) if cases is not None else make_cases(spec, dtype, heads_q, heads_k, seed, table_length)
    torch_runner, ref_runner = TorchRunner(spec), ReferenceRunner(spec)
    expected = {c.name: torch_runner.run(c) for c in case_list if not c.expect_error}
    exact = {c.name: ref_runner.run(c) for c in case_list if not c.expect_error}
    factories = [(p, lambda p=p: OnnxRuntimeRunner(path, p)) for p in providers]
    if engine is not None:
        factories.append(("tensorrt-engine", lambda: TensorRTEngineRunner(os.fspath(engine))))
    for provider, factory in factories:
        try:
            runner = factory()
        except ValidationInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a session that cannot load is a failed provider
            report.results.append(CaseResult(provider, "(session)", None, "error", detail=f"{type(exc).__name__}: {exc}"))
            continue
        if runner.unavailable:
            report.results.append(CaseResult(provider, "(all)", runner.ran_on, "unavailable", detail=runner.unavailable))
            continue
        for i, case in enumerate(case_list):
            if progress:
                progress(f"[{provider} {i + 1}/{len(case_list)}] {case.name}")
            try:
                got = runner.run(case)
            except Exception as exc:  # noqa: BLE001
                if case.expect_error:
                    report.results.append(CaseResult(provider, case.name, runner.ran_on, "pass", detail="refused"))
                else:
                    report.results.append(CaseResult(provider, case.name, runner.ran_on, "error", detail=f"{type(exc).__name__}: {exc}"))
                continue
            if case.expect_error:
                report.results.append(CaseResult(provider, case.name, runner.ran_on, "fail",
                                                 detail="positions past the table were accepted"))
                continue
            tol_case = case_tolerance(spec, case.position_ids, tol)
            stats = [compare(g, w, tol_case) for g, w in zip(got, expected[case.name])]
            ref_err = max(float(np.abs(g.astype(np.float64) - e).max()) for g, e in zip(got, exact[case.name]))
            bound = reference_bound(spec, case, dtype)
            ok = all(s["ok"] for s in stats) and ref_err <= bound
            detail = "" if ok else ("outside the parity tolerance" if not all(s["ok"] for s in stats) else "too far from float64 reference")
            report.results.append(CaseResult(
                provider, case.name, runner.ran_on, "pass" if ok else "fail",
                max_abs_err=max(s["max_abs_err"] for s in stats), max_rel_err=max(s["max_rel_err"] for s in stats),
                cosine=min(s["cosine"] for s in stats), ref_err=ref_err, ref_bound=bound, detail=detail,
            ))
    return report


def stderr_progress(message: str) -> None:
    """A one-line progress indicator on a terminal, plain lines otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + message)
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()
