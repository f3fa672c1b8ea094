"""Tests of rope_export.pytest_plugin (--rope-validate) and rope_export.testing (assert_parity)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")


def test_pytest_plugin_and_helper(files, tmp_path):
    import subprocess
    import sys

    from rope_export.testing import assert_parity

    assert assert_parity(files["gpt-neox-20b"], seed=4).passed
    with pytest.raises(AssertionError, match="rotary parity failed"):
        assert_parity(files["gpt-neox-20b"], providers=("cuda",), seed=4)
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rope-validate", files["gpt-neox-20b"], *extra],
        cwd=tmp_path, capture_output=True, text=True)
    ok = run()
    assert ok.returncode == 0 and "1 passed" in ok.stdout, ok.stdout + ok.stderr
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        bad = run("--rope-providers", "cuda,cpu")
        assert bad.returncode == 1 and "UNAVAILABLE" in bad.stdout
