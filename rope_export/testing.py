"""Parity checks for your own test suite.

    # test_deploy.py
    from rope_export.testing import assert_parity

    def test_rotary_graph_matches_torch():
        assert_parity("build/rope.onnx", providers=("cuda", "cpu"))

Or, without writing a test: ``pytest --rope-validate build/rope.onnx [--rope-providers cuda,cpu]``
(the pytest plugin that ships with rope_export adds one test per file).
"""

from __future__ import annotations

from ._util import DEFAULT_PROVIDERS
from .validate import ValidationReport, validate

__all__ = ["assert_parity"]


def assert_parity(onnx_path, spec=None, *, providers=DEFAULT_PROVIDERS, **kwargs) -> ValidationReport:
    """`rope_export.validate`, raising AssertionError with the report table when it fails.

    Args and keywords: as `rope_export.validate`. Returns the report when it passes.
    """
    report = validate(onnx_path, spec, providers=providers, **kwargs)
    if not report.passed:
        raise AssertionError("rotary parity failed\n" + report.table())
    return report
