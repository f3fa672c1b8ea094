"""Parity validator, laid out after Polygraphy: input `cases`, one runner per backend behind
one protocol (`runners`), one comparator (`compare`), one `report`; `validate` runs them."""

import sys
import types

from .._util import InputError as ValidationInputError
from .cases import Case, make_cases
from .compare import TOLERANCES, case_tolerance, compare, reference_error_bound
from .report import CaseResult, ValidationReport
from .run import reference_bound, validate
from .runners import DEFAULT_PROVIDERS, PROVIDERS, OnnxRuntimeRunner, Runner, TensorRTEngineRunner

__all__ = ["validate", "ValidationReport", "CaseResult", "Case", "make_cases", "ValidationInputError", "TOLERANCES",
           "PROVIDERS", "DEFAULT_PROVIDERS", "compare", "case_tolerance", "reference_bound", "reference_error_bound",
           "Runner", "OnnxRuntimeRunner", "TensorRTEngineRunner"]


class _CallablePackage(types.ModuleType):
    """``rope_export.validate`` names both this package and its function: importing the package
    first (``from rope_export.validate import compare``) binds the package to that name on
    ``rope_export``, so calling the package calls the function and ``rx.validate(...)`` works
    whichever came first."""

    def __call__(self, *args, **kwargs):
        return validate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
