"""The benchmark runs every backend at tiny sizes and reports skips with reasons."""

from __future__ import annotations

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
    rows = bench("gpt-neox-20b", shapes=[("tiny", 1, 8)], repeat=2, compile=False, device="cpu")
    by = {r.backend: r for r in rows}
    assert by["copy (floor)"].x_copy == 1.0
    for name in ("HF-style torch eager", "ours torch eager", "ort fused (ours)", "ort HF-style dynamo export (baseline)",
                 "ort RotaryEmbedding fed cos/sin", "ort plugin-form (ours)"):
        assert by[name].ms is not None and by[name].ms > 0, name
    assert by["ours Triton kernel"].ms is None and "skipped" in by["ours Triton kernel"].note
    assert by["TensorRT"].ms is None
    assert "copy (floor)" in format_table(rows)
    assert heads_of("llama-3.1-8b") == (32, 8) and heads_of("qwen2-vl-7b:vision") == (16, 16)
