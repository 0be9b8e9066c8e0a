"""LoRA vs full fine-tuning (`bioclip-hf finetune`'s training step): seconds per step, peak memory, trainable share.

A step is what `bioclip_hf.training.finetune` runs: the FLYP objective (each photo scored against the texts of all
classes; the class texts re-encoded through the text tower when it trains, i.e. in full fine-tuning), backward, and
an AdamW update. Both methods start from the same random weights of the real shape (ViT-B/16: BioCLIP; `--gpu`:
ViT-L/14, BioCLIP 2) and see the same batch of shared birds525 photos. Each method runs in its own process, so its
peak memory is its own; the parent prints both and the LoRA/full ratios.

CPU (default): seconds/step and peak RSS. `--gpu`: images/s and peak GPU memory under bf16 autocast (CUDA).
`--smoke`: a tiny model and two steps, to check the script end to end in seconds (tests/test_benchmarks_finetune_smoke.py).

Example:
    python benchmarks/bench_finetune.py --batch-size 8 --classes 32 --steps 5
    python benchmarks/bench_finetune.py --gpu --batch-size 64 --classes 100 --steps 20 --grad-checkpointing
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fixtures import bird_photos  # noqa: E402

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _config(args: argparse.Namespace):
    from bioclip_hf import BioCLIPConfig

    if args.smoke:
        return BioCLIPConfig.from_open_clip(TINY), "tiny (smoke)"
    if args.gpu:
        return BioCLIPConfig.from_preset("bioclip-2"), "ViT-L/14 (bioclip-2 shapes, random weights)"
    return BioCLIPConfig.from_preset("bioclip"), "ViT-B/16 (bioclip shapes, random weights)"


def _batch(args: argparse.Namespace, size: int, device: str):
    """(pixels, label ids, class prompts) from the shared photos: `batch_size` photos of `classes` species."""
    import numpy as np
    import torch

    from bioclip_hf import BioCLIPImageProcessor
    from bioclip_hf.models.bioclip.image_decoding import decode_image

    photos = bird_photos(max(args.batch_size, args.classes))
    species = sorted({Path(p).parent.name for p in photos})[: args.classes]
    prompts = [f"a photo of {name.lower()}." for name in species]
    transform = BioCLIPImageProcessor(size=size).transform
    chosen = photos[: args.batch_size]
    pixels = torch.from_numpy(np.stack([transform(decode_image(p)) for p in chosen])).to(device)
    labels = torch.tensor([min(species.index(Path(p).parent.name), args.classes - 1) if Path(p).parent.name in species
                           else 0 for p in chosen], device=device)  # fmt: skip
    return pixels, labels, prompts


def measure(method: str, args: argparse.Namespace, queue) -> None:
    """Child process: build the model for `method`, time `steps` steps after `warmup`, report to `queue`."""
    import contextlib
    from types import SimpleNamespace

    import torch

    from bioclip_hf import BioCLIPImageProcessor, BioCLIPModel, BioCLIPProcessor, load_tokenizer
    from bioclip_hf.training.finetune_eval import class_embeddings
    from bioclip_hf.training.finetune_methods import (
        FlypModule,
        apply_lora,
        flyp_loss,
        set_trainable,
        tokenize_classes,
        trainable_share,
    )
    from bioclip_hf.training.trainer import _enable_gradient_checkpointing, build_optimizer

    device = "cuda" if args.gpu else "cpu"
    config, _ = _config(args)
    torch.manual_seed(0)
    model = BioCLIPModel(config).to(device)
    size = config.vision_config.image_size
    pixels, labels, prompts = _batch(args, size, device)
    processor = BioCLIPProcessor(BioCLIPImageProcessor(size=size), load_tokenizer())
    embeds = class_embeddings(model, processor, prompts).to(device)
    if method == "lora":
        apply_lora(model, args.lora_rank, 2.0 * args.lora_rank, 0.0, ["q_proj", "k_proj", "v_proj", "out_proj"], text=False)
    else:
        set_trainable(model, "full")
    if args.grad_checkpointing:
        _enable_gradient_checkpointing(model)
    module = FlypModule(model, tokenize_classes(processor, prompts).to(device), embeds).train()
    trainable, total = trainable_share(module)
    optimizer = build_optimizer(module, SimpleNamespace(learning_rate=1e-5, weight_decay=0.1, adam_beta1=0.9,
                                                         adam_beta2=0.999, adam_epsilon=1e-8))  # fmt: skip
    autocast = torch.autocast("cuda", torch.bfloat16) if args.gpu else contextlib.nullcontext()
    times = []
    for step in range(args.warmup + args.steps):
        if args.gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = flyp_loss(module(pixels).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.gpu:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak_gpu = torch.cuda.max_memory_allocated() if args.gpu else 0
    queue.put({"seconds": statistics.median(times), "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "gpu": peak_gpu, "trainable": trainable, "total": total, "loss": float(loss.detach())})  # fmt: skip


def run_method(method: str, args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=measure, args=(method, args, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise RuntimeError(f"{method} run failed with exit code {process.exitcode}")
    return result


def report(method: str, result: dict, args: argparse.Namespace) -> str:
    share = result["trainable"] / result["total"]
    rate = args.batch_size / result["seconds"]
    memory = f"peak GPU memory {result['gpu'] / 2**30:.2f} GiB" if args.gpu else f"peak RSS {result['rss'] / 2**20:.0f} MiB"
    return (f"{method}: {result['seconds']:.3f} s/step  {rate:.1f} images/s  {memory}  trainable "
            f"{100 * share:.2f}% ({result['trainable'] / 1e6:.2f}M of {result['total'] / 1e6:.1f}M)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="ViT-L/14 on CUDA with bf16 autocast")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classes", type=int, default=32, help="class texts every photo is scored against")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.classes, args.steps, args.warmup = 4, 4, 2, 1
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("--gpu needs a CUDA device")
    _, name = _config(args)
    device = "cuda" if args.gpu else "cpu"
    print(f"device={device} model={name} batch={args.batch_size} classes={args.classes} steps={args.steps} "
          f"lora_rank={args.lora_rank} grad_checkpointing={args.grad_checkpointing}")  # fmt: skip
    results = {}
    for method in ("lora", "full"):
        results[method] = run_method(method, args)
        print(report(method, results[method], args), flush=True)
    lora, full = results["lora"], results["full"]
    memory_key = "gpu" if args.gpu else "rss"
    print(f"lora/full: time per step {lora['seconds'] / full['seconds']:.2f}x  peak memory "
          f"{lora[memory_key] / full[memory_key]:.2f}x  trainable parameters {lora['trainable'] / full['trainable']:.4f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
