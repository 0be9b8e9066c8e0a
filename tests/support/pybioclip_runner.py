"""Run the same predictions with pybioclip or with bioclip-hf and dump them as JSON (used by test_inference_pybioclip_parity).

Usage: python pybioclip_runner.py {pybioclip,ours} IMAGES.txt OUT.json
Run in a fresh process with HF_HUB_OFFLINE=1 and HF_HUB_CACHE / HF_HOME pointing at the shared cache: both tools load
`imageomics/bioclip` and its TreeOfLife-10M index by their normal ids. Output per tool, in image order:
{"tol": {rank: [[[lineage...], score], ...] per image}, "species_api": ..., "labels": ..., "bins": ...}.
"""

from __future__ import annotations

import json
import sys

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
LABELS = ["duck", "Corvus corax", "a songbird with red feathers", "bird of prey", "hummingbird", "penguin"]
BINS = {"duck": "waterfowl", "Corvus corax": "corvid", "a songbird with red feathers": "songbird",
        "bird of prey": "raptor", "hummingbird": "songbird", "penguin": "waterfowl"}  # fmt: skip
K = 5


def pybioclip_lineage(record: dict, rank: str) -> list[str]:
    names = [record[r] for r in RANKS[: RANKS.index(rank)]]
    return names + [record["species_epithet"] if rank == "species" else record[rank]]


def run_pybioclip(images: list[str]) -> dict:
    from bioclip._constants import Rank
    from bioclip.predict import CustomLabelsBinningClassifier, CustomLabelsClassifier, TreeOfLifeClassifier

    model = "hf-hub:imageomics/bioclip"
    classifier = TreeOfLifeClassifier(model_str=model, device="cpu")
    # predict() at each rank = these calls on one probability matrix (pybioclip's own code; images encoded once).
    probs = classifier.create_batched_probabilities_for_images(images, classifier.get_txt_embeddings(), batch_size=10)
    tol = {}
    for rank in Rank:
        name, rows = rank.get_label(), []
        for i, image in enumerate(images):
            key = classifier.make_key(image, i)
            p = probs[key].cpu()
            if rank == Rank.SPECIES:
                records = classifier.format_species_probs(key, p, K)
            else:
                records = classifier.format_grouped_probs(key, p, rank, 1e-9, K)
            rows.append([[pybioclip_lineage(r, name), r["score"]] for r in records])
        tol[name] = rows
    public = classifier.predict(images[:4], Rank.SPECIES, k=K)
    labels = CustomLabelsClassifier(cls_ary=LABELS, model_str=model, device="cpu").predict(images, k=None)
    bins = CustomLabelsBinningClassifier(cls_to_bin=BINS, model_str=model, device="cpu").predict(images, k=None)
    return {
        "tol": tol,
        "species_api": [[r["file_name"], pybioclip_lineage(r, "species"), r["score"]] for r in public],
        "labels": [[r["file_name"], r["classification"], r["score"]] for r in labels],
        "bins": [[r["file_name"], r["classification"], r["score"]] for r in bins],
    }


def run_ours(images: list[str]) -> dict:
    from bioclip_hf.inference.classify import CustomLabelsClassifier, TreeOfLifeClassifier

    common = dict(model_name_or_path="imageomics/bioclip", device="cpu", batch_size=10, preprocess="pybioclip",
                  dtype="float32")  # identical answers need float32 (auto may pick bf16 on AVX512-BF16/AMX CPUs)
    classifier = TreeOfLifeClassifier(**common)  # index: the model's released one, imageomics/TreeOfLife-10M
    keys, features = classifier.embed_images(images)
    assert keys == images, "an image was skipped"
    tol = {}
    for rank in RANKS:
        batch = classifier.index.predict(features, classifier.logit_scale, rank, K)
        tol[rank] = [[[list(taxon.lineage(rank)), score] for taxon, score in top] for top in batch]
    public = classifier.predict(images[:4], rank="species", k=K)
    labels = CustomLabelsClassifier(LABELS, **common).predict(images, k=None)
    bins = CustomLabelsClassifier(list(BINS), bins=BINS, **common).predict(images, k=None)
    return {
        "tol": tol,
        "species_api": [[r["file"], [r[x] for x in RANKS[:-1]] + [r["species_epithet"]], r["score"]] for r in public],
        "labels": [[r["file"], r["label"], r["score"]] for r in labels],
        "bins": [[r["file"], r["label"], r["score"]] for r in bins],
    }


def main(argv: list[str]) -> int:
    tool, images_file, out = argv
    images = [line for line in open(images_file, encoding="utf-8").read().splitlines() if line]
    result = run_pybioclip(images) if tool == "pybioclip" else run_ours(images)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
