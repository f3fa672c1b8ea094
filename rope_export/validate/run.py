"""`validate`: run an exported rotary graph on each requested runner and compare it with the
torch module (parity) and with float64 maths (the reference bound).

    >>> import rope_export as rx
    >>> report = rx.validate("rope.onnx", providers=("cpu",))        # doctest: +SKIP
    >>> report.passed, report.table()                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Callable, Iterable, Sequence

import numpy as np

from .._util import DTYPE_NAMES, InputError
from ..export.metadata import read_graph
from ..export.graph import MAX_GRAPH_HEADS
from ..spec import MAX_HEAD_DIM, RopeSpec
from .cases import Case, fit_cases, fixed_shape, make_cases
from .compare import TOLERANCES, case_tolerance, compare, max_pair_norm_bound, reference_error_bound, unit_roundoff
from .report import CaseResult, ValidationReport
from .structure import check_structure
from .runners import (DEFAULT_PROVIDERS, PROVIDERS, OnnxRuntimeRunner, OpenVinoRunner, ReferenceRunner, TensorRTEngineRunner,
                      TorchRunner, numpy_dtype, openvino_device)

__all__ = ["validate", "reference_bound", "MAX_HEAD_DIM", "MAX_HEADS", "DEFAULT_CASE_TIMEOUT"]

# The bounds export keeps to (largest in transformers 5.25: head_dim 512, 128 heads).
MAX_HEADS = MAX_GRAPH_HEADS
# A case is a few tensors of a few KB: milliseconds on any runtime, seconds on a GPU provider's
# first run; a graph still running after this has a loop or a size no rotary has.
DEFAULT_CASE_TIMEOUT = 60.0


def reference_bound(spec: RopeSpec, case: Case, dtype: str) -> float:
    """Allowed distance of a graph's output from exact maths: float32 angles (4 ulps of the
    angle, for runtimes' Pow and sin/cos) plus the activation dtype's rounding."""
    return reference_error_bound(spec, case.position_ids, max_pair_norm_bound(case.q, case.k), angle_ulps=4.0,
                                 rounding=4 * unit_roundoff(dtype))


def validate(
    onnx_path: str | os.PathLike,
    spec: RopeSpec | None = None,
    *,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    seed: int | None = None,
    allow_missing: bool = False,
    tolerances: dict | None = None,
    cases: Iterable[Case] | None = None,
    progress: Callable[[str], None] | None = None,
    engine: str | os.PathLike | None = None,
    case_timeout: float | None = DEFAULT_CASE_TIMEOUT,
    require_structure: bool = False,
) -> ValidationReport:
    """Run ``onnx_path`` on each requested onnxruntime provider and compare with torch.

    Args:
        onnx_path: a graph written by `export_onnx` (or any graph with inputs q, k,
            position_ids and outputs q_rot, k_rot).
        spec: defaults to the ``rope_export.spec`` metadata in the file.
        providers: "cpu", "cuda", "tensorrt", ... (or full onnxruntime provider names);
            default ``("cpu",)``.
        seed: fixed seed for the random inputs; default: a fresh one (reported).
        allow_missing: a provider that is not available is reported "unavailable" and does
            not fail the run (at least one provider must still run).
        tolerances: overrides ``{"rtol": .., "atol": ..}`` for the graph's dtype.
        cases: your own `Case` list instead of the built-in ones.
        progress: called with a short message before each provider x case.
        engine: also run this TensorRT engine (built from ``onnx_path``) as provider
            "tensorrt-engine"; unavailable without TensorRT and CUDA.
        case_timeout: seconds one onnxruntime case may run (default `DEFAULT_CASE_TIMEOUT`);
            a case past it is stopped and FAILS. None: no limit. Loading a session is not limited.
        require_structure: a graph whose constants cannot be rebuilt from a spec (another
            exporter's structure, tables not found) FAILS instead of passing on numbers alone.
    Returns:
        a `ValidationReport`; ``report.passed`` is the verdict. Before any number runs, the
        graph's constants and attributes are held bit for bit against what the spec implies
        (``report.structure``, `structure.check_structure`); a difference FAILS.
    Raises:
        ValidationInputError: missing file, not ONNX, no spec, unexpected input names, a spec
            whose head_dim or axes do not fit the graph's inputs, unknown provider names,
            tolerances that are not finite and >= 0.
    """
    path = os.fspath(onnx_path)
    providers = _provider_names(providers)
    if case_timeout is not None and (isinstance(case_timeout, bool) or not isinstance(case_timeout, (int, float, np.integer, np.floating))
                                     or not 0 < case_timeout < 1e6):
        raise InputError(f"case_timeout must be a number of seconds in (0, 1e6) or None, got {case_timeout!r}")
    case_timeout = None if case_timeout is None else float(case_timeout)
    info = read_graph(path)
    if "rope_export.serving" in info.metadata:
        raise InputError(f"{path} is a decoder with its KV cache (export-hf --with-past): validate takes rotary graphs "
                         "(q, k, position_ids); a decoder is proven by greedy generation: rope-export export-hf "
                         "--with-past --generate N")
    overridden = spec is not None and info.spec is not None and spec != info.spec
    if spec is None:
        if info.spec is None:
            raise InputError(f"{path} has no 'rope_export.spec' metadata: pass the spec (--preset / --hf-config)")
        spec = info.spec
    if set(info.inputs) != {"q", "k", "position_ids"} or set(info.outputs) != {"q_rot", "k_rot"}:
        raise InputError(f"{path}: expected inputs q, k, position_ids and outputs q_rot, k_rot; got inputs "
                         f"{sorted(info.inputs)} and outputs {sorted(info.outputs)}")
    if info.dtype not in DTYPE_NAMES:
        raise InputError(f"unknown rope_export.dtype metadata {info.dtype!r}")
    _check_fits(path, info, spec)
    heads_q, heads_k = (info.inputs[n].dims[1] for n in ("q", "k"))
    heads_q, heads_k = (heads_q if isinstance(heads_q, int) else 4), (heads_k if isinstance(heads_k, int) else 2)
    # Bound what the cases allocate before allocating it: a crafted file must not cost GBs.
    if spec.head_dim > MAX_HEAD_DIM or max(heads_q, heads_k) > MAX_HEADS:
        raise InputError(f"{path}: head_dim {spec.head_dim} and heads {heads_q}/{heads_k} exceed what validate runs "
                         f"(head_dim <= {MAX_HEAD_DIM}, heads <= {MAX_HEADS})")
    seed = _seed(seed)
    tol = {**TOLERANCES[info.dtype], **_tolerances(tolerances)}
    report = ValidationReport(path=path, spec=spec.to_dict(), dtype=info.dtype, form=info.form, seed=seed, tolerance=tol,
                              allow_missing=allow_missing, require_structure=bool(require_structure),
                              graph_spec=info.spec.to_dict() if overridden else None)
    if progress:
        progress("checking every constant against the spec")
    # the graph's own spec (None) is also held to its own scaling fields; a given one is trusted
    structure = check_structure(_load_for_structure(path), info, None if spec == info.spec else spec)
    report.structure = dataclasses.asdict(structure)
    case_list = list(cases) if cases is not None else make_cases(spec, info.dtype, heads_q, heads_k, seed, info.table_length)
    fixed = fixed_shape(info)
    if fixed != (None, None):  # a graph tool fixed its input shapes: every case is cut or tiled to them
        case_list = [piece for c in case_list for piece in fit_cases(c, *fixed)]
        report.fixed_shape = {"batch": fixed[0], "sequence": fixed[1]}
    torch_runner, ref_runner = TorchRunner(spec), ReferenceRunner(spec)
    expected = {c.name: torch_runner.run(c) for c in case_list if not c.past_table}
    exact = {c.name: ref_runner.run(c) for c in case_list if not c.past_table}
    # Loading a session is not time-limited: onnxruntime folds constants while it loads, with no
    # way to stop it, and a thread left running inside it aborts the process at exit.
    factories = [(p, lambda p=p: OpenVinoRunner(path, openvino_device(p)) if openvino_device(p)
                  else OnnxRuntimeRunner(path, p, timeout=case_timeout)) for p in providers]
    if engine is not None:
        factories.append(("tensorrt-engine", lambda: TensorRTEngineRunner(os.fspath(engine), plugin=info.form == "plugin")))
    for provider, factory in factories:
        try:
            runner = factory()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a session that cannot load is a failed provider
            detail = f"{type(exc).__name__}: {exc}"
            if info.dtype == "bfloat16" and PROVIDERS.get(provider, provider) == PROVIDERS["cpu"]:
                detail = "onnxruntime's CPU provider has no bfloat16 kernels for these ops; validate on CUDA"
            report.results.append(CaseResult(provider, "(session)", None, "error", detail=detail))
            continue
        if runner.unavailable:
            report.results.append(CaseResult(provider, "(all)", runner.ran_on, "unavailable", detail=runner.unavailable))
            continue
        stopped = ""
        for i, case in enumerate(case_list):
            if stopped:  # a graph that ran past the limit once would make every case wait it out
                report.results.append(CaseResult(provider, case.name, runner.ran_on, "fail", detail=f"not run: {stopped}"))
                continue
            if progress:
                progress(f"[{provider} {i + 1}/{len(case_list)}] {case.name}")
            result = _check_case(runner, case, spec, info.dtype, tol, expected.get(case.name), exact.get(case.name))
            report.results.append(result)
            if result.detail.startswith("ran past"):
                stopped = f"the case before {result.detail}"
    return report


def _load_for_structure(path: str):
    """The model with its external data loaded, when it has any and it is no larger than the
    structural check compares (else left unloaded: the check says so)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    from .structure import MAX_REBUILD_BYTES

    model = onnx.load(path, load_external_data=False)
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    if external:
        base = os.path.dirname(os.path.abspath(path))
        files = {dict((e.key, e.value) for e in t.external_data).get("location", "") for t in external}
        try:
            size = sum(os.path.getsize(os.path.join(base, f)) for f in files)
            if size <= MAX_REBUILD_BYTES:
                load_external_data_for_model(model, base)
        except (OSError, ValueError, RuntimeError):
            pass  # unreadable or unsafe locations: the comparison reports them as not checked
    return model


def _provider_names(providers) -> list[str]:
    """A list of provider names, each once; a string is one name or a comma-separated list
    ("cuda,cpu"). A name is a `PROVIDERS` key or a full onnxruntime name (``...ExecutionProvider``):
    a typo must not read as a provider that is merely unavailable."""
    if isinstance(providers, str):
        providers = providers.split(",")
    if isinstance(providers, (bytes, bytearray)) or not all(isinstance(p, str) for p in providers):
        raise InputError(f"providers must be provider names (strings), got {providers!r}")
    names = [p.strip() for p in providers]
    if not names or not all(names):
        raise InputError(f"providers: name at least one execution provider, got {providers!r}")
    unknown = [n for n in names if n not in PROVIDERS and not n.endswith("ExecutionProvider") and not openvino_device(n)]
    if any(openvino_device(n) == "" for n in unknown):
        raise InputError(f"unknown OpenVINO device in {', '.join(repr(n) for n in unknown if openvino_device(n) == '')}: "
                         "use openvino (its CPU), openvino:gpu, openvino:gpu.1, openvino:npu")
    if unknown:
        import difflib

        def named(n):
            meant = _MEANT.get(n.lower()) or next(iter(difflib.get_close_matches(n.lower(), [*PROVIDERS, "openvino"], 1)),
                                                  None)
            return f"{n!r} (did you mean {meant!r}?)" if meant else repr(n)

        raise InputError(f"unknown provider {', '.join(map(named, unknown))}: use {', '.join(PROVIDERS)}, "
                         "openvino (OpenVINO's runtime; openvino:gpu, openvino:npu) or a full onnxruntime name "
                         "ending in ExecutionProvider")
    out, seen = [], set()
    for name in names:
        if PROVIDERS.get(name, name) not in seen:
            seen.add(PROVIDERS.get(name, name))
            out.append(name)
    return out


# Words users reach for that are not provider names ("gpu" is the extra's name, not a provider's).
_MEANT = {"gpu": "cuda", "trt": "tensorrt", "nvidia": "cuda", "amd": "rocm", "directml": "dml", "ov": "openvino"}


def _tolerances(tolerances) -> dict:
    if tolerances is None:
        return {}
    if not isinstance(tolerances, dict) or not set(tolerances) <= {"rtol", "atol"}:
        raise InputError(f"tolerances must be a dict with keys rtol and/or atol, got {tolerances!r}")
    for key, value in tolerances.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not 0 <= float(value) < float("inf"):
            raise InputError(f"{key} must be a finite number >= 0, got {value!r}")
    return {k: float(v) for k, v in tolerances.items()}


def _check_fits(path: str, info, spec: RopeSpec) -> None:
    """A spec whose head_dim or axes differ from the graph's static input dims would only fail
    every case with a runtime shape error: say which up front."""
    rank = len(info.inputs["position_ids"].dims)
    if rank != len(spec.position_shape(1, 1)):
        raise InputError(f"{path}: position_ids has rank {rank}, but the spec has {spec.num_axes} position "
                         f"ax{'is' if spec.num_axes == 1 else 'es'} (rank {len(spec.position_shape(1, 1))})")
    for name in ("q", "k"):
        dims = info.inputs[name].dims
        if len(dims) != 4:
            raise InputError(f"{path}: {name} has rank {len(dims)}, expected 4 ([batch, heads, seq, head_dim])")
        if isinstance(dims[-1], int) and dims[-1] != spec.head_dim:
            raise InputError(f"{path}: {name}'s head_dim is {dims[-1]}, the spec's {spec.head_dim}")


def _seed(seed) -> int:
    if seed is None:
        return random.SystemRandom().randrange(2**31)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise InputError(f"seed must be an int in [0, 2**63), got {seed!r}")
    return int(seed)


def _check_case(runner, case: Case, spec: RopeSpec, dtype: str, tol: dict, expected, exact) -> CaseResult:
    try:
        got = runner.run(case)
    except TimeoutError as exc:  # a graph that hangs FAILS, refusal or not
        return CaseResult(runner.name, case.name, runner.ran_on, "fail", detail=str(exc))
    except Exception as exc:  # noqa: BLE001
        if case.past_table:
            return CaseResult(runner.name, case.name, runner.ran_on, "pass", detail="refused")
        return CaseResult(runner.name, case.name, runner.ran_on, "error", detail=f"{type(exc).__name__}: {exc}")
    if case.past_table:
        # Every token must be NaN in every head (rope_export's guard row), not merely one value:
        # a finite token is a row of some other position, used silently.
        finite = [label for label, g in zip(("q_rot", "k_rot"), got)
                  if g.ndim != 4 or not np.isnan(g.astype(np.float32)).any(-1).all()]
        if not finite:
            return CaseResult(runner.name, case.name, runner.ran_on, "pass", detail="NaN for every token")
        return CaseResult(runner.name, case.name, runner.ran_on, "fail",
                          detail=f"positions outside the table gave finite {' and '.join(finite)} (the runtime reads "
                                 "another row: re-export the graph with this rope_export, whose table has a guard row)")
    # Shapes and dtypes before numbers: broadcasting would let a [1, B, H, S, D] output compare.
    for label, g, w, x in zip(("q_rot", "k_rot"), got, expected, (case.q, case.k)):
        if tuple(g.shape) != tuple(w.shape):
            return CaseResult(runner.name, case.name, runner.ran_on, "fail",
                              detail=f"{label} has shape {tuple(g.shape)}, expected {tuple(w.shape)}")
        if g.dtype != numpy_dtype(x.dtype):
            return CaseResult(runner.name, case.name, runner.ran_on, "fail",
                              detail=f"{label} is {g.dtype}, expected {numpy_dtype(x.dtype)} (the input dtype)")
    got = tuple(g.astype(np.float32) for g in got)
    tol_case = case_tolerance(spec, case.position_ids, tol)
    stats = [compare(g, w, tol_case) for g, w in zip(got, expected)]
    ref_err = max(float(np.abs(g.astype(np.float64) - e).max()) for g, e in zip(got, exact))
    bound = reference_bound(spec, case, dtype)
    parity = all(s["ok"] for s in stats)
    ok = parity and ref_err <= bound
    detail = "" if ok else ("outside the parity tolerance" if not parity else "too far from float64 reference")
    return CaseResult(runner.name, case.name, runner.ran_on, "pass" if ok else "fail",
                      max_abs_err=max(s["max_abs_err"] for s in stats), max_rel_err=max(s["max_rel_err"] for s in stats),
                      cosine=min(s["cosine"] for s in stats), ref_err=ref_err, ref_bound=bound, detail=detail)
