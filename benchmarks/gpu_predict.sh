#!/usr/bin/env bash
# Predict throughput on one NVIDIA GPU: images/s at float32, float16, bfloat16 and auto (what --dtype auto picks
# there), batch 256 (gpu_predict.py); the int8 row is N/A on the GPU and measured on the machine's CPU instead.
# Usage: bash benchmarks/gpu_predict.sh [extra gpu_predict.py flags]; IMAGES, WORKERS, TAXA override the sizes.
# Run from a checkout with bioclip-hf installed (pip install -e .); photos: ../shared/data/birds525 when present,
# otherwise generated JPEGs. pybioclip has no half precision, so only our dtypes are compared.
set -euo pipefail
cd "$(dirname "$0")/.."

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "gpu_predict.sh: no NVIDIA GPU" >&2; exit 1; }
python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

workers="${WORKERS:-$(( $(nproc) > 16 ? 16 : $(nproc) ))}"
python benchmarks/gpu_predict.py --device cuda --batch-size 256 --images "${IMAGES:-8192}" \
  --num-workers "$workers" --taxa "${TAXA:-450000}" --dtypes float32 float16 bfloat16 auto \
  --cpu-images "${CPU_IMAGES:-64}" "$@"
