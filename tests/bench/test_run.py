"""Tests of rope_export.bench.run: the benchmark runs every backend at tiny sizes and reports skips with reasons."""

from __future__ import annotations

import re

import pytest

from rope_export.bench import bench, format_table, heads_of


def test_bench_rows_and_skips():
    pytest.importorskip("onnxruntime")
    rows = bench("gpt-neox-20b", shapes=[("tiny", 1, 8)], repeat=4, compile=False, device="cpu")
    by = {r.backend: r for r in rows}
    assert by["copy (floor)"].x_copy == 1.0 and by["HF-style torch eager"].speedup_vs_hf == 1.0
    copy, hf = by["copy (floor)"].ms, by["HF-style torch eager"].ms
    for name in ("HF-style torch eager", "ours torch eager", "ort fused (ours)", "ort HF-style dynamo export (baseline)",
                 "ort RotaryEmbedding fed cos/sin", "ort plugin-form (ours)"):
        r = by[name]
        assert r.ms is not None and 0 < r.min_ms <= r.ms, name
        # Ratios are of medians from the same rounds; bandwidth counts q and k read and written once.
        assert r.x_copy == pytest.approx(r.ms / copy) and r.speedup_vs_hf == pytest.approx(hf / r.ms), name
        assert r.gbps == pytest.approx(2 * (64 + 64) * 8 * 96 * 4 / r.ms / 1e6), name  # B=1, S=8, 64+64 heads, D=96
        assert r.spread == pytest.approx(r.ms / r.min_ms - 1) and (r.batch, r.seq) == (1, 8), name
    assert by["ours Triton kernel"].ms is None and "skipped" in by["ours Triton kernel"].note
    assert by["TensorRT"].ms is None
    assert "copy (floor)" in format_table(rows)
    assert heads_of("llama-3.1-8b") == (32, 8) and heads_of("qwen2-vl-7b:vision") == (16, 16)


def test_bench_cli_plots_a_sweep_and_reads_a_config(tmp_path, capsys):
    """The --plot sweep (it once parsed its lengths out of the row labels) and --hf-config."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    import json

    import matplotlib.image

    from rope_export.cli import main

    png = tmp_path / "sweep.png"
    assert main(["bench", "--preset", "mistral-7b", "--shape", "prefill:1:16", "--repeat", "2", "--no-compile",
                 "--heads", "4+2", "--plot", str(png), "--lengths", "16,32", "--json", str(tmp_path / "b.json")]) == 0
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # a drawn figure, not a blank canvas
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert sorted({r["seq"] for r in rows if r["shape"].startswith("sweep")}) == [16, 32]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "rope_theta": 10000.0, "max_position_embeddings": 64}))
    capsys.readouterr()
    assert main(["bench", "--hf-config", str(config), "--shape", "tiny:1:8", "--repeat", "2", "--no-compile",
                 "--heads", "model"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^llama +tiny B=1 S=8 H=4\+2 ", out, re.MULTILINE), out  # the config's own heads, its model_type
    assert main(["bench", "--hf-config", str(config), "--preset", "mistral-7b"]) == 2
