#!/usr/bin/env bash
# One GPU run: kernel and module tests on CUDA, then the kernel benchmark.
#   bash tools/gpu_check.sh OUTDIR
# Installs nothing from the network: the package runs from the working tree (PYTHONPATH).
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_triton_kernel.py tests/test_modules.py 2>&1 | tee "$out/pytest.txt" | tail -5
python3 tools/bench_kernel.py --dtype bfloat16 --out "$out/bench_bf16.json" 2>&1 | tee "$out/bench.txt"
