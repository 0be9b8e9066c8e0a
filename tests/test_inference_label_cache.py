"""The automatic label-embedding cache: a repeated custom-label run skips the text encoder; another model commit,
other labels or other templates miss; and a Tree-of-Life run never calls the text encoder."""

from __future__ import annotations

import pytest
import torch
from support.hub_cache import DEFAULT_COMMIT, OTHER_COMMIT
from support.models import write_model_release
from support.treeoflife import index_for, random_taxa

from bioclip_hf.inference import custom_labels
from bioclip_hf.inference.classify import CustomLabelsClassifier, TreeOfLifeClassifier
from bioclip_hf.inference.label_cache import label_cache_file
from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel

REPO = "someone/tiny-clip"
LABELS = ["duck", "goose", "swan"]


@pytest.fixture
def two_commits(offline_hub_cache, tmp_path, monkeypatch):
    """`REPO` at two commits with different weights in an offline HF cache; the label cache under tmp_path."""
    monkeypatch.setenv("BIOCLIP_HF_CACHE", str(tmp_path / "bioclip-cache"))
    write_model_release(offline_hub_cache, REPO, tmp_path / "work", seed=0, commit=DEFAULT_COMMIT, ref=None)
    write_model_release(offline_hub_cache, REPO, tmp_path / "work", seed=1, commit=OTHER_COMMIT)
    return tmp_path / "bioclip-cache" / "label-embeddings"


@pytest.fixture
def text_encoder_calls(monkeypatch):
    """Counts the label sets embedded with the text encoder."""
    calls = []
    real = custom_labels.encode_prompts

    def counting(model, processor, texts, *args, **kwargs):
        calls.append(list(texts))
        return real(model, processor, texts, *args, **kwargs)

    monkeypatch.setattr(custom_labels, "encode_prompts", counting)
    return calls


def classifier(labels=LABELS, revision=DEFAULT_COMMIT, **kwargs) -> CustomLabelsClassifier:
    return CustomLabelsClassifier(labels, model_name_or_path=REPO, revision=revision, device="cpu", num_workers=0,
                                  dtype="float32", **kwargs)  # fmt: skip


def test_repeated_labels_skip_the_text_encoder(two_commits, text_encoder_calls):
    first = classifier()
    assert text_encoder_calls == [LABELS]
    assert len(list(two_commits.glob("*.safetensors"))) == 1
    again = classifier()
    assert text_encoder_calls == [LABELS]  # a hit: no text encoder
    assert torch.equal(again.text_features, first.text_features)


@pytest.mark.parametrize(
    "change",
    [{"revision": OTHER_COMMIT}, {"labels": ["goose", "duck", "swan"]}, {"labels": [*LABELS, "heron"]},
     {"templates": ["a photo of a {}."]}],  # fmt: skip
    ids=["model-commit", "label-order", "label-added", "templates"],
)
def test_another_commit_labels_or_templates_miss(two_commits, text_encoder_calls, change):
    base = classifier()
    changed = classifier(**change)
    assert len(text_encoder_calls) == 2  # recomputed, not the first run's entry
    assert len(list(two_commits.glob("*.safetensors"))) == 2
    if "revision" in change:  # other weights: other embeddings for the same labels
        assert not torch.allclose(changed.text_features, base.text_features)
    classifier(**change)
    assert len(text_encoder_calls) == 2  # and the changed run is cached in turn


def test_label_cache_can_be_turned_off_and_needs_a_known_model(two_commits, text_encoder_calls, monkeypatch,
                                                               tiny_model_and_processor):  # fmt: skip
    monkeypatch.setenv("BIOCLIP_HF_LABEL_CACHE", "0")
    classifier()
    classifier()
    assert len(text_encoder_calls) == 2 and not two_commits.exists()
    monkeypatch.delenv("BIOCLIP_HF_LABEL_CACHE")
    model, processor = tiny_model_and_processor  # an object of unknown origin: no key, no automatic cache
    assert label_cache_file(model, LABELS, ["{}"], "float32") is None
    CustomLabelsClassifier(LABELS, model=model, processor=processor, num_workers=0)
    assert len(text_encoder_calls) == 3 and not two_commits.exists()


def test_a_damaged_cache_entry_is_recomputed_and_rewritten(two_commits, text_encoder_calls):
    first = classifier()
    (entry,) = two_commits.glob("*.safetensors")
    entry.write_bytes(b"not safetensors")
    again = classifier()
    assert len(text_encoder_calls) == 2 and torch.equal(again.text_features, first.text_features)
    classifier()
    assert len(text_encoder_calls) == 2


def test_tree_of_life_runs_never_call_the_text_encoder(two_commits, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder ran in a Tree-of-Life run")

    monkeypatch.setattr(BioCLIPModel, "get_text_features", refuse)
    monkeypatch.setattr(BioCLIPModel, "encode_text", refuse)
    clf = TreeOfLifeClassifier(index=index_for(16, random_taxa(40, seed=2)), model_name_or_path=REPO, device="cpu",
                               num_workers=0)  # fmt: skip
    records = clf.predict([torch.zeros(30, 30, 3, dtype=torch.uint8).numpy()], rank="family", k=2)
    assert len(records) == 2 and records[0]["rank"] == "family"
