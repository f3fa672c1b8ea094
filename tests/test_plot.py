"""Tests of rope_export.plot: `rope-export plot` draws each pair's stream, speed and head dims."""

from __future__ import annotations

import pytest



def test_plot_spec_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from rope_export.cli import main

    import matplotlib.image

    pictures = {}
    for preset in ("qwen3-vl-8b", "gpt-neox-20b"):
        out = tmp_path / f"{preset}.png"
        assert main(["plot", "--preset", preset, "--out", str(out)]) == 0
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(out)
        height, width = image.shape[:2]
        assert height >= 300 and width >= 600, image.shape
        # drawn, not blank: many distinct colours (the per-stream colour bands of M-RoPE among them)
        colours = {tuple(px) for px in (image[::7, ::7, :3] * 255).astype(int).reshape(-1, 3).tolist()}
        assert len(colours) > 50, len(colours)
        pictures[preset] = image
    # one spec's plot is not another's: three streams (M-RoPE) vs one, 128 vs 24 rotated dims
    a, b = pictures.values()
    assert a.shape != b.shape or (abs(a - b) > 0.1).mean() > 0.01


def test_a_name_that_is_not_png_is_refused_and_nothing_written(tmp_path):
    pytest.importorskip("matplotlib")
    from rope_export.cli import main

    for name in ("p.svg", "config.json", "graph.onnx"):
        out = tmp_path / name
        out.write_text("keep me")
        assert main(["plot", "--preset", "mistral-7b", "--out", str(out)]) == 2
        assert out.read_text() == "keep me"
    assert main(["bench", "--preset", "mistral-7b", "--plot", str(tmp_path / "s.svg"), "--no-compile"]) == 2
