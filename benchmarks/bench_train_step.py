"""Train-step throughput: BioCLIPModel (transformers) + bioclip_hf ClipLoss vs open_clip's CLIP + its ClipLoss.

Both models hold the *same* weights (the open_clip model is converted on load) and see the same batch;
a step is forward (both towers), symmetric contrastive loss, backward and an AdamW update. Steps of the
two implementations are interleaved so machine load affects both alike. Prints images/s and the ratio.

Example:
    python benchmarks/bench_train_step.py --model small --batch-size 32 --steps 10
    python benchmarks/bench_train_step.py --model bioclip --batch-size 64 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import types

import torch

MODELS = {
    # Few-minute CPU runs.
    "small": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 112, "layers": 4, "width": 256, "patch_size": 16, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
    },
    # The released BioCLIP architecture (open_clip ViT-B-16).
    "bioclip": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },
}


def build_pair(model_cfg: dict, device: str):
    """(open_clip model, BioCLIPModel) with identical weights, both in train mode on `device`."""
    from open_clip.push_to_hf_hub import save_for_hf

    from bioclip_hf import BioCLIPModel
    from bioclip_hf.reference import import_open_clip

    open_clip = import_open_clip()
    torch.manual_seed(0)
    reference = open_clip.model.CLIP(**model_cfg)
    reference.visual.image_mean, reference.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    with tempfile.TemporaryDirectory() as tmp:
        no_files = types.SimpleNamespace(save_pretrained=lambda directory: None)
        save_for_hf(reference, no_files, model_cfg, tmp, safe_serialization=True)
        ours = BioCLIPModel.from_pretrained(tmp)
    return reference.to(device).train(), ours.to(device).train()


def make_batch(model_cfg: dict, batch_size: int, device: str):
    from bioclip_hf import load_tokenizer

    size = model_cfg["vision_cfg"]["image_size"]
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, size, size, generator=gen)
    captions = [f"a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus species{i}." for i in range(batch_size)]
    ids = load_tokenizer()(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"]
    return pixels.to(device), ids.to(device)


def step_fns(reference, ours, pixels, ids, precision: str, device: str):
    """One training-step closure per implementation (returns the loss)."""
    from bioclip_hf.loss import ClipLoss
    from bioclip_hf.reference import import_open_clip
    from bioclip_hf.train import build_optimizer
    from bioclip_hf.train_config import TrainConfig

    config = TrainConfig(learning_rate=1e-5)
    ref_loss, our_loss = import_open_clip().loss.ClipLoss(), ClipLoss()
    ref_opt, our_opt = build_optimizer(reference, config), build_optimizer(ours, config)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(device_type=device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()

    def reference_step():
        with autocast():
            image, text, scale = reference(pixels, ids)
            loss = ref_loss(image.float(), text.float(), scale.float())
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
        return loss.item()

    def our_step():
        with autocast():
            out = ours(input_ids=ids, pixel_values=pixels)
            loss = our_loss(out.image_embeds.float(), out.text_embeds.float(), ours.logit_scale.exp().float())
        loss.backward()
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)
        return loss.item()

    return reference_step, our_step


def timed(fn, device: str) -> tuple[float, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args(argv)

    model_cfg = MODELS[args.model]
    reference, ours = build_pair(model_cfg, args.device)
    pixels, ids = make_batch(model_cfg, args.batch_size, args.device)
    reference_step, our_step = step_fns(reference, ours, pixels, ids, args.precision, args.device)
    first = (reference_step(), our_step())
    print(f"first-step loss: open_clip {first[0]:.6f}  bioclip_hf {first[1]:.6f}  (same weights, same batch)")
    for _ in range(args.warmup - 1):
        reference_step(), our_step()
    times: dict[str, list[float]] = {"open_clip": [], "bioclip_hf": []}
    for _ in range(args.steps):
        times["open_clip"].append(timed(reference_step, args.device)[0])
        times["bioclip_hf"].append(timed(our_step, args.device)[0])
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in median.items():
        print(f"{name:>10}: {seconds * 1000:8.1f} ms/step  {args.batch_size / seconds:8.1f} images/s")
    print(f"throughput ratio bioclip_hf / open_clip: {median['open_clip'] / median['bioclip_hf']:.3f} "
          f"(model={args.model}, batch={args.batch_size}, device={args.device}, precision={args.precision})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
