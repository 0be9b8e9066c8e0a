"""A fine-tune measures forgetting on a reference task, and round-trips through the local Hub server: push,
`from_pretrained`, predict its own classes by repo id, and its adapter loads from the repo onto the base."""

from __future__ import annotations

import pytest
import torch
from support.finetune import quick_config, save_tiny_base
from support.labelled import make_labelled_folder
from support.paths import BIRDS, REPO_ROOT

from bioclip_hf.training.finetune import finetune


def test_forgetting_push_from_pretrained_and_predict_by_repo_id(hub_server, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, ModelCard
    from peft import PeftModel

    from bioclip_hf import BioCLIPModel
    from bioclip_hf.inference.classify import TreeOfLifeClassifier

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=4, from_birds=False)
    # The reference task: other classes, as an image folder by class (generated colours beyond the first four).
    reference = make_labelled_folder(tmp_path / "ref", n_classes=6, per_class=2, from_birds=False, name="reference")
    for label in photos.labels:
        for file in (reference.root / label).iterdir():
            file.unlink()
        (reference.root / label).rmdir()
    base = save_tiny_base(tmp_path / "base", size=224)
    out = tmp_path / "out"
    result = finetune(quick_config(photos.root, base, out, method="lora", max_steps=3, learning_rate=1e-2,
                                   forgetting_task=str(reference.root), save_adapter=True, open_clip_copy=True,
                                   push_to_hub="tester/fish-ft"))  # fmt: skip
    forgetting = result.results["forgetting"]
    assert forgetting["measured"] and forgetting["tasks"] == ["reference"]
    assert 0 <= forgetting["before"] <= 1 and forgetting["change"] == forgetting["after"] - forgetting["before"]
    assert result.hub_url and "tester/fish-ft" in result.hub_url

    files = set(HfApi().list_repo_files("tester/fish-ft"))
    assert {"README.md", "config.json", "model.safetensors", "results.json", "label_index/embeddings.safetensors",
            "label_index/taxa.parquet", "open_clip_model.safetensors", "adapter/adapter_config.json"} <= files  # fmt: skip
    assert not any(name.startswith("checkpoints/") for name in files)
    card = ModelCard.load("tester/fish-ft")
    assert "| reference |" in card.text and "Forgetting was not measured" not in card.text
    names = {r.metric_name for r in card.data.eval_results}
    assert {"top-1 accuracy (base model, zero-shot)", "top-1 accuracy (fine-tuned)",
            "zero-shot top-1 (before fine-tuning)", "zero-shot top-1 (after fine-tuning)"} <= names  # fmt: skip

    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    pulled = BioCLIPModel.from_pretrained("tester/fish-ft").eval()
    local = BioCLIPModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(pulled.encode_image(pixels), local.encode_image(pixels))
        adapter = PeftModel.from_pretrained(BioCLIPModel.from_pretrained(base).eval(), "tester/fish-ft", subfolder="adapter")
        assert adapter.peft_config["default"].base_model_name_or_path == str(base)
    classifier = TreeOfLifeClassifier(model_name_or_path="tester/fish-ft", device="cpu")
    records = classifier.predict([str(photos.root / photos.labels[0] / "1.jpg")], k=3)
    assert sorted(r["taxon"] for r in records) == photos.labels

    # The Space loads the fine-tune by Hub id and predicts among its own classes.
    space = _load_space_app()
    try:
        tree_of_life = space.SLOT.tree_of_life("tester/fish-ft")
        assert sorted(t.name_at("species") for t in tree_of_life.index.taxa) == photos.labels
    finally:
        space.SLOT.release()


def _load_space_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bioclip_space_app_finetune", REPO_ROOT / "spaces" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.heavy
def test_forgetting_on_the_bundled_birds525_task(tmp_path):
    if not (BIRDS / "labels.csv").is_file():
        pytest.skip(f"real photos not available at {BIRDS}")
    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=4, from_birds=False)
    base = save_tiny_base(tmp_path / "base", size=224)
    result = finetune(quick_config(photos.root, base, tmp_path / "out", method="full", max_steps=2,
                                   forgetting_task="birds525", forgetting_data_dir=str(BIRDS),
                                   forgetting_max_classes=5, forgetting_max_per_class=2))  # fmt: skip
    forgetting = result.results["forgetting"]
    assert forgetting["tasks"] == ["birds525"]
    assert forgetting["detail"]["before"]["birds525"]["num_examples"] == 10
    assert "| birds525 |" in (tmp_path / "out" / "README.md").read_text()
