"""The benchmark runs every backend at tiny sizes and reports skips with reasons."""

from __future__ import annotations

import re

import pytest
import torch

import rope_export as rx
from rope_export.bench import HFStyleRotary, bench, format_table, heads_of


def test_hf_style_module_is_the_model_rotation(gen):
    # GPT-J: its interleaved pairs through rotate_every_two, as its modeling code rotates them.
    for preset in ("llama-3.1-8b", "qwen2-vl-7b", "gpt-neox-20b", "qwen2-vl-7b:vision", "gpt-j-6b"):
        spec = rx.load_preset(preset)
        q = torch.randn(1, 2, 6, spec.head_dim, generator=gen)
        shape = (1, 6) if spec.num_axes == 1 else (spec.num_axes, 1, 6)
        pos = torch.randint(0, 500, shape, generator=gen)
        for got, want in zip(HFStyleRotary(spec)(q, q, pos), rx.RotaryEmbedding(spec)(q, q, pos)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


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


def test_contenders_are_timed_round_by_round_in_rotating_order():
    from rope_export.bench.timing import time_interleaved

    calls = []
    contenders = {name: (lambda x, name=name: calls.append((name, x)), [(0,), (1,)]) for name in "abc"}
    timings = time_interleaved(contenders, "cpu", repeat=3, warmup=1)
    assert calls[:3] == [("a", 0), ("b", 0), ("c", 0)]  # warm-up, one call each
    rounds = [calls[3 + 3 * i: 6 + 3 * i] for i in range(3)]
    assert [[n for n, _ in r] for r in rounds] == [list("abc"), list("bca"), list("cab")]
    assert [{x for _, x in r} for r in rounds] == [{0}, {1}, {0}]  # every contender on the same input set
    assert all(len(t.times) == 3 for t in timings.values())


def test_noisy_rows_are_flagged_and_counted():
    from rope_export.bench import BenchRow
    from rope_export.bench.timing import NOISY_SPREAD, Timing

    assert Timing([1.0, 1.1, 5.0]).spread == pytest.approx(0.1) and not Timing([1.0, 1.1, 5.0]).noisy
    assert Timing([1.0, 2.0, 2.0]).noisy  # the typical call twice the best: the machine was busy
    quiet = BenchRow("p", "s", "a", 1.0, 1.0, 1.0, 1.0, "", 1, 8, 0.95, 0.05)
    busy = BenchRow("p", "s", "b", 3.0, 1.0, 3.0, 0.3, f"noisy: spread {2:.0%}", 1, 8, 1.0, 2.0)
    assert "rows are noisy" not in format_table([quiet])
    last = format_table([quiet, busy]).splitlines()[-1]
    assert last.startswith("1 of 2 rows are noisy") and f"{NOISY_SPREAD:.0%}" in last


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
