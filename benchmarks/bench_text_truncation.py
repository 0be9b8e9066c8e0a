"""Text embedding speed-up from end-of-text truncation + length sorting, on real taxa names, vs the full 77-token pass.

Setup (defaults): the BioCLIP ViT-B/16 text tower (random weights: speed does not depend on them), the species of
`../shared/data/birds525/labels.csv` as the release recipe writes them ("{scientific name} {common name}", e.g.
"Malacocincla abbotti Abbotts Babbler"), every 4th of the 80 OpenAI templates (20 per name), batches of 256 texts,
CPU float32. Both paths run `encode_prompts` (template mean + L2 norms); the reference passes `truncate=False`
(every text padded to 77 tokens, as open_clip and the release script run). Runs are interleaved; medians reported;
the embeddings are checked to agree (max |diff| printed).

Run: python benchmarks/bench_text_truncation.py [--species 32] [--template-step 4] [--repeats 3] [--labels CSV]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "birds525" / "labels.csv"


def species_names(labels: Path, count: int) -> list[str]:
    """Distinct "scientific common" strings from a labels CSV (file, common_name, scientific_name)."""
    with labels.open(newline="", encoding="utf-8") as handle:
        rows = {(row["scientific_name"], row["common_name"]) for row in csv.DictReader(handle)}
    return [f"{scientific} {common}" for scientific, common in sorted(rows)][:count]


def main(argv: list[str] | None = None) -> int:
    from bioclip_hf import BioCLIPConfig, BioCLIPModel, BioCLIPProcessor, load_tokenizer
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPImageProcessor
    from bioclip_hf.treeoflife.taxonomy import OPENAI_TEMPLATES
    from bioclip_hf.treeoflife.text_embedding import encode_prompts, token_lengths

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--species", type=int, default=32)
    parser.add_argument("--template-step", type=int, default=4, help="use every N-th of the 80 OpenAI templates")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.labels.is_file():
        raise SystemExit(f"labels not found: {args.labels} (pass --labels)")

    torch.manual_seed(0)
    model = BioCLIPModel(BioCLIPConfig.from_preset("bioclip")).eval()
    processor = BioCLIPProcessor(BioCLIPImageProcessor(), load_tokenizer())
    names = species_names(args.labels, args.species)
    templates = OPENAI_TEMPLATES[:: args.template_step]
    texts = [template.format(name) for name in names for template in templates]
    lengths = token_lengths(processor, texts)
    print(f"{len(names)} species x {len(templates)} templates = {len(texts)} texts; tokens incl. start/end: "
          f"mean {lengths.mean():.1f}, max {lengths.max()} (full pass: 77); torch threads {torch.get_num_threads()}")  # fmt: skip

    def run(truncate: bool) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        out = encode_prompts(model, processor, names, templates, batch_size=args.batch_size, truncate=truncate)
        return time.perf_counter() - start, out

    run(True)  # warm-up (allocator, kernels)
    fast_times, full_times = [], []
    for _ in range(args.repeats):
        seconds, fast = run(True)
        fast_times.append(seconds)
        seconds, full = run(False)
        full_times.append(seconds)
    fast_s, full_s = statistics.median(fast_times), statistics.median(full_times)
    print(f"truncated + sorted: {fast_s:7.2f}s ({len(texts) / fast_s:7.1f} texts/s, median of {args.repeats})")
    print(f"full 77 tokens    : {full_s:7.2f}s ({len(texts) / full_s:7.1f} texts/s)")
    print(f"speed-up {full_s / fast_s:.2f}x; max |difference| of the unit embeddings {(fast - full).abs().max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
