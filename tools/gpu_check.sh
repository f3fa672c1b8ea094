#!/usr/bin/env bash
# One GPU run: kernel, module and TensorRT tests on CUDA, onnxruntime-gpu validation when its
# wheel is there, then the kernel benchmark; a short table last, everything under OUTDIR.
#   bash tools/gpu_check.sh OUTDIR [WHEELS]
# Installs nothing from the network: the package runs from the working tree (PYTHONPATH).
# WHEELS: a folder of wheels to install offline first (onnxruntime-gpu, tensorrt: the GPU image
# has neither; carried there in parts, ignored folders stay on the warm machine between calls).
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUTDIR [WHEELS]}
wheels=${2:-}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --find-links "$wheels" "$wheels"/*.whl 2>&1 | tail -3 | tee "$out/install.txt"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 - <<'PY' | tee -a "$out/gpu.txt"
import importlib
for name in ("torch", "triton", "onnxruntime", "tensorrt", "tensorrt_rtx"):
    try:
        m = importlib.import_module(name)
        extra = f" providers {m.get_available_providers()}" if name == "onnxruntime" else ""
        print(name, m.__version__ + extra)
    except Exception as exc:
        print(name, "missing:", type(exc).__name__)
PY
python3 -m pytest -q -p no:cacheprovider tests/kernels tests/test_modules.py tests/tensorrt \
  2>&1 | tee "$out/pytest.txt" | tail -5
for preset in qwen2-vl-7b llama-3.1-8b; do
  python3 -m rope_export.cli export --preset "$preset" --form fused --out "$out/$preset.onnx" > /dev/null
  python3 -m rope_export.cli validate "$out/$preset.onnx" --providers cuda,cpu --seed 1 --json "$out/$preset-ort.json" \
    > "$out/$preset-ort.txt" 2>&1
  echo "onnxruntime $preset: exit $? ($(tail -1 "$out/$preset-ort.txt"))" | tee -a "$out/summary.txt"
done
python3 tools/bench_kernel.py --dtype bfloat16 --out "$out/bench_bf16.json" 2>&1 | tee "$out/bench.txt" | tail -12
echo "--- summary"; cat "$out/gpu.txt" "$out/summary.txt"; tail -2 "$out/pytest.txt"
