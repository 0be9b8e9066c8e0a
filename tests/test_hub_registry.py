"""Model registry, revision pinning and provenance: list-models, pinned commits in an offline HF cache, index file
choice, one-line errors, `predict --log`, commits resolved against a (local) Hub, transformers CLIP checkpoints."""

from __future__ import annotations

import csv
import io
import json
import logging
import re

import pytest
import torch
from support.hub_cache import OTHER_COMMIT, commit_of
from support.images import write_image
from support.models import write_model_release
from support.treeoflife import index_for, random_taxa, write_index_release

from bioclip_hf.cli import main
from bioclip_hf.hub import index_files
from bioclip_hf.hub.registry import (
    DEFAULT_MODEL,
    MODELS,
    IndexFiles,
    NoIndexError,
    RevisionNotCachedError,
    UnknownModelError,
    default_index_repo,
    get_entry,
    normalize_model_id,
    snapshot_commit,
)
from bioclip_hf.treeoflife.index import TreeOfLifeIndex, load_index

PINNED = get_entry("imageomics/bioclip-2").revision


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for i in range(2):
        write_image(folder / f"p{i}.jpg", i)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


@pytest.fixture
def bioclip2_cache(offline_hub_cache, tmp_path):
    """bioclip-2 at its pinned commit (seed 0) and a newer `main` (seed 1); TreeOfLife-200M with both file names."""
    pinned = write_model_release(offline_hub_cache, "imageomics/bioclip-2", tmp_path, seed=0, commit=PINNED, ref=None)
    newer = write_model_release(offline_hub_cache, "imageomics/bioclip-2", tmp_path, seed=1, commit=OTHER_COMMIT)
    index = index_for(16, random_taxa(24))
    write_index_release(offline_hub_cache, "imageomics/TreeOfLife-200M", index, tmp_path,
                        stems=("txt_emb_bioclip-2", "txt_emb_species"), commit=commit_of("tol200m"))  # fmt: skip
    return {"cache": offline_hub_cache, "pinned": pinned, "newer": newer, "index": index}


def test_registry_table_and_list_models(capsys):
    ids = [entry.repo_id for entry in MODELS]
    assert ids == ["imageomics/bioclip", "imageomics/bioclip-2", "imageomics/bioclip-2.5-vith14", "imageomics/biocap",
                   "imageomics/bioclip-vit-b-16-inat-only"]  # fmt: skip
    assert DEFAULT_MODEL == "imageomics/bioclip-2"
    # Only full, publicly confirmed commit hashes are pinned; everything else follows main.
    assert {e.repo_id: e.revision for e in MODELS if e.revision} == {"imageomics/bioclip-2": PINNED}
    assert all(re.fullmatch(r"[0-9a-f]{40}", e.revision) for e in MODELS if e.revision)
    code, out, _ = run_cli(capsys, "list-models", "--format", "json")
    rows = {row["model"]: row for row in json.loads(out)}
    assert code == 0 and list(rows) == ids
    assert rows["imageomics/bioclip-2"]["revision"] == PINNED and rows["imageomics/bioclip-2"]["default"] == "yes"
    assert rows["imageomics/bioclip-2.5-vith14"]["architecture"] == "ViT-H-14" and rows["imageomics/bioclip-2.5-vith14"]["embed_dim"] == 1024
    assert rows["imageomics/bioclip-2"]["index_files"].startswith("embeddings/txt_emb_bioclip-2.{npy,json} else")
    assert rows["imageomics/bioclip-vit-b-16-inat-only"]["index_repo"] == ""
    code, out, _ = run_cli(capsys, "list-models")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["model", "default", "revision"] and len(out.splitlines()) == 6


def test_model_ids_with_hf_hub_prefix():
    assert normalize_model_id("hf-hub:imageomics/bioclip-2/") == "imageomics/bioclip-2"
    assert get_entry("hf-hub:imageomics/bioclip").index.repo_id == default_index_repo("imageomics/bioclip")
    assert snapshot_commit(f"/c/models--a--b/snapshots/{PINNED}/sub/open_clip_config.json") == PINNED
    assert snapshot_commit("/some/folder/open_clip_config.json") is None
    with pytest.raises(UnknownModelError, match="known models: imageomics/bioclip, imageomics/bioclip-2, "):
        default_index_repo("someone/finetune")
    with pytest.raises(NoIndexError, match="--labels.*build-index"):
        default_index_repo("hf-hub:imageomics/bioclip-vit-b-16-inat-only")


def test_pinned_commit_is_loaded_and_recorded_offline(bioclip2_cache, photos):
    from bioclip_hf import TreeOfLifeClassifier

    def projection(classifier):
        return classifier.model.visual_projection.weight

    clf = TreeOfLifeClassifier(model_str="hf-hub:imageomics/bioclip-2")  # pybioclip's spelling of the id
    assert torch.equal(projection(clf), bioclip2_cache["pinned"].visual.proj.detach().T)  # not main's weights
    info = clf.provenance()
    assert info["model"] == {"id": "imageomics/bioclip-2", "revision": PINNED, "commit": PINNED}
    assert info["index"]["repo_id"] == "imageomics/TreeOfLife-200M" and info["index"]["commit"] == commit_of("tol200m")
    assert info["index"]["files"] == ["embeddings/txt_emb_bioclip-2.npy", "embeddings/txt_emb_bioclip-2.json"]
    assert info["preprocessing"]["size"] == 30 and info["preprocessing"]["interpolation"] == "bicubic"
    # revision= overrides the pin: a branch resolves to the commit it points to, which is what gets recorded.
    latest = TreeOfLifeClassifier(model_name_or_path="imageomics/bioclip-2", revision="main", index=clf.full_index)
    assert torch.equal(projection(latest), bioclip2_cache["newer"].visual.proj.detach().T)
    assert latest.provenance()["model"] == {"id": "imageomics/bioclip-2", "revision": "main", "commit": OTHER_COMMIT}
    assert len(latest.predict(photos, "genus", k=2)) == 4
    # A classifier handed an already-loaded model reports where that model came from (the pin, not main).
    from bioclip_hf import CustomLabelsClassifier
    from bioclip_hf.models.loading import load_model_and_processor

    model, processor = load_model_and_processor("hf-hub:imageomics/bioclip-2")
    labels = CustomLabelsClassifier(["a", "b"], model=model, processor=processor, model_name_or_path="imageomics/bioclip-2")
    assert labels.provenance()["model"]["commit"] == PINNED


def test_pinned_commit_missing_from_offline_cache_is_one_line(offline_hub_cache, tmp_path, photos, capsys):
    write_model_release(offline_hub_cache, "imageomics/bioclip-2", tmp_path, seed=1, commit=OTHER_COMMIT)
    for command in (["predict", photos], ["embed", photos, "--output", tmp_path / "e.npy"]):
        code, out, err = run_cli(capsys, *command, "--no-progress")
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"bioclip-hf {command[0]}: error: imageomics/bioclip-2 at commit {PINNED} is not in the "
                              "offline Hugging Face cache")  # fmt: skip
        assert OTHER_COMMIT in err
    code, out, err = run_cli(capsys, "embed", photos, "--output", tmp_path / "e.npy", "--revision", "main", "--no-progress")
    assert code == 0 and (tmp_path / "e.npy").is_file()
    with pytest.raises(RevisionNotCachedError, match="imageomics/TreeOfLife-200M at commit 1111"):
        TreeOfLifeIndex.from_registry("imageomics/bioclip-2", revision="1" * 40)


def test_index_file_choice_revision_and_fallback(offline_hub_cache, tmp_path, caplog):
    taxa = random_taxa(30)
    small, large = index_for(16, taxa[:10]), index_for(16, taxa)
    write_index_release(offline_hub_cache, "imageomics/TreeOfLife-200M", small, tmp_path, stems=("txt_emb_species",))
    with caplog.at_level(logging.WARNING, logger="bioclip_hf.hub.index_files"):
        index = TreeOfLifeIndex.from_registry("hf-hub:imageomics/bioclip-2")
    assert len(index) == 10 and index.metadata["files"][0] == "embeddings/txt_emb_species.npy"
    assert "has no embeddings/txt_emb_bioclip-2.npy; using embeddings/txt_emb_species.npy" in caplog.text
    # Another commit (no branch points to it) holds the model-named files: asked for by revision, it wins.
    other = commit_of("tol200m-with-model-named-files")
    write_index_release(offline_hub_cache, "imageomics/TreeOfLife-200M", large, tmp_path,
                        stems=("txt_emb_bioclip-2", "txt_emb_bioclip-2.5-vith14"), commit=other, ref=None)  # fmt: skip
    index = TreeOfLifeIndex.from_registry("imageomics/bioclip-2", revision=other)
    assert len(index) == 30 and index.metadata["commit"] == other and index.metadata["revision"] == other
    assert index.metadata["files"] == ["embeddings/txt_emb_bioclip-2.npy", "embeddings/txt_emb_bioclip-2.json"]
    assert len(TreeOfLifeIndex.from_registry("imageomics/bioclip-2.5-vith14", revision=other)) == 30
    # BioCLIP 2.5 and BioCAP never fall back to another model's txt_emb_species (a different text space).
    with pytest.raises(FileNotFoundError, match="TreeOfLife-200M has none of embeddings/txt_emb_bioclip-2.5-vith14.npy"):
        TreeOfLifeIndex.from_registry("imageomics/bioclip-2.5-vith14")
    write_index_release(offline_hub_cache, "imageomics/TreeOfLife-10M", small, tmp_path, stems=("txt_emb_species",))
    with pytest.raises(FileNotFoundError, match="txt_emb_biocap.npy"):
        TreeOfLifeIndex.from_registry("imageomics/biocap")
    assert len(TreeOfLifeIndex.from_registry("imageomics/bioclip")) == 10  # BioCLIP's own file is txt_emb_species


def test_one_index_download_path(bioclip2_cache, monkeypatch, capsys):
    """`from_hub`, `from_registry` (predict, list-taxa) and `load_index` of a Hub id all download through
    `hub.index_files.resolve_index_files`, with the registry's candidates or pybioclip's layout."""
    calls = []
    real = index_files.resolve_index_files

    def spy(repo_id, candidates=None, revision=None, cache_dir=None):
        names = None if candidates is None else [index_files.index_files(c).embeddings for c in candidates]
        calls.append((repo_id, names, revision))
        return real(repo_id, candidates, revision, cache_dir)

    monkeypatch.setattr(index_files, "resolve_index_files", spy)
    registry_files = ["embeddings/txt_emb_bioclip-2.npy", "embeddings/txt_emb_species.npy"]
    from_registry = TreeOfLifeIndex.from_registry("imageomics/bioclip-2")
    assert calls.pop() == ("imageomics/TreeOfLife-200M", registry_files, None)
    assert from_registry.metadata["commit"] == commit_of("tol200m")
    from_hub = TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-200M", revision="main")
    assert calls.pop() == ("imageomics/TreeOfLife-200M", None, "main")
    assert from_hub.metadata["files"] == ["embeddings/txt_emb_species.npy", "embeddings/txt_emb_species.json"]
    assert from_hub.metadata["commit"] == commit_of("tol200m") and from_hub.taxa == from_registry.taxa
    load_index("imageomics/TreeOfLife-200M")
    assert calls.pop() == ("imageomics/TreeOfLife-200M", None, None)
    code, out, err = run_cli(capsys, "list-taxa", "--index-revision", commit_of("tol200m"))
    assert code == 0, err
    assert calls.pop() == ("imageomics/TreeOfLife-200M", registry_files, commit_of("tol200m")) and not calls
    assert len(out.splitlines()) == 1 + len(bioclip2_cache["index"])


def test_index_file_specs():
    assert index_files.index_files("txt_emb_bioclip-2.5-vith14").embeddings == "embeddings/txt_emb_bioclip-2.5-vith14.npy"
    assert index_files.index_files("data/x.npy") == IndexFiles("data/x.npy", "data/x.json")
    for bad in ("", "embeddings/x.json", "embeddings/x"):
        with pytest.raises(ValueError, match="neither an .npy path"):
            index_files.index_files(bad)
    with pytest.raises(ValueError, match="no index files to look for in a/b"):
        index_files.resolve_index_files("a/b", [])


def test_unknown_model_or_no_index_fails_before_loading(offline_hub_cache, photos, capsys):
    # Nothing is cached: had the model been loaded first, the error would be about the download instead.
    code, _, err = run_cli(capsys, "predict", photos, "--model", "hf-hub:someone/finetune")
    assert code == 2 and err.count("\n") == 1
    assert "no Tree-of-Life index is known for model 'someone/finetune'; known models: imageomics/bioclip, " in err
    assert "--index" in err and "--labels" in err
    code, _, err = run_cli(capsys, "predict", photos, "--model", "imageomics/bioclip-vit-b-16-inat-only", "--rank", "genus")
    assert code == 2 and "has no Tree-of-Life index; use --labels" in err and "build-index" in err
    code, _, err = run_cli(capsys, "list-taxa", "--model", "someone/finetune")
    assert code == 2 and "known models:" in err
    code, _, err = run_cli(capsys, "predict", photos, "--labels", "a,b", "--index-revision", "main")
    assert code == 2 and "apply to Tree-of-Life predictions only" in err


def test_predict_log_records_provenance(bioclip2_cache, photos, tmp_path, capsys):
    import importlib.metadata

    log = tmp_path / "logs" / "run.json"
    code, out, err = run_cli(capsys, "predict", photos, "--rank", "family", "--k", 2, "--log", log, "--no-progress",
                             "--columns", "pybioclip")  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["file_name", "kingdom", "phylum", "class", "order", "family", "score"] and len(rows) == 4
    record = json.loads(log.read_text())
    assert record["model"] == {"id": "imageomics/bioclip-2", "revision": PINNED, "commit": PINNED}
    assert record["index"]["commit"] == commit_of("tol200m") and record["index"]["num_taxa"] == 24
    assert record["index"]["files"] == ["embeddings/txt_emb_bioclip-2.npy", "embeddings/txt_emb_bioclip-2.json"]
    assert record["preprocessing"]["image_processor_type"] == "BioCLIPImageProcessor"
    assert record["images"] == {"total": 3, "predicted": 2, "skipped": 1} and record["records"] == 4
    assert record["skipped"][0]["file"].endswith("corrupt.jpg")
    assert record["settings"]["mode"] == "tree-of-life" and record["settings"]["rank"] == "family"
    assert record["packages"]["torch"] == importlib.metadata.version("torch")
    assert record["packages"]["transformers"] == importlib.metadata.version("transformers")
    assert record["start"] <= record["end"] and record["output"] == "stdout"
    code, _, err = run_cli(capsys, "predict", photos, "--log", log)  # a log describes one run: never overwritten
    assert code == 2 and "already exists" in err and json.loads(log.read_text()) == record
    code, _, err = run_cli(capsys, "predict", photos, "--log", tmp_path / "run.txt")
    assert code == 2 and "must be a .json file" in err


def test_predict_log_of_a_batch_run(bioclip2_cache, photos, tmp_path, capsys):
    """With a written output (parts + merge), the log counts the same images and rows, and pybioclip's columns
    survive the Parquet parts."""
    import pandas as pd

    log, out_file = tmp_path / "run.json", tmp_path / "preds.parquet"
    code, _, err = run_cli(capsys, "predict", photos, "--rank", "family", "--k", 2, "--log", log, "--no-progress",
                           "--columns", "pybioclip", "--output", out_file, "--num-workers", 0)  # fmt: skip
    assert code == 0, err
    table = pd.read_parquet(out_file)
    assert list(table.columns) == ["file_name", "kingdom", "phylum", "class", "order", "family", "score"] and len(table) == 4
    record = json.loads(log.read_text())
    assert record["images"] == {"total": 3, "predicted": 2, "skipped": 1} and record["records"] == 4
    assert record["skipped"][0]["file"].endswith("corrupt.jpg") and record["output"] == str(out_file.resolve())
    assert record["model"]["commit"] == PINNED and record["settings"]["rank"] == "family"


def test_online_resolution_records_the_commit_obtained(hub_server, tiny_open_clip, tmp_path):
    """Unpinned entries follow `main` on the Hub; the commit actually downloaded is what provenance reports."""
    from huggingface_hub import HfApi

    from bioclip_hf import TreeOfLifeClassifier

    api, folder = HfApi(), tiny_open_clip[1]
    api.create_repo("imageomics/bioclip", token=hub_server.token)
    api.upload_folder(folder_path=str(folder), repo_id="imageomics/bioclip", token=hub_server.token)
    release = write_index_release(tmp_path / "staging", "imageomics/TreeOfLife-10M", index_for(16, random_taxa(12)),
                                  tmp_path)  # fmt: skip
    api.create_repo("imageomics/TreeOfLife-10M", repo_type="dataset", token=hub_server.token)
    api.upload_folder(folder_path=str(release), repo_id="imageomics/TreeOfLife-10M", repo_type="dataset",
                      token=hub_server.token)  # fmt: skip
    clf = TreeOfLifeClassifier(model_str="hf-hub:imageomics/bioclip")
    info = clf.provenance()
    assert info["model"]["commit"] == api.model_info("imageomics/bioclip").sha and info["model"]["revision"] is None
    assert info["index"]["commit"] == api.dataset_info("imageomics/TreeOfLife-10M").sha
    assert info["index"]["files"] == ["embeddings/txt_emb_species.npy", "embeddings/txt_emb_species.json"]  # no model-named file


def write_transformers_clip(folder):
    """A random `CLIPModel` checkpoint in openai/clip-vit-base-patch16's file layout (tiny sizes)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from bioclip_hf.models.bioclip.processing_bioclip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, _bpe_vocab_and_merges

    torch.manual_seed(0)
    config = CLIPConfig(projection_dim=16,
                        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                           image_size=30, patch_size=2))  # fmt: skip
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    vocab, merges = _bpe_vocab_and_merges()
    vocab = {{"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(k, k): v for k, v in vocab.items()}
    CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77).save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 30, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD), "resample": 3, "size": 30}))  # fmt: skip
    return model


@pytest.mark.float_sensitive
def test_transformers_clip_checkpoint_for_labels_few_shot_and_embed(tmp_path, photos, capsys):
    import numpy as np
    from transformers import CLIPProcessor

    from bioclip_hf import CustomLabelsClassifier, FewShotClassifier

    folder = tmp_path / "clip-vit-base-patch16"
    reference = write_transformers_clip(folder)
    labels = CustomLabelsClassifier(["duck", "goose", "crow"], templates=("a photo of a {}.",), model_name_or_path=str(folder))
    tokens = CLIPProcessor.from_pretrained(folder)(text=["a photo of a duck."], return_tensors="pt", padding="max_length")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference.get_text_features(input_ids=tokens["input_ids"]).pooler_output, dim=-1)
    # Same weights, same token ids, same float32 ops: equal up to summation order (a few ulp of unit vectors).
    assert (labels.text_features[0] - expected[0]).abs().max() <= 1e-6
    records = labels.predict(photos, k=3)
    assert len(records) == 6 and {r["label"] for r in records} == {"duck", "goose", "crow"}
    shots = FewShotClassifier({"a": [photos / "p0.jpg"], "b": [photos / "p1.jpg"]}, model_name_or_path=str(folder))
    assert [r["label"] for r in shots.predict(photos / "p1.jpg", k=1)] == ["b"]
    code, out, err = run_cli(capsys, "embed", photos, "--model", folder, "--output", tmp_path / "e.npy", "--no-progress")
    assert code == 0 and np.load(tmp_path / "e.npy").shape == (2, 16)
    code, _, err = run_cli(capsys, "predict", photos, "--model", folder)  # no index for it: say what to do
    assert code == 2 and "no Tree-of-Life index is known for model" in err and "--labels" in err


def test_any_open_clip_hf_hub_model_embeds_without_an_index(offline_hub_cache, tmp_path, photos, capsys):
    import numpy as np

    write_model_release(offline_hub_cache, "someone/open-clip-model", tmp_path, seed=3)
    code, out, err = run_cli(capsys, "embed", photos, "--model", "hf-hub:someone/open-clip-model",
                             "--output", tmp_path / "e.npy", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape == (2, 16)
    code, out, err = run_cli(capsys, "predict", photos, "--model", "hf-hub:someone/open-clip-model", "--labels", "a,b",
                             "--no-progress")  # fmt: skip
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 4
