"""Predict throughput on one device at float32 / float16 / bfloat16 (images/s), the Python half of gpu_predict.sh.

A random ViT-B-16 BioCLIP (or `--tiny` for a CPU smoke test) and a random index of `--taxa` species live on
`--device`. For each dtype, `TreeOfLifeClassifier.iter_predict` runs over `--images` photos (birds525, repeated,
or generated JPEGs when absent): decoding in `--num-workers` DataLoader processes, pinned batches copied without
blocking, the image encoder under autocast, probabilities and top-k in float32. Printed per dtype: end-to-end
images/s, encoder-only images/s on a ready batch (the ceiling decoding must keep up with), and the top-5 agreement
with float32. The `auto` row is what `--dtype auto` (the default) picks on this device (float32 on CUDA) and why.
The `int8` row: dynamic int8 (`--quantize int8`) runs on the CPU only, so on a GPU it says N/A and measures this
machine's CPU instead (`--cpu-images` photos, float32 against int8, same process). pybioclip has no half precision,
so there is no peer row here.

Run: python benchmarks/gpu_predict.py --device cuda --batch-size 256 --images 8192 --num-workers 16
     python benchmarks/gpu_predict.py --device cpu --tiny --images 8 --batch-size 4 --taxa 100   (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic Tree of Life: tests/support
from support.treeoflife import realistic_taxa, write_tol_release  # noqa: E402

TINY_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "patch_size": 2, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}  # fmt: skip


def build_classifier(args: argparse.Namespace, scratch: Path):
    """Random model + processor, and a random index written in the released TreeOfLife layout and loaded from it;
    returns (classifier, index folder)."""
    import torch

    from bioclip_hf import BioCLIPConfig, BioCLIPImageProcessor, BioCLIPModel, BioCLIPProcessor, load_tokenizer
    from bioclip_hf.inference.classify import TreeOfLifeClassifier

    config = BioCLIPConfig.from_open_clip(TINY_CFG) if args.tiny else BioCLIPConfig.from_preset("bioclip")
    torch.manual_seed(0)
    model = BioCLIPModel(config).eval()
    processor = BioCLIPProcessor(BioCLIPImageProcessor(size=config.vision_config.image_size), load_tokenizer())
    index = write_tol_release(scratch, realistic_taxa(args.taxa), config.projection_dim, seed=1)
    classifier = TreeOfLifeClassifier(index=index, model=model, processor=processor, device=args.device,
                                      batch_size=args.batch_size, num_workers=args.num_workers)  # fmt: skip
    return classifier, index


def cpu_classifiers(classifier, index: Path, args: argparse.Namespace):
    """(float32, int8) classifiers on the CPU sharing `classifier`'s weights (the int8 one quantizes a copy)."""
    import copy

    from bioclip_hf.inference.classify import TreeOfLifeClassifier
    from bioclip_hf.models.quantize import quantize_image_encoder

    model = copy.deepcopy(classifier.model).cpu().float()
    quantized = quantize_image_encoder(copy.deepcopy(model), cache=False)
    common = dict(index=index, processor=classifier.processor, device="cpu", batch_size=min(args.batch_size, 32),
                  num_workers=args.num_workers, dtype="float32")  # fmt: skip
    return TreeOfLifeClassifier(model=model, **common), TreeOfLifeClassifier(model=quantized, **common)


def int8_row(classifier, index: Path, paths: list[str], reference: list[frozenset], args: argparse.Namespace) -> str:
    """The int8 line: measured on `--device` when that is the CPU, else N/A there and measured on this CPU."""
    import torch

    plain, int8 = cpu_classifiers(classifier, index, args)
    if classifier.device.type == "cpu":
        seconds, predictions = top5(int8, paths)
        agree = sum(len(a & b) for a, b in zip(predictions, reference)) / (5 * len(reference))
        return (f"{'int8':9s}: {len(paths) / seconds:9.1f} images/s end to end, encoder alone "
                f"{encoder_only(int8):9.1f} images/s; top-5 agreement with float32 {agree:.1%}")  # fmt: skip
    if args.cpu_images < 1:
        return f"{'int8':9s}: N/A on {classifier.device.type} (dynamic int8 runs on the CPU; --cpu-images 0: not measured)"
    sample = paths[: args.cpu_images]
    top5(plain, sample[: plain.batch_size])  # warm-up
    (cpu32, ref), (cpu8, got) = top5(plain, sample), top5(int8, sample)
    agree = sum(len(a & b) for a, b in zip(got, ref)) / (5 * len(ref))
    return (f"{'int8':9s}: N/A on {classifier.device.type} (dynamic int8 runs on the CPU); this machine's CPU "
            f"({torch.get_num_threads()} threads, {len(sample)} images): float32 {len(sample) / cpu32:.1f} images/s, "
            f"int8 {len(sample) / cpu8:.1f} images/s ({cpu32 / cpu8:.2f}x); top-5 agreement with CPU float32 {agree:.1%}")  # fmt: skip


def photo_paths(count: int, folder: Path | None, scratch: Path) -> list[str]:
    """`count` paths: birds525 photos (repeated as needed), else random 224x224 JPEGs written to `scratch`."""
    if folder is not None and folder.is_dir():
        found = sorted(str(p) for p in folder.rglob("*.jpg"))
    else:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        found = []
        for i in range(min(count, 64)):
            path = scratch / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(path, quality=90)
            found.append(str(path))
    return [found[i % len(found)] for i in range(count)]


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def top5(classifier, paths: list[str]) -> tuple[float, list[frozenset]]:
    """(seconds, the top-5 species of each image) for one full prediction pass."""
    synchronize(str(classifier.device))
    start = time.perf_counter()
    batches = [batch for batch in classifier.iter_predict(paths, k=5, rank="species", min_prob=0.0)]
    synchronize(str(classifier.device))
    seconds = time.perf_counter() - start
    records = [record for batch in batches for record in batch]
    return seconds, [frozenset(r["species"] for r in records[i : i + 5]) for i in range(0, len(records), 5)]


def encoder_only(classifier, repeats: int = 5) -> float:
    """Images/s of the image encoder alone on a batch already on the device."""
    import torch

    size = classifier.model.config.vision_config.image_size
    pixels = torch.randn(classifier.batch_size, 3, size, size, device=classifier.device)
    classifier.encode_pixels(pixels)  # warm-up (kernel selection, autocast caches)
    synchronize(str(classifier.device))
    start = time.perf_counter()
    for _ in range(repeats):
        classifier.encode_pixels(pixels)
    synchronize(str(classifier.device))
    return repeats * classifier.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--taxa", type=int, default=450_000)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16", "auto"])
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True, help="print the int8 row")
    parser.add_argument("--cpu-images", type=int, default=64, help="images for the int8 row's CPU measurement on a GPU machine")
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "birds525")
    parser.add_argument("--tiny", action="store_true", help="tiny random model (CPU smoke test)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        classifier, index = build_classifier(args, Path(scratch))
        paths = photo_paths(args.images, args.photos, Path(scratch))
        print(f"device={classifier.device} batch={args.batch_size} images={len(paths)} workers={args.num_workers} "
              f"taxa={args.taxa:,} model={'tiny' if args.tiny else 'ViT-B-16'}")  # fmt: skip
        reference = None
        for dtype in args.dtypes:
            classifier.optimize(dtype=dtype)
            top5(classifier, paths[: args.batch_size])  # warm-up: workers, kernels, autocast
            seconds, predictions = top5(classifier, paths)
            reference = reference or predictions
            agree = sum(len(a & b) for a, b in zip(predictions, reference)) / (5 * len(reference))
            chose = f" (auto = {classifier.precision.dtype}: {classifier.precision.reason})" if dtype == "auto" else ""
            print(f"{dtype:9s}: {len(paths) / seconds:9.1f} images/s end to end, encoder alone "
                  f"{encoder_only(classifier):9.1f} images/s; top-5 agreement with {args.dtypes[0]} {agree:.1%}{chose}")  # fmt: skip
        if args.int8:
            print(int8_row(classifier, index, paths, reference, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
