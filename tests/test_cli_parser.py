"""Tests of rope_export.cli_parser: the command line's arguments, built without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")


def test_help_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, rope_export.cli as c; "
                          "c.build_parser().format_help(); print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
