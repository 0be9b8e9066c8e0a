#!/usr/bin/env bash
# Train-step throughput at the BioCLIP recipe's settings on every GPU of this machine: images/s per GPU and MFU,
# bioclip_hf (BioCLIPModel + ClipLoss) against open_clip (CLIP + ClipLoss) with the same weights and batches.
# Each GPU is one process (torchrun); local loss + gather-with-grad across GPUs, gradient checkpointing,
# autocast (fp16 with a gradient scaler for BioCLIP, bf16 for BioCLIP 2), DDP, AdamW.
#
#   bash benchmarks/gpu_train.sh                                   # BioCLIP: ViT-B/16, fp16, 512 images per GPU
#   MODEL=bioclip-2 PRECISION=bf16 BATCH=256 bash benchmarks/gpu_train.sh
#   NGPU=4 STEPS=30 bash benchmarks/gpu_train.sh
#   SMOKE=1 bash benchmarks/gpu_train.sh                           # no GPU: tiny model, 2 CPU processes (gloo)
#
# MFU needs the device's peak: known GPUs (H100/H200/A100/L40S/...) are looked up, else set PEAK_TFLOPS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}

if [[ "${SMOKE:-0}" == "1" ]]; then
  NGPU=2
  ARGS=(--model tiny --device cpu --batch-size 4 --steps 2 --warmup 1 --precision bf16 --peak-tflops 1)
  export OMP_NUM_THREADS=1
else
  NGPU=${NGPU:-$(nvidia-smi --list-gpus | wc -l)}
  ARGS=(--model "${MODEL:-bioclip}" --device cuda --batch-size "${BATCH:-512}" --steps "${STEPS:-20}" --warmup 3
        --precision "${PRECISION:-fp16}")
  if [[ -n "${PEAK_TFLOPS:-}" ]]; then ARGS+=(--peak-tflops "$PEAK_TFLOPS"); fi
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n "$NGPU"
fi

echo "== train step, recipe settings, $NGPU process(es): ${ARGS[*]}"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" benchmarks/bench_train_step.py \
  "${ARGS[@]}" --recipe-settings 2>&1 | grep -v -e "Warning" -e "warnings.warn" -e "all_gather(" -e "Loading weights"
