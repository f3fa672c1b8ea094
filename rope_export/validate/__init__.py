"""Parity validator, laid out after Polygraphy: input `cases`, one runner per backend behind
one protocol (`runners`), one comparator (`compare`), one `report`; `validate` runs them."""

from .._util import InputError as ValidationInputError
from .cases import Case, make_cases
from .compare import TOLERANCES, case_tolerance, compare, reference_error_bound
from .report import CaseResult, ValidationReport
from .run import reference_bound, validate
from .runners import DEFAULT_PROVIDERS, PROVIDERS, OnnxRuntimeRunner, Runner, TensorRTEngineRunner

__all__ = ["validate", "ValidationReport", "CaseResult", "Case", "make_cases", "ValidationInputError", "TOLERANCES",
           "PROVIDERS", "DEFAULT_PROVIDERS", "compare", "case_tolerance", "reference_bound", "reference_error_bound",
           "Runner", "OnnxRuntimeRunner", "TensorRTEngineRunner"]
