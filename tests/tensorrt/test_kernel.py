"""Tests of rope_export.tensorrt.kernel: the TensorRT plugin's Triton kernel, run as the JIT plugin runs it, and its PTX."""

# One dense tensor, TensorRT's argument order, launch shape fixed at engine build. Without CUDA,
# Triton's interpreter runs it on CPU tensors (TRITON_INTERPRET=1, set before Triton is imported).

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton", reason="triton is not installed")

import rope_export as rx  # noqa: E402
from rope_export.tensorrt.kernel import plugin_constants, rope_plugin_launch  # noqa: E402
from rope_export.validate import TOLERANCES, compare  # noqa: E402
from tests.helpers import all_specs, random_positions  # noqa: E402


DEVICE = "cuda" if CUDA else "cpu"


# The kernels pair (i, i+P) or (2i, 2i+1); for "interleaved_to_half" the module de-interleaves
# q and k first (test_backend_triton_through_the_module_and_length_rules) and the plugin form
# refuses it.
SPECS = [(n, s) for n, s in all_specs() if s.layout != "interleaved_to_half"]


IDS = [n for n, _ in SPECS]


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_plugin_kernel_matches_module(name, spec, dtype, gen):
    torch_dtype = DTYPES[dtype]
    batch, seq, heads = 2, 7, 5  # heads not a multiple of the 4-head program group
    x = torch.randn(batch, heads, seq, spec.head_dim, generator=gen).to(device=DEVICE, dtype=torch_dtype)
    pos = random_positions(spec, batch, seq, 4 * (spec.max_position_embeddings or 4096), gen).to(DEVICE)
    rope = rx.RotaryEmbedding(spec).to(DEVICE)
    out = torch.full_like(x, float("nan"))
    rope_plugin_launch(x, (pos[None] if pos.dim() == 2 else pos).contiguous(), rope.inv_freq_at(pos).contiguous(),
                       rope.axis_of_pair.to(torch.int32), out, rotary_dim=spec.rotary_dim,
                       interleaved=spec.layout == "interleaved", attention_scaling=spec.attention_scaling)
    assert not out.isnan().any(), "kernel left elements unwritten"
    want = rope(x, x, pos)[0]
    stats = compare(out.float().cpu().numpy(), want.float().cpu().numpy(), TOLERANCES[dtype])
    assert stats["ok"], (name, dtype, stats)


def test_plugin_kernel_refuses_strided_tensors():
    x = torch.randn(1, 4, 3, 128).transpose(1, 2).to(DEVICE)
    with pytest.raises(ValueError, match="dense"):
        rope_plugin_launch(x, torch.zeros(1, 1, 4, dtype=torch.int64, device=DEVICE), torch.ones(64, device=DEVICE),
                           torch.zeros(64, dtype=torch.int32, device=DEVICE), torch.empty_like(x),
                           rotary_dim=128, interleaved=False, attention_scaling=1.0)


@pytest.mark.parametrize("preset,dtype", [("qwen2-vl-7b", torch.float16), ("gpt-neox-20b", torch.bfloat16),
                                          ("gpt-oss-20b", torch.float32)])
def test_plugin_ptx_entry_is_tensorrts_calling_convention(preset, dtype):
    """TensorRT launches the AOT kernel with (4 input pointers, 2 int32 scalars, 1 output pointer)
    and nothing else: the PTX entry must declare exactly that, use libdevice (not approximate)
    sin/cos, and assemble. PTX generation needs no GPU."""
    import json
    import subprocess
    import sys

    spec = rx.load_preset(preset)
    constants = plugin_constants(num_heads=7, head_dim=spec.head_dim, rotary_dim=spec.rotary_dim,
                                 interleaved=spec.layout == "interleaved", attention_scaling=spec.attention_scaling)
    # A child process: this one runs Triton's interpreter, which cannot compile.
    script = (
        "import json, sys, torch; from triton.backends.compiler import GPUTarget;"
        "from rope_export.tensorrt.kernel import compile_plugin_kernel;"
        f"r = compile_plugin_kernel(torch.{str(dtype).split('.')[1]}, torch.int64, json.loads(sys.argv[1]),"
        " target=GPUTarget('cuda', 90, 32)); print(json.dumps(r))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", script, json.dumps(constants)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    name, ptx, num_warps, shared = json.loads(run.stdout.strip().splitlines()[-1])
    entry = ptx[ptx.index(f".entry {name}("):]
    params = [p.split()[1:3] for p in entry[:entry.index(")")].split("(", 1)[1].split(",")]
    assert [p[0] for p in params] == [".u64"] * 4 + [".u32"] * 2 + [".u64"], params
    assert "sin.approx" not in ptx and "cos.approx" not in ptx
    assert f".reqntid {num_warps * 32}" in ptx and shared == 0
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        ptxas = get_ptxas(90).path
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no ptxas to assemble the PTX: {exc}")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-arch=sm_90a", src, "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
