"""Text embedding: end-of-text truncation (exact), length sorting, and the release index recipe vs the release script.

Tolerances. Every comparison here is between two float32 evaluations of the *same* arithmetic that differ only in
operation order: open_clip's vs transformers' attention kernels, and a 77-token vs an L-token sequence (another GEMM
blocking, so dot products are summed in another order). The tiny text tower is 2 layers of width 32 on O(1)
activations; each layer rounds at a relative 2^-24 (6e-8) per op, and layer norms keep magnitudes O(1), so the unit
output vectors differ by a few ulps (measured here: 1.2e-7, one ulp of values near 1). The template mean and the two
normalisations are the same torch ops on both sides. 1e-6 (release recipe, same length both sides mostly) and 1e-5
(truncated vs full length) leave 10-100x headroom for other CPUs' kernels (AVX2 vs AVX-512) and thread counts, while
any real mistake (wrong text, template, pooling position or normalisation order) moves values by >= 1e-3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bioclip_hf.treeoflife.index import TreeOfLifeIndex
from bioclip_hf.treeoflife.taxa import TaxaColumns, TaxonSequence
from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, OPENAI_TEMPLATES, Taxon
from bioclip_hf.treeoflife.text_embedding import encode_prompts, recipe_text, token_lengths, truncate_batch

NAMES = [
    "Animalia Chordata Aves Passeriformes Corvidae Corvus corax common raven",
    "Plantae  Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina ",  # empty rank, no common name
    "x", "Danaus plexippus with common name monarch butterfly", "Homo sapiens", "",
    " ".join(["Animalia Chordata Mammalia Carnivora Felidae Panthera leo"] * 12),  # > 77 tokens: cut at 77
    "Fungi Basidiomycota Agaricomycetes Agaricales Amanitaceae Amanita muscaria fly agaric",
]

# Release-layout entries: empty ranks, empty common names, mixed case, non-ASCII.
ENTRIES = [
    [["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"], "common raven"],
    [["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corone"], ""],
    [["Animalia", "Chordata", "Aves", "", "", "Pica", "pica"], "Eurasian magpie"],
    [["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina"], "dog rose"],
    [["Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae", "Danaus", "plexippus"], "monarch butterfly"],
    [["Fungi", "Basidiomycota", "Agaricomycetes", "Agaricales", "Amanitaceae", "Amanita", "muscaria"], "fly agaric"],
    [["Animalia", "Chordata", "Aves", "Accipitriformes", "Accipitridae", "Gyps", "rueppelli"], "Rüppell's vulture"],
    [["Animalia", "Chordata", "Mammalia", "Primates", "Hominidae", "Homo", "sapiens"], "human"],
    [["Animalia", "Chordata", "", "", "", "", ""], ""],
    [["Bacteria", "Proteobacteria", "Gammaproteobacteria", "Enterobacterales", "Enterobacteriaceae", "Escherichia",
      "coli"], "E. coli"],  # fmt: skip
]


def test_truncate_batch_cuts_at_the_longest_end_of_text(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    ids = processor.tokenize(["a", "Corvus corax", NAMES[6]])["input_ids"]
    assert truncate_batch(ids[:2]).shape == (2, 7)  # <sot> cor v us cor ax <eot>
    assert torch.equal(truncate_batch(ids[:2]), ids[:2, :7]) and (ids[:2, 7:] == 0).all()
    assert truncate_batch(ids).shape == (3, 77)  # a 77-token text keeps the full context
    assert token_lengths(processor, ["a", "Corvus corax"]).tolist() == [3, 7]


@pytest.mark.float_sensitive
def test_truncated_sorted_pass_matches_full_length_pass(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    templates = OPENAI_TEMPLATES[:7]
    fast = encode_prompts(model, processor, NAMES, templates, batch_size=14)  # 2 names per batch: sorting matters
    full = encode_prompts(model, processor, NAMES, templates, batch_size=14, truncate=False)
    assert fast.shape == (len(NAMES), model.config.projection_dim)
    assert (fast - full).abs().max().item() <= 1e-5  # see the module docstring
    one_by_one = torch.cat([encode_prompts(model, processor, [name], templates, truncate=False) for name in NAMES])
    assert (fast - one_by_one).abs().max().item() <= 1e-5  # original order restored after sorting by length
    with pytest.raises(ValueError, match="no names"):
        encode_prompts(model, processor, [], templates)


def test_truncation_is_not_a_no_op(tiny_model_and_processor, monkeypatch):
    """Guard the test above: the fast path really runs shorter sequences (else it would pass trivially)."""
    model, processor = tiny_model_and_processor
    lengths = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda ids, **kw: lengths.append(ids.shape[1]) or original(ids, **kw))
    encode_prompts(model, processor, NAMES[:6], (DEFAULT_TEMPLATE,), batch_size=2)
    assert max(lengths) < 30 and min(lengths) <= 8


def release_script_loop(model, tokenizer, all_names, templates, batch_size, embed_dim):
    """TreeOfLife-toolbox processing/scripts/make_txt_embedding.py (June 2025, BioCLIP 2 release), re-implemented:
    text ' '.join(ranks) + ' ' + common, every template, per-template L2 norm, mean, L2 norm, [D, N] float32 output.
    (The release script used floor division for the batch count, leaving a remainder batch all-zero; here the
    names fill whole batches so that difference cannot matter.)"""
    all_features = np.zeros((embed_dim, len(all_names)), dtype=np.float32)
    per_batch = batch_size // len(templates)
    for start in range(0, len(all_names), per_batch):
        names = [" ".join(name[0]) + " " + name[1] for name in all_names[start : start + per_batch]]
        txts = tokenizer([template(name) for name in names for template in templates])
        with torch.no_grad():
            features = model.encode_text(txts)
        features = torch.reshape(features, (len(names), len(templates), embed_dim))
        features = torch.nn.functional.normalize(features, dim=2).mean(dim=1)
        features /= features.norm(dim=1, keepdim=True)
        all_features[:, start : start + len(names)] = features.T.numpy()
    return all_features


@pytest.mark.float_sensitive
def test_release_recipe_matches_the_release_script(tiny_open_clip, tmp_path, capsys):
    from bioclip.predict import OPENA_AI_IMAGENET_TEMPLATE  # the 80 templates, as lambdas, from pybioclip
    from support.models import import_open_clip

    from bioclip_hf import BioCLIPModel, BioCLIPProcessor
    from bioclip_hf.cli import main

    reference, path = tiny_open_clip
    tokenizer = import_open_clip().get_tokenizer("ViT-B-16")
    expected = release_script_loop(reference, tokenizer, ENTRIES, OPENA_AI_IMAGENET_TEMPLATE, 160, 16)
    assert len(OPENA_AI_IMAGENET_TEMPLATE) == len(OPENAI_TEMPLATES) == 80
    assert [t("{}") for t in OPENA_AI_IMAGENET_TEMPLATE] == list(OPENAI_TEMPLATES)

    model, processor = BioCLIPModel.from_pretrained(path).eval(), BioCLIPProcessor.from_pretrained(path)
    taxa = TaxonSequence(TaxaColumns.from_entries(ENTRIES))
    assert recipe_text(taxa[2]) == "Animalia Chordata Aves   Pica pica Eurasian magpie"  # as the script joins
    index = TreeOfLifeIndex.build(list(taxa), model, processor, progress=False)  # default recipe: release, 80 templates
    assert index.metadata["recipe"] == "release" and len(index.metadata["templates"]) == 80
    assert np.abs(index.embeddings.numpy().T - expected).max() <= 1e-6  # see the module docstring

    # The CLI, from the released names file, writing the released layout (a pybioclip drop-in).
    (tmp_path / "txt_emb_species.json").write_text(json.dumps(ENTRIES), encoding="utf-8")
    out = tmp_path / "out" / "embeddings" / "txt_emb_species.npy"
    code = main(["build-index", str(tmp_path / "txt_emb_species.json"), "-o", str(tmp_path / "out"), "--layout",
                 "release", "--model", str(path), "--no-progress"])  # fmt: skip
    assert code == 0 and "wrote index of 10 taxa" in capsys.readouterr().out
    written = np.load(out)
    assert written.dtype == np.float32 and written.shape == (16, len(ENTRIES))
    assert np.abs(written - expected).max() <= 1e-6
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == ENTRIES


def test_other_recipes_and_bad_recipe(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    raven = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven")
    assert recipe_text(raven, "taxonomic+common").endswith("Corvus corax with common name common raven")
    assert recipe_text(Taxon(genus="Corvus", species="corax"), "release") == "     Corvus corax "
    index = TreeOfLifeIndex.build([raven], model, processor, recipe="scientific", templates=(DEFAULT_TEMPLATE,),
                                  progress=False)  # fmt: skip
    manual = encode_prompts(model, processor, ["Corvus corax"], (DEFAULT_TEMPLATE,), truncate=False)
    assert (index.embeddings - manual).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="unknown index recipe 'tribal'"):
        TreeOfLifeIndex.build([raven], model, processor, recipe="tribal")
