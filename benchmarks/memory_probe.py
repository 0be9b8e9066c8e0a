"""Where the peak RSS of a Tree-of-Life `predict` goes, phase by phase, in one process (run by
`bench_batch_memory.py --model bioclip-2`; prints one JSON line).

Phases, each measured as the growth of resident memory (VmRSS) and of its high-water mark (VmHWM, reset before each
phase through /proc/self/clear_refs): the Python/torch/transformers baseline (imports), loading the classifier
(model weights, precision applied, index opened), encoding a batch (weights touched on first use + activations),
and scoring it against the index (logits, probabilities, the mapped chunks), then the batch's peak as a whole.

Run: python benchmarks/memory_probe.py PHOTO... [--model imageomics/bioclip-2] [--dtype auto] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import time


def status(key: str) -> int:
    """Bytes of `key` (VmRSS, VmHWM, RssAnon, RssFile) in /proc/self/status."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Phases:
    """Resident memory after each phase and each phase's own peak above its start."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.start = 0

    def begin(self) -> None:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM := VmRSS
        self.start, self.clock = status("VmRSS"), time.perf_counter()

    def end(self, name: str) -> None:
        self.rows.append({"phase": name, "rss": status("VmRSS"), "growth": status("VmRSS") - self.start,
                          "peak_growth": status("VmHWM") - self.start, "peak": status("VmHWM"),
                          "anon": status("RssAnon"), "file": status("RssFile"),
                          "seconds": time.perf_counter() - self.clock})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--model", default="imageomics/bioclip-2")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rank", default="species")
    args = parser.parse_args(argv)
    phases = Phases()
    phases.begin()
    import torch

    import bioclip_hf.models.bioclip.modeling_bioclip  # noqa: F401  (transformers' model code: part of the baseline)
    from bioclip_hf.inference.classify import TreeOfLifeClassifier
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex

    phases.end("python + torch + transformers + bioclip_hf imports")
    phases.begin()
    index = TreeOfLifeIndex.from_registry(args.model)
    phases.end("index opened (taxa columns, mapped matrix)")
    phases.begin()
    clf = TreeOfLifeClassifier(index, model_name_or_path=args.model, device="cpu", num_workers=0, dtype=args.dtype)
    phases.end(f"model loaded, weights {clf.precision.weights}")
    pixels = torch.stack([torch.as_tensor(clf.processor.image_processor.transform(_open(p))) for p in args.photos])
    pixels = pixels[: args.batch_size]
    phases.begin()
    features = clf.encode_pixels(pixels)
    phases.end(f"encode {len(pixels)} images (weights touched + activations)")
    phases.begin()
    clf.predict_features([str(i) for i in range(len(features))], features, k=5, rank=args.rank)
    phases.end(f"score {len(pixels)} images, {args.rank} (index in {clf.index_precision()})")
    phases.begin()
    clf.predict_features([str(i) for i in range(len(features))], clf.encode_pixels(pixels), k=5, rank=args.rank)
    phases.end("a second batch, end to end")
    print(json.dumps({"precision": clf.precision.to_dict(), "index_precision": clf.index_precision(),
                      "taxa": len(clf.index), "phases": phases.rows}))  # fmt: skip
    return 0


def _open(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


if __name__ == "__main__":
    raise SystemExit(main())
