"""Image-embedding throughput: BioCLIPModel vs open_clip, same random ViT-B-16 weights, same batch, CPU.

Run: python benchmarks/bench_image_embedding.py [--batch-size 16] [--repeats 5] [--model ViT-B-16]
Prints images/s for each implementation and the ratio ours/open_clip (target >= 1.0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # open_clip, the reference: tests/support
from support.models import import_open_clip  # noqa: E402


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture name")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args(argv)

    import torch

    from bioclip_hf import BioCLIPConfig, BioCLIPModel
    from bioclip_hf.models.bioclip.open_clip_format import open_clip_to_hf_state_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    open_clip = import_open_clip()
    torch.manual_seed(0)
    reference = open_clip.create_model(args.model).eval()
    config = BioCLIPConfig.from_open_clip(open_clip.get_model_config(args.model))
    ours = BioCLIPModel.from_pretrained(None, config=config, state_dict=open_clip_to_hf_state_dict(reference.state_dict()))
    ours.eval()
    size = config.vision_config.image_size
    pixels = torch.randn(args.batch_size, 3, size, size)

    with torch.inference_mode():
        diff = (ours.encode_image(pixels) - reference.encode_image(pixels)).abs().max().item()
        t_ref = _time(lambda: reference.encode_image(pixels), args.repeats)
        t_ours = _time(lambda: ours.encode_image(pixels), args.repeats)
    n = args.batch_size
    print(f"model={args.model} batch={n} threads={torch.get_num_threads()} attn={ours.config._attn_implementation}")
    print(f"max |ours - open_clip| = {diff:.2e}")
    print(f"open_clip : {n / t_ref:8.2f} images/s")
    print(f"bioclip-hf: {n / t_ours:8.2f} images/s")
    print(f"ratio bioclip-hf/open_clip = {t_ref / t_ours:.3f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
