#!/usr/bin/env bash
# The BioCLIP 2 suite on one NVIDIA GPU (gpu_eval.py): images/s of each task's image pass and our number next to
# the published BioCLIP / BioCLIP 2 / BioCAP / BioCLIP 2.5 numbers, for every task whose data is present.
# Usage: MODEL=imageomics/bioclip-2 DATA_ROOT=/data/bioclip2-suite bash benchmarks/gpu_eval.sh [extra gpu_eval.py flags]
#   DATA_ROOT holds one folder per task (DATA_ROOT/nabirds/metadata.csv, ...; evals/README.md says where each comes
#   from); Rare Species and Camera Trap are read from the Hub or the HF cache. BATCH overrides the batch size (256).
#   SMOKE=1: the Python part on CPU with a tiny random model and the suite's miniatures (what the tests run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${SMOKE:-0}" == "1" ]]; then
  exec python benchmarks/gpu_eval.py --smoke "$@"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "gpu_eval.sh: no NVIDIA GPU" >&2; exit 1; }
python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python benchmarks/gpu_eval.py --device cuda --batch-size "${BATCH:-256}" --model "${MODEL:-imageomics/bioclip-2}" \
  ${DATA_ROOT:+--data-root "$DATA_ROOT"} "$@"
