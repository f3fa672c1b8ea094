"""Tests of rope_export.bench.baselines: the HF-style torch module is the models' own rotation."""

from __future__ import annotations

import torch

import rope_export as rx
from rope_export.bench import HFStyleRotary


def test_hf_style_module_is_the_model_rotation(gen):
    # GPT-J: its interleaved pairs through rotate_every_two, as its modeling code rotates them.
    for preset in ("llama-3.1-8b", "qwen2-vl-7b", "gpt-neox-20b", "qwen2-vl-7b:vision", "gpt-j-6b"):
        spec = rx.load_preset(preset)
        q = torch.randn(1, 2, 6, spec.head_dim, generator=gen)
        shape = (1, 6) if spec.num_axes == 1 else (spec.num_axes, 1, 6)
        pos = torch.randint(0, 500, shape, generator=gen)
        for got, want in zip(HFStyleRotary(spec)(q, q, pos), rx.RotaryEmbedding(spec)(q, q, pos)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
