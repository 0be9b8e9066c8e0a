"""`bioclip-hf push` against the local Hub test server: files, card metadata, and the card's snippets executed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from bioclip_hf.cli import main


def _results(tmp_path):
    results = {
        "model": "tiny", "config": {"templates": "openai"},
        "tasks": {"rare_species": {
            "title": "Rare Species", "dataset": "imageomics/rare-species", "split": "train", "num_examples": 10,
            "num_classes": 5, "zero_shot": {"taxonomic": {"top1_accuracy": 0.375, "top5_accuracy": 0.9}},
            "few_shot": {"1": {"top1_accuracy": 0.25, "top1_accuracy_std": 0.05, "seeds": [0, 1, 2, 3, 4]},
                         "5": {"skipped": "no query examples left"}}}},
    }  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.S)


def test_push_uploads_model_processor_card_and_open_clip(hub_server, tiny_hf_dir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi, ModelCard, hf_hub_download

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(tiny_hf_dir), "tester/bioclip-tiny", "--eval-results", str(_results(tmp_path))]) == 0
    assert "tester/bioclip-tiny" in capsys.readouterr().out

    files = set(HfApi().list_repo_files("tester/bioclip-tiny"))
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
            "open_clip_config.json", "open_clip_model.safetensors"} <= files  # fmt: skip
    card = ModelCard.load("tester/bioclip-tiny")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.library_name == "transformers"
    assert card.data.base_model == "imageomics/bioclip"
    assert card.data.license == "mit" and card.data.datasets == ["imageomics/TreeOfLife-10M"]
    values = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert values == {("imageomics/rare-species", "zero-shot top-1 (taxonomic text)"): 37.5,
                      ("imageomics/rare-species", "1-shot top-1 (SimpleShot, 5 seeds)"): 25.0}  # fmt: skip
    assert "| Rare Species | 10 | 5 | 37.5 | 25.0 ± 5.0 | – |" in card.text

    # The card's usage snippet, exactly as published, runs against the pushed repo.
    snippet = _code_blocks(card.text, "python")[0]
    assert 'from_pretrained("tester/bioclip-tiny")' in snippet
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save("photo.jpg")
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    probs = eval(printed.strip())  # the snippet prints {label: probability}
    assert set(probs) == {"a photo of Corvus corax.", "a photo of Pica pica.", "a photo of Turdus merula."}
    assert sum(probs.values()) == pytest.approx(1.0, abs=0.01)  # 3 values rounded to 3 decimals: <= 1.5e-3

    # The transformers pipeline snippet (remote code from the repo) gives the same probabilities.
    exec(compile(_code_blocks(card.text, "python")[1], "README.md", "exec"), {})
    from_pipeline = eval(capsys.readouterr().out.strip())
    assert from_pipeline == pytest.approx({label.removeprefix("a photo of ").removesuffix("."): p
                                           for label, p in probs.items()}, abs=2e-3)  # fmt: skip
    # (both printed rounded to 3 decimals: equal values may round 1e-3 apart)

    # The open_clip copy in the repo loads with open_clip's own hf-hub loader and matches the transformers weights.
    assert hf_hub_download("tester/bioclip-tiny", "open_clip_config.json")
    open_clip_snippet = _code_blocks(card.text, "python")[2]
    scope: dict = {}
    exec(compile(open_clip_snippet, "README.md", "exec"), scope)
    import torch

    from bioclip_hf import BioCLIPModel

    reference = BioCLIPModel.from_pretrained(tiny_hf_dir).eval()
    pixels = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        ours = reference.encode_image(pixels, normalize=True)
        theirs = torch.nn.functional.normalize(scope["model"].eval().encode_image(pixels), dim=-1)
    # Unit-norm embeddings from two implementations: a few float32 ulps (see test_models_parity_open_clip), ~1e-7.
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_push_errors_are_one_line(tmp_path, capsys):
    assert main(["push", str(tmp_path / "missing"), "tester/x"]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert main(["push", str(tmp_path), "no-owner"]) == 2
    assert "owner/name" in capsys.readouterr().err


def test_push_dry_run_writes_the_repo_folder(tiny_hf_dir, tmp_path):
    out = tmp_path / "staged"
    assert main(["push", str(tiny_hf_dir), "me/tiny", "--dry-run", str(out), "--no-open-clip", "--license", "apache-2.0"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "open_clip_config.json").exists()
    readme = (out / "README.md").read_text()
    assert "license: apache-2.0" in readme and "model-index" not in readme


def test_push_and_evaluate_help_stay_light():
    import subprocess
    import sys

    script = ("import sys, contextlib, io\nfrom bioclip_hf.cli import main\n"
              "for cmd in ('push', 'evaluate'):\n"
              "    with contextlib.redirect_stdout(io.StringIO()):\n"
              "        try: main([cmd, '--help'])\n        except SystemExit: pass\n"
              "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'numpy', 'datasets') if m in sys.modules]\n"
              "assert not heavy, heavy\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", script], check=True)
