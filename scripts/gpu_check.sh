#!/usr/bin/env bash
# One command for a lent GPU machine (H100/H200): GPU tests and benchmarks, results into a folder.
#   bash scripts/gpu_check.sh [OUT_DIR]      (default: $OUT, else gpu_results/)
# The machine's python already has torch, triton, lightning and timm; aipflow is installed without deps.
set -uo pipefail
out="${1:-${OUT:-gpu_results}}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
pip install --no-deps --no-build-isolation -q -e . >"$out/install.log" 2>&1 || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY' | tee "$out/device.txt"
import torch
print(torch.cuda.get_device_name(0), torch.__version__, "cuda", torch.version.cuda)
PY
status=0
timeout 240 python -m pytest -q -p no:cacheprovider tests/gpu tests/optim 2>&1 | tee "$out/gpu_tests.log" || status=1
if [ -f benchmarks/kernel_throughput.py ]; then
  timeout 240 python -m benchmarks.kernel_throughput --out "$out" 2>&1 | tee "$out/kernels.log" || status=1
fi
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -gt 1 ]; then  # data-parallel scaling needs several GPUs (nccl)
  timeout 240 python -m benchmarks.ddp_throughput --steps 50 2>&1 | tee "$out/distributed.log" || status=1
  cp benchmarks/results/distributed_gpu.md "$out/" 2>/dev/null
fi
echo "gpu_check: results in $out (status $status)"
exit $status
