"""Tests of rope_export.kernels.triton_rope: the fused Triton kernel against the torch module and the float64 reference."""

# On a CUDA machine these run the compiled kernel; elsewhere Triton's interpreter runs the same
# kernel on CPU tensors (TRITON_INTERPRET=1, set here before Triton is imported), with one
# documented difference: the interpreter evaluates sin/cos with numpy instead of libdevice.

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton", reason="triton is not installed")

import rope_export as rx  # noqa: E402
from rope_export.kernels.triton_rope import rope_triton  # noqa: E402
from rope_export.reference import rotate  # noqa: E402
from rope_export.validate import TOLERANCES, compare  # noqa: E402
from tests.helpers import all_specs, float32_tolerance, random_positions  # noqa: E402


DEVICE = "cuda" if CUDA else "cpu"


# The kernels pair (i, i+P) or (2i, 2i+1); for "interleaved_to_half" the module de-interleaves
# q and k first (test_backend_triton_through_the_module_and_length_rules) and the plugin form
# refuses it.
SPECS = [(n, s) for n, s in all_specs() if s.layout != "interleaved_to_half"]


IDS = [n for n, _ in SPECS]


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _kernel(spec, q, k, pos, **kw):
    rope = rx.RotaryEmbedding(spec).to(q.device)
    inv = rope.inv_freq_at(pos)
    p = pos[None] if pos.dim() == 2 else pos
    return rope_triton(q, k, p, inv, rope.axis_of_pair, interleaved=spec.layout == "interleaved",
                       rotary_dim=spec.rotary_dim, attention_scaling=spec.attention_scaling, **kw)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_kernel_matches_module_with_poisoned_outputs(name, spec, dtype, gen):
    torch_dtype = DTYPES[dtype]
    batch, seq, hq, hk = 2, 7, 3, 2  # odd sequence, GQA
    q = torch.randn(batch, hq, seq, spec.head_dim, generator=gen).to(device=DEVICE, dtype=torch_dtype)
    k = torch.randn(batch, hk, seq, spec.head_dim, generator=gen).to(device=DEVICE, dtype=torch_dtype)
    pos = random_positions(spec, batch, seq, 4 * (spec.max_position_embeddings or 4096), gen).to(DEVICE)
    q_out = torch.full_like(q, float("nan"))
    k_out = torch.full_like(k, float("nan"))
    _kernel(spec, q, k, pos, q_out=q_out, k_out=k_out)
    assert not q_out.isnan().any() and not k_out.isnan().any(), "kernel left elements unwritten"
    want = rx.RotaryEmbedding(spec).to(DEVICE)(q, k, pos)
    for got, w in zip((q_out, k_out), want):
        stats = compare(got.float().cpu().numpy(), w.float().cpu().numpy(), TOLERANCES[dtype])
        assert stats["ok"], (name, dtype, stats)


@pytest.mark.parametrize("name,spec", SPECS[::2], ids=IDS[::2])
def test_kernel_against_float64_reference_at_large_positions(name, spec, gen):
    """Catches approximate sin/cos: the float32 angle error budget is |angle| * 2^-24."""
    q = torch.randn(1, 2, 9, spec.head_dim, generator=gen)
    k = torch.randn(1, 1, 9, spec.head_dim, generator=gen)
    pos = random_positions(spec, 1, 9, 1_000_000, gen)
    q_rot, k_rot = _kernel(spec, q.to(DEVICE), k.to(DEVICE), pos.to(DEVICE))
    for x, out in ((q, q_rot), (k, k_rot)):
        err = float((out.cpu().double() - rotate(x, pos, spec)).abs().max())
        assert err <= float32_tolerance(spec, pos, x), (name, err)


@pytest.mark.parametrize("preset", ["qwen2-vl-7b", "gpt-neox-20b", "gpt-j-6b"])
def test_kernel_on_slices_of_a_fused_qkv_tensor(preset, gen):
    spec = rx.load_preset(preset)
    batch, seq, hq, hk, d = 2, 5, 4, 2, spec.head_dim
    qkv = torch.randn(batch, seq, hq + 2 * hk, d, generator=gen).to(DEVICE)  # [B, S, H, D] layout
    q = qkv[:, :, :hq].transpose(1, 2)  # [B, Hq, S, D], non-contiguous
    k = qkv[:, :, hq:hq + hk].transpose(1, 2)
    assert not q.is_contiguous() and not k.is_contiguous()
    pos = random_positions(spec, batch, seq, 50_000, gen).to(DEVICE)
    got = rx.RotaryEmbedding(spec, backend="triton").to(DEVICE)(q, k, pos)
    want = rx.RotaryEmbedding(spec).to(DEVICE)(q.contiguous(), k.contiguous(), pos)
    for g, w in zip(got, want):
        assert compare(g.cpu().numpy(), w.cpu().numpy(), TOLERANCES["float32"])["ok"]
    assert torch.equal(qkv[:, :, hq + hk:], qkv[:, :, hq + hk:].clone())  # v untouched, inputs not written


def test_backend_triton_through_the_module_and_length_rules(gen):
    llama = rx.load_preset("llama-3.1-8b")
    for spec in (rx.load_preset("phi-3-mini-128k"), dataclasses.replace(llama, layout="interleaved"),
                 dataclasses.replace(llama, layout="interleaved_to_half")):
        for high in (1000, 200_000):  # LongRoPE: short table, then long table
            q = torch.randn(1, 2, 6, spec.head_dim, generator=gen).to(DEVICE)
            pos = torch.randint(0, high, (1, 6), generator=gen).to(DEVICE)
            got = rx.RotaryEmbedding(spec, backend="triton").to(DEVICE)(q, q, pos)[0]
            want = rx.RotaryEmbedding(spec).to(DEVICE)(q, q, pos)[0]
            assert compare(got.cpu().numpy(), want.cpu().numpy(), TOLERANCES["float32"])["ok"]


@pytest.mark.skipif(CUDA, reason="only meaningful where CPU tensors are not accepted")
def test_backend_triton_refuses_cpu_tensors_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    rope = rx.RotaryEmbedding(rx.load_preset("mistral-7b"), backend="triton")
    q = torch.randn(1, 1, 2, 128)
    with pytest.raises(ValueError, match="CUDA tensors"):
        rope(q, q, torch.zeros(1, 2, dtype=torch.int64))


@pytest.mark.parametrize("seq", [300, 2100])  # the launch heuristic's 4- and 16-token tiles
def test_kernel_token_tiles(seq, gen):
    spec = rx.load_preset("gpt-neox-20b")  # partial rotary: the tail copy runs too
    q = torch.randn(1, 2, seq, spec.head_dim, generator=gen).to(DEVICE)
    k = torch.randn(1, 1, seq, spec.head_dim, generator=gen).to(DEVICE)
    pos = torch.randint(0, 9000, (1, seq), generator=gen).to(DEVICE)
    q_out, k_out = torch.full_like(q, float("nan")), torch.full_like(k, float("nan"))
    _kernel(spec, q, k, pos, q_out=q_out, k_out=k_out)
    for got, want in zip((q_out, k_out), rx.RotaryEmbedding(spec).to(DEVICE)(q, k, pos)):
        assert compare(got.cpu().numpy(), want.cpu().numpy(), TOLERANCES["float32"])["ok"]
