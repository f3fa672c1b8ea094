"""Tests of rope_export.plot: `rope-export plot` draws each pair's stream, speed and head dims."""

from __future__ import annotations

import pytest

import rope_export as rx


def test_plot_spec_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from rope_export.cli import main

    for preset in ("qwen3-vl-8b", "gpt-neox-20b"):
        out = tmp_path / f"{preset}.png"
        assert main(["plot", "--preset", preset, "--out", str(out)]) == 0
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
