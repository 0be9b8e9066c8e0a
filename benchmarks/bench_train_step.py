"""Train-step throughput: BioCLIPModel (transformers) + bioclip_hf ClipLoss vs open_clip's CLIP + its ClipLoss.

Both models hold the *same* weights (the open_clip model is converted on load) and see the same batch; a step
is forward (both towers), symmetric contrastive loss, backward, and an AdamW update. The steps of the two
implementations are interleaved, alternating which goes first, so machine load affects both alike. Prints ms/step, images/s per process, the
ratio, and (with a known or given peak) the model FLOPs utilisation (MFU).

`--recipe-settings` switches on the BioCLIP recipe's settings for both implementations: local loss,
gather-with-grad, gradient checkpointing and autocast (`--precision fp16`, with a gradient scaler). Launched
with `torchrun --nproc_per_node N`, every process trains its own batch; features are gathered across processes
(nccl on GPUs, gloo on CPU) and both models are wrapped in DistributedDataParallel. `benchmarks/gpu_train.sh`
runs it on all GPUs of a machine.

MFU = model FLOPs of one step (forward + backward without recomputation, counted once with
`torch.utils.flop_counter` on this batch) / step time / peak FLOP/s of the device (dense fp16/bf16 tensor cores,
or `--peak-tflops`).

Example:
    python benchmarks/bench_train_step.py --model small --batch-size 32 --steps 10
    torchrun --nproc_per_node 8 benchmarks/bench_train_step.py --model bioclip --device cuda --batch-size 512 \\
        --recipe-settings --precision fp16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # open_clip, the reference: tests/support
from support.models import import_open_clip, save_open_clip  # noqa: E402

MODELS = {
    # Smoke runs (checks the script end to end in seconds).
    "tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    # Few-minute CPU runs.
    "small": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 112, "layers": 4, "width": 256, "patch_size": 16, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
    },
    # The released BioCLIP architecture (open_clip ViT-B-16, OpenAI's QuickGELU as in the recipe's init).
    "bioclip": {
        "embed_dim": 512, "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },  # fmt: skip
    # BioCLIP 2 (open_clip ViT-L-14).
    "bioclip-2": {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
    },
}
# Dense fp16/bf16 tensor-core peaks (TFLOP/s) by device name fragment.
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
               "L40S": 362.1, "A10G": 125.0, "L4": 121.0}  # fmt: skip


def setup_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, this process's device); initialises the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world_size, device


def build_pair(model_cfg: dict, device: str):
    """(open_clip model, BioCLIPModel) with identical weights, both in train mode on `device`."""
    from bioclip_hf import BioCLIPModel

    with tempfile.TemporaryDirectory() as tmp:
        reference = save_open_clip(Path(tmp), seed=0, safe_serialization=True, model_cfg=model_cfg)
        ours = BioCLIPModel.from_pretrained(tmp)
    return reference.to(device).train(), ours.to(device).train()


def make_batch(model_cfg: dict, batch_size: int, device: str, rank: int = 0):
    from bioclip_hf import load_tokenizer

    size = model_cfg["vision_cfg"]["image_size"]
    gen = torch.Generator().manual_seed(rank)
    pixels = torch.randn(batch_size, 3, size, size, generator=gen)
    captions = [f"a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus species{rank}x{i}." for i in range(batch_size)]
    ids = load_tokenizer()(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"]
    return pixels.to(device), ids.to(device)


def step_fns(reference, ours, pixels, ids, args, rank: int, world_size: int):
    """One training-step closure per implementation (returns the loss), same settings for both."""
    from bioclip_hf.training.config import TrainConfig
    from bioclip_hf.training.loss import ClipLoss
    from bioclip_hf.training.trainer import _enable_gradient_checkpointing, build_optimizer

    local, with_grad = args.recipe_settings or args.local_loss, args.recipe_settings or args.gather_with_grad
    if args.recipe_settings or args.grad_checkpointing:
        reference.set_grad_checkpointing(True)
        _enable_gradient_checkpointing(ours)  # what `bioclip-hf train` does
    loss_options = {"local_loss": local, "gather_with_grad": with_grad, "rank": rank, "world_size": world_size}
    ref_loss, our_loss = import_open_clip().loss.ClipLoss(**loss_options), ClipLoss(**loss_options)
    config = TrainConfig(learning_rate=1e-5)
    ref_opt, our_opt = build_optimizer(reference, config), build_optimizer(ours, config)
    if world_size > 1:
        ids_ = [int(args.device_index)] if args.device.startswith("cuda") else None
        reference = torch.nn.parallel.DistributedDataParallel(reference, device_ids=ids_)
        ours = torch.nn.parallel.DistributedDataParallel(ours, device_ids=ids_)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    device_type = args.device.split(":")[0]
    scalers = [torch.amp.GradScaler(device_type, enabled=args.precision == "fp16") for _ in range(2)]
    scale = (ours.module if world_size > 1 else ours).logit_scale

    def autocast():
        return torch.autocast(device_type=device_type, dtype=dtype) if dtype else contextlib.nullcontext()

    def update(loss, optimizer, scaler):
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def reference_step():
        with autocast():
            image, text, logit_scale = reference(pixels, ids)
            loss = ref_loss(image.float(), text.float(), logit_scale.float())
        return update(loss, ref_opt, scalers[0])

    def our_step():
        with autocast():
            out = ours(input_ids=ids, pixel_values=pixels)
            loss = our_loss(out.image_embeds.float(), out.text_embeds.float(), scale.exp().float())
        return update(loss, our_opt, scalers[1])

    return reference_step, our_step


def model_flops(model, pixels, ids) -> float:
    """FLOPs of one forward + backward of `model` on the batch (no recomputation), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, pixel_values=pixels)
        (out.image_embeds.float().sum() + out.text_embeds.float().sum()).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def peak_flops(device: str, given: float | None) -> float | None:
    if given:
        return given * 1e12
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--batch-size", type=int, default=32, help="images per process")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--recipe-settings", action="store_true",
                        help="local loss + gather-with-grad + gradient checkpointing (the BioCLIP recipe)")  # fmt: skip
    parser.add_argument("--local-loss", action="store_true")
    parser.add_argument("--gather-with-grad", action="store_true")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world_size, args.device = setup_distributed(args.device)
    args.device_index = args.device.split(":")[1] if ":" in args.device else 0
    model_cfg = MODELS[args.model]
    reference, ours = build_pair(model_cfg, args.device)
    pixels, ids = make_batch(model_cfg, args.batch_size, args.device, rank)
    flops = model_flops(ours, pixels, ids)  # before checkpointing is switched on: model FLOPs, not recomputation
    reference_step, our_step = step_fns(reference, ours, pixels, ids, args, rank, world_size)
    first = (reference_step(), our_step())
    for _ in range(args.warmup - 1):
        reference_step(), our_step()
    times: dict[str, list[float]] = {"open_clip": [], "bioclip_hf": []}
    pair = [("open_clip", reference_step), ("bioclip_hf", our_step)]
    for repeat in range(args.steps):
        for name, step in pair if repeat % 2 == 0 else pair[::-1]:  # alternate which goes first (ABBA)
            times[name].append(timed(step, args.device))
    if rank != 0:
        torch.distributed.destroy_process_group()
        return 0
    report(args, world_size, first, times, flops, peak_flops(args.device, args.peak_tflops))
    if world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


def report(args, world_size: int, first, times: dict[str, list[float]], flops: float, peak: float | None) -> None:
    settings = "local loss + gather-with-grad + grad checkpointing" if args.recipe_settings else "plain"
    print(f"first-step loss: open_clip {first[0]:.6f}  bioclip_hf {first[1]:.6f}  (same weights, same batch)")
    median = {name: statistics.median(values) for name, values in times.items()}
    unit = "per GPU" if args.device.startswith("cuda") else "per process"
    for name, seconds in median.items():
        mfu = f"  MFU {flops / seconds / peak:6.1%}" if peak else "  MFU n/a (unknown peak: --peak-tflops)"
        print(f"{name:>10}: {seconds * 1000:8.1f} ms/step  {args.batch_size / seconds:8.1f} images/s {unit}{mfu}")
    print(f"model FLOPs per step and process: {flops / 1e9:.2f} GFLOP"
          + (f"; device peak {peak / 1e12:.1f} TFLOP/s" if peak else ""))  # fmt: skip
    print(f"throughput ratio bioclip_hf / open_clip: {median['open_clip'] / median['bioclip_hf']:.3f} "
          f"(model={args.model}, batch={args.batch_size}/process x {world_size} process(es), device={args.device}, "
          f"precision={args.precision}, {settings})")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
