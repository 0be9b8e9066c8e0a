"""Streaming input pipeline throughput: bioclip_hf.data.stream (datasets streaming) vs a plain webdataset loader.

Both read the same TreeOfLife-style shards (built here with dataset_scripts/build_shards.py from the real bird
photos in ../shared/data/birds525 when present, else from synthetic images), decode the JPEG, draw a text type,
apply the same BioCLIP preprocessing (`image_processor.transform` + `tokenize`) and batch. The ratio
ours/webdataset shows the cost of the `datasets` streaming layer (target >= 0.8).

Run: python benchmarks/bench_streaming.py [--num-images 512] [--batch-size 64] [--num-workers 0] [--repeats 3] [--hub]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIRDS = REPO_ROOT.parent / "shared" / "data" / "birds525"


def write_catalog(folder: Path, num_images: int) -> tuple[Path, str]:
    """A build_shards catalog of real bird photos (if available) or synthetic 256x256 JPEGs."""
    labels = BIRDS / "labels.csv"
    rows = []
    if labels.is_file():
        with labels.open() as fh:
            photos = list(csv.DictReader(fh))
        for index in range(num_images):
            photo = photos[index % len(photos)]
            genus, _, epithet = photo["scientific_name"].partition(" ")
            rows.append({"key": f"{index:07d}", "image": str(BIRDS / photo["file"]), "kingdom": "Animalia",
                         "phylum": "Chordata", "class": "Aves", "genus": genus, "species": epithet,
                         "common_name": photo["common_name"], "source": "birds525"})  # fmt: skip
        origin = "birds525 photos"
    else:
        from PIL import Image

        (folder / "images").mkdir(parents=True, exist_ok=True)
        rng = random.Random(0)
        for index in range(num_images):
            path = folder / "images" / f"{index}.jpg"
            noise = bytes(rng.randrange(256) for _ in range(64 * 64 * 3))
            Image.frombytes("RGB", (64, 64), noise).resize((256, 256)).save(path, quality=90)
            rows.append({"key": f"{index:07d}", "image": str(path), "kingdom": "Animalia", "genus": "Corvus",
                         "species": f"sp{index % 50}", "common_name": f"bird {index % 50}",
                         "source": "synthetic"})  # fmt: skip
        origin = "synthetic 256x256 images"
    catalog = folder / "catalog.csv"
    with catalog.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=sorted({key for row in rows for key in row}))
        writer.writeheader()
        writer.writerows(rows)
    return catalog, origin


def webdataset_loader(shard_dir: Path, processor, batch_size: int, num_workers: int, seed: int):
    """The reference: webdataset's own pipeline with the same decoding, text choice and preprocessing."""
    import numpy as np
    import torch
    import webdataset as wds

    from bioclip_hf.data.stream import TEXT_FIELDS
    from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, TEXT_TYPES, apply_template

    urls = sorted(str(path) for path in shard_dir.glob("train/*.tar"))
    rng = random.Random(seed)

    def to_pair(sample):
        text_type = TEXT_TYPES[rng.randrange(len(TEXT_TYPES))]
        text = apply_template(DEFAULT_TEMPLATE, sample[TEXT_FIELDS[text_type]])
        return processor.image_processor.transform(sample["jpg"]), text

    def collate(pairs):
        pixels, texts = zip(*pairs)
        return {"pixel_values": torch.from_numpy(np.stack(pixels)),
                "input_ids": processor.tokenize(list(texts))["input_ids"]}  # fmt: skip

    dataset = (wds.WebDataset(urls, shardshuffle=False, empty_check=False, workersplitter=wds.split_by_worker)
               .decode("pil").map(to_pair).batched(batch_size, collation_fn=collate, partial=True))  # fmt: skip
    return wds.WebLoader(dataset, batch_size=None, num_workers=num_workers)


def _count(make_loader) -> tuple[float, int]:
    start = time.perf_counter()
    count = sum(len(batch["input_ids"]) for batch in make_loader())
    return count / (time.perf_counter() - start), count


def _compare(loaders: dict, repeats: int) -> dict[str, tuple[float, int]]:
    """Median samples/s per loader over `repeats` full passes, interleaved so CPU noise hits both alike.

    Each pass builds a fresh loader (as an epoch would); one untimed warm-up pass each comes first.
    """
    for make_loader in loaders.values():
        _count(make_loader)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, make_loader in loaders.items():
            rate, counts[name] = _count(make_loader)
            rates[name].append(rate)
    return {name: (statistics.median(values), counts[name]) for name, values in rates.items()}


def _push_to_local_hub(shard_dir: Path, tmp: Path, stack: contextlib.ExitStack) -> str:
    """Start the test Hub, point the HF clients at it and push the shards; returns the repo id."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from push_dataset import push_dataset
    from support.hub_server import HubServer, hub_environment

    server = stack.enter_context(HubServer())
    stack.enter_context(hub_environment(server.url, cache_dir=tmp / "hf_cache"))
    push_dataset(shard_dir, "bench/tol-shards", token="bench-token")
    return "bench/tol-shards"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224, help="processor resize/crop size")
    parser.add_argument("--shuffle-buffer", type=int, default=0, help="0 = same sequential order as webdataset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hub", action="store_true",
                        help="push the shards to the local test Hub (tests/support/hub_server.py) and stream ours over HTTP; "
                             "webdataset keeps reading the local files")  # fmt: skip
    args = parser.parse_args(argv)

    import torch

    sys.path.insert(0, str(REPO_ROOT / "dataset_scripts"))
    from build_shards import BuildConfig, build_shards

    from bioclip_hf import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer
    from bioclip_hf.data.stream import build_dataloader

    torch.set_num_threads(1)  # input pipelines are per-core work; keep the comparison about the loaders
    processor = BioCLIPProcessor(BioCLIPImageProcessor(size=args.image_size), load_tokenizer())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        catalog, origin = write_catalog(tmp, args.num_images)
        report = build_shards(catalog, tmp / "shards", BuildConfig(shard_size=args.shard_size))
        shard_dir = tmp / "shards"
        with contextlib.ExitStack() as stack:
            source = _push_to_local_hub(shard_dir, tmp, stack) if args.hub else str(shard_dir)
            results = _compare({
                "webdataset": lambda: webdataset_loader(shard_dir, processor, args.batch_size, args.num_workers, 0),
                "bioclip-hf": lambda: build_dataloader(source, processor, args.batch_size,
                                                       shuffle_buffer=args.shuffle_buffer,
                                                       num_workers=args.num_workers)[0],
            }, args.repeats)  # fmt: skip
    (ref_rate, ref_n), (ours_rate, ours_n) = results["webdataset"], results["bioclip-hf"]
    print(f"shards: {len(report.shards)} x {args.shard_size} samples of {origin}; batch={args.batch_size} "
          f"workers={args.num_workers} image={args.image_size}px repeats={args.repeats}")  # fmt: skip
    print(f"webdataset  : {ref_rate:8.1f} samples/s ({ref_n} samples/pass)")
    where = "from the local test Hub over HTTP" if args.hub else "local shards"
    print(f"bioclip-hf  : {ours_rate:8.1f} samples/s ({ours_n} samples/pass, datasets streaming, {where})")
    print(f"ratio bioclip-hf/webdataset = {ours_rate / ref_rate:.3f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
