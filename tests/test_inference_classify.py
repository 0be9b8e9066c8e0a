"""Classifiers on a tiny random model: Tree of Life at every rank, custom labels (+cache, bins), few-shot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.images import write_image
from support.treeoflife import random_taxa, write_index_release

from bioclip_hf.inference.classify import (
    CustomLabelsBinningClassifier,
    CustomLabelsClassifier,
    FewShotClassifier,
    TreeOfLifeClassifier,
    collect_images,
    load_label_embeddings,
    records_to_dataframe,
)
from bioclip_hf.inference.fewshot import fit_simpleshot
from bioclip_hf.treeoflife.index import TreeOfLifeIndex
from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, RANKS


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """3 good images (one nested), one corrupt, one non-image file."""
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(["a.jpg", "b.png", "nested/deeper/c.JPG"]):
        write_image(root / name, i)
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def tiny_index(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    return TreeOfLifeIndex.build(random_taxa(40), model, processor, templates=(DEFAULT_TEMPLATE,), progress=False)


def test_collect_images_recursive_and_missing(photo_dir):
    images, errors = collect_images([photo_dir, photo_dir / "missing.jpg"])
    assert [p.split("photos")[-1][2:] for p in images] == ["a.jpg", "b.png", "broken.jpg", "nested/deeper/c.JPG"]
    assert errors == [{"file": str(photo_dir / "missing.jpg"), "error": f"image not found: {photo_dir / 'missing.jpg'}"}]


@pytest.mark.float_sensitive
@pytest.mark.parametrize("rank", RANKS)
def test_tree_of_life_predict_every_rank(tiny_model_and_processor, tiny_index, photo_dir, rank):
    model, processor = tiny_model_and_processor
    clf = TreeOfLifeClassifier(index=tiny_index, model=model, processor=processor, batch_size=2)
    records = clf.predict([photo_dir], rank=rank, k=3, min_prob=0)
    assert [e["file"] for e in clf.errors] == [str(photo_dir / "broken.jpg")]  # corrupt file skipped, batch goes on
    assert len(records) == 3 * min(3, len(tiny_index.groups(rank))) and {r["rank"] for r in records} == {rank}
    depth = RANKS.index(rank)
    expected_keys = ["file", "rank", *RANKS[:depth], *(["species_epithet"] if rank == "species" else []), rank,
                     "common_name", "taxon", "score"]  # fmt: skip
    assert list(records[0]) == expected_keys
    # Scores are the summed species probabilities of each clade, in decreasing order per image. The features come
    # from the same batches as predict's, so only the summation differs: index_add_ vs a sum over the members,
    # <= 40 float32 probabilities of total <= 1 -> at most 40 x 2**-24 = 2.4e-6 apart in any order (abs=1e-5).
    keys, features = clf.embed_images(photo_dir)
    probs = tiny_index.probabilities(features, clf.logit_scale)[keys.index(records[0]["file"])]
    lineage = tuple(records[0][r] for r in RANKS[:depth]) + ((records[0]["genus"], records[0]["species_epithet"])[1:]
                                                            if rank == "species" else (records[0][rank],))  # fmt: skip
    members = [i for i, t in enumerate(tiny_index.taxa) if t.lineage(rank) == lineage]
    assert records[0]["score"] == pytest.approx(float(probs[members].sum()), abs=1e-5)
    scores = [r["score"] for r in records if r["file"] == records[0]["file"]]
    assert scores == sorted(scores, reverse=True)
    frame = records_to_dataframe(records)
    assert frame.shape == (len(records), len(expected_keys))


@pytest.mark.float_sensitive
def test_tree_of_life_subset_k_too_large_and_default_index(
    tiny_model_and_processor, tiny_index, photo_dir, offline_hub_cache
):
    model, processor = tiny_model_and_processor
    kingdom = tiny_index.taxa[0].kingdom
    clf = TreeOfLifeClassifier(index=tiny_index, subset=[kingdom], model=model, processor=processor)
    records = clf.predict(photo_dir / "a.jpg", rank="species", k=1000, min_prob=0)
    n_kept = sum(t.kingdom == kingdom for t in tiny_index.taxa)
    assert len(records) == n_kept and {r["kingdom"] for r in records} == {kingdom}
    # renormalised over the subset: a float32 softmax and sum over <= 40 taxa, each off by <= 40 x 2**-24 = 2.4e-6
    assert sum(r["score"] for r in records) == pytest.approx(1.0, abs=1e-5)
    # No index given: the model's released TreeOfLife-10M files are read through the (offline) HF cache.
    write_index_release(offline_hub_cache, "imageomics/TreeOfLife-10M", tiny_index, dtype=np.float16)
    default = TreeOfLifeClassifier(model=model, processor=processor, model_name_or_path="imageomics/bioclip")
    assert len(default.index) == len(tiny_index)
    assert default.predict(photo_dir / "a.jpg", rank="family", k=2)[0]["rank"] == "family"
    with pytest.raises(ValueError, match="unknown rank"):
        clf.predict(photo_dir / "a.jpg", rank="subspecies")
    # pybioclip's filter API: flags over the full index, applied (renormalised) and removed again.
    assert len(clf.get_label_data()) == len(tiny_index) and "class" in clf.get_label_data().columns
    genus = tiny_index.taxa[3].genus
    clf.apply_filter(clf.create_taxa_filter("genus", [genus.upper()]))
    everything = clf.predict(photo_dir / "a.jpg", rank="genus", k=None, min_prob=0)
    assert [(r["genus"], round(r["score"], 5)) for r in everything] == [(genus, 1.0)]
    clf.apply_filter(None)
    assert len(clf.predict(photo_dir / "a.jpg", rank="species", k=None, min_prob=0)) == len(tiny_index)


def test_in_memory_images_keep_their_position_across_batches(tiny_model_and_processor, photo_dir):
    # pybioclip #93: keys of PIL images were wrong beyond the first batch.
    model, processor = tiny_model_and_processor
    images = [Image.open(photo_dir / "a.jpg"), np.zeros((20, 20, 3), np.uint8), Image.open(photo_dir / "b.png")]
    clf = CustomLabelsClassifier(["x", "y"], templates=("{}",), model=model, processor=processor, batch_size=2)
    records = clf.predict(images, k=1)
    assert [r["file"] for r in records] == ["<image 0>", "<image 1>", "<image 2>"]
    assert [len(batch) for batch in clf.iter_predict(images, k=2)] == [4, 2]  # streamed per batch of 2 images
    with pytest.raises(TypeError, match="unexpected options: rank"):
        next(clf.iter_predict(images, rank="genus"))
    _, features = clf.embed_images(images[2])
    assert records[2]["label"] == ["x", "y"][int((features @ clf.text_features.T).argmax())]


@pytest.mark.float_sensitive
def test_custom_labels_cache_and_bins(tiny_model_and_processor, photo_dir, tmp_path):
    model, processor = tiny_model_and_processor
    cache = tmp_path / "labels.safetensors"
    labels = ["duck", "goose", "crow"]
    clf = CustomLabelsClassifier(labels, model=model, processor=processor, label_embeddings=cache)
    saved_labels, templates, saved = load_label_embeddings(cache)
    assert saved_labels == labels and len(templates) == 80 and torch.equal(saved, clf.text_features.cpu())
    # Re-loading must not recompute (a corrupted model would give different embeddings).
    with torch.no_grad():
        original = model.text_projection.weight.clone()
        model.text_projection.weight.mul_(-1)
        try:
            reloaded = CustomLabelsClassifier(labels, model=model, processor=processor, label_embeddings=cache)
            recomputed = CustomLabelsClassifier(labels[:2], model=model, processor=processor, label_embeddings=cache)
        finally:
            model.text_projection.weight.copy_(original)
    assert torch.equal(reloaded.text_features, clf.text_features)
    # Negated projection -> negated unit-norm features; 2 labels instead of 3 per text batch changes the kernels'
    # blocking, i.e. rounding only (a few float32 ulps of values <= 1, ~1e-7; measured <= 6e-7 on AVX-512/AVX2).
    assert torch.allclose(recomputed.text_features, -clf.text_features[:2], atol=1e-5)
    records = clf.predict(photo_dir, k=10)
    assert len(records) == 9 and {r["label"] for r in records} == set(labels)
    assert sum(r["score"] for r in records[:3]) == pytest.approx(1.0, abs=1e-5)  # 3 float32 terms: ~2e-7
    bins = {"duck": "water", "goose": "water", "crow": "land"}
    binned = CustomLabelsClassifier(labels, bins=bins, model=model, processor=processor).predict(photo_dir / "a.jpg", k=5)
    # Same single-image batch on both sides, so the bins differ from the label sums by one float32 addition (~1e-7).
    per_label = {r["label"]: r["score"] for r in clf.predict(photo_dir / "a.jpg", k=3)}
    assert {r["label"]: r["score"] for r in binned} == pytest.approx(
        {"water": per_label["duck"] + per_label["goose"], "land": per_label["crow"]}, abs=1e-5)
    pybioclip_style = CustomLabelsBinningClassifier(bins, model=model, processor=processor).predict(photo_dir / "a.jpg")
    assert pybioclip_style == binned
    with pytest.raises(ValueError, match="without a bin"):
        CustomLabelsClassifier(labels, bins={"duck": "water"}, model=model, processor=processor)


@pytest.mark.float_sensitive
def test_fit_simpleshot_matches_definition():
    torch.manual_seed(0)
    features, labels = torch.randn(12, 5), ["b", "a", "c"] * 4
    shot = fit_simpleshot(features, labels)
    transformed = torch.nn.functional.normalize(features - features.mean(0), dim=-1)
    assert shot.classes == ["b", "a", "c"]
    # Same operations on 12 x 5 values <= 1 (centre, normalise, mean of 4): a few float32 ulps, ~1e-7.
    assert shot.centroids[1] == pytest.approx(transformed[1::3].mean(0), abs=1e-6)
    queries = torch.randn(4, 5)
    q = torch.nn.functional.normalize(queries - features.mean(0), dim=-1)
    expected = [shot.classes[int(torch.cdist(q[i : i + 1], shot.centroids).argmin())] for i in range(4)]
    assert shot.predict(queries) == expected
    with pytest.raises(ValueError, match="labels for features"):
        fit_simpleshot(features, labels[:3])


def test_few_shot_classifier_from_folder(tiny_model_and_processor, tmp_path):
    model, processor = tiny_model_and_processor
    for i in range(3):
        write_image(tmp_path / "examples" / "bright" / f"{i}.png", 10 + i)
        write_image(tmp_path / "examples" / "dark" / "sub" / f"{i}.png", 20 + i, scale=40)
    (tmp_path / "examples" / "dark" / "bad.jpg").write_bytes(b"junk")
    clf = FewShotClassifier(tmp_path / "examples", model=model, processor=processor)
    assert clf.classes == ["bright", "dark"] and len(clf.support_errors) == 1
    records = clf.predict(tmp_path / "examples" / "dark" / "sub" / "0.png", k=5)
    assert [r["label"] for r in records] == ["dark", "bright"]  # a support image is nearest its own class
    assert 0 <= records[1]["score"] < records[0]["score"] <= 1
    with pytest.raises(FileNotFoundError, match="examples folder not found"):
        FewShotClassifier(tmp_path / "nope", model=model, processor=processor)
