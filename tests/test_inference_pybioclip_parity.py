"""pybioclip-identical answers: `preprocess="pybioclip"` against the real pybioclip package.

Both tools load the same random CLIP (saved with open_clip's own Hub writer) and the same random index in the
TreeOfLife-10M layout from ONE offline HF cache, by their normal ids (pybioclip: `hf-hub:imageomics/bioclip`; ours:
`imageomics/bioclip` with `preprocess="pybioclip"`), on >= 50 non-square images cut from the real photos.

Heavy (~35 s of CPU even with a tiny tower); the fast checks of the same preprocessing against pybioclip's own
transform object run in test_models_preprocessing.py. Run: pytest -m heavy tests/test_inference_pybioclip_parity.py

Tolerance of scores (1e-4). The pixels are bitwise equal (same torch kernel, proven in test_models_preprocessing), so the
tools differ only in the float32 rounding of two implementations of the same network (transformers' vs open_clip's
attention and GEMM orders) and of the text average. Measured embedding differences are ~1e-7 (tiny) to ~1e-6
(ViT-B/16) on unit vectors; a score is a softmax of `logit_scale * cos` with logit_scale = 1/0.07 (the random init),
so a logit moves by <= 14.3 * 2e-6 < 3e-5 and a probability p by <= 2 * p * 3e-5 <= 6e-5, summed clade scores
likewise (their members' changes share one normalisation). 1e-4 covers that with margin; any preprocessing mismatch
(crop instead of squash, PIL instead of tensor resize, another filter) moves scores by >= 1e-3 and reorders top-5s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.models import write_model_release
from support.treeoflife import random_taxa, write_index_release

RUNNER = Path(__file__).parent / "support" / "pybioclip_runner.py"
TINY_224 = {  # BioCLIP's input size (pybioclip squashes to 224 whatever the model) on a tiny tower
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def non_square_images(photos: list[Path], folder: Path, count: int = 52) -> list[str]:
    """Crops and resizes of the real photos, none square; JPEG and PNG, RGB, grayscale and RGBA files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        with Image.open(photos[i % len(photos)]) as photo:
            photo = photo.convert("RGB")
            w, h = photo.size
            if i % 3 == 0:  # crop
                cw, ch = int(rng.integers(w // 3, w)), int(rng.integers(h // 3, h))
                left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                image = photo.crop((left, top, left + cw, top + ch))
            else:  # up/down-scale to another aspect ratio
                image = photo.resize((int(rng.integers(60, 480)), int(rng.integers(60, 480))), Image.Resampling.BICUBIC)
        if image.width == image.height:
            image = image.crop((0, 0, image.width - 1, image.height))
        mode, suffix = [("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("RGB", "png")][i % 4]
        path = folder / f"img{i:02d}.{suffix}"
        image.convert(mode).save(path)
        paths.append(str(path))
    return paths


def run_tools(images_file: Path, folder: Path, cache: Path, home: Path) -> tuple[dict, dict]:
    """Run `pybioclip_runner.py` for pybioclip and for us, side by side, each in a fresh process (HF settings are
    read at import) on the shared offline cache; returns (ours, pybioclip)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(home),
           "BIOCLIP_HF_CACHE": str(home / "bioclip_hf")}  # fmt: skip
    procs = {tool: subprocess.Popen([sys.executable, str(RUNNER), tool, str(images_file), str(folder / f"{tool}.json")],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tool in ("ours", "pybioclip")}  # fmt: skip
    for tool, proc in procs.items():
        _, stderr = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{tool} failed:\n{stderr[-4000:]}"
    return tuple(json.loads((folder / f"{tool}.json").read_text()) for tool in procs)


def assert_same_answers(ours: dict, ref: dict, tol: float = 1e-4) -> None:
    for rank, rows in ref["tol"].items():
        assert len(ours["tol"][rank]) == len(rows) >= 50
        for i, (got, want) in enumerate(zip(ours["tol"][rank], rows)):
            assert [g[0] for g in got] == [w[0] for w in want], f"top-5 {rank} differs for image {i}"
            assert np.abs(np.subtract([g[1] for g in got], [w[1] for w in want])).max() <= tol, (rank, i)
    for part in ("species_api", "labels", "bins"):
        assert len(ours[part]) == len(ref[part]) > 0
        assert [r[:2] for r in ours[part]] == [r[:2] for r in ref[part]], part
        assert np.abs(np.subtract([r[2] for r in ours[part]], [r[2] for r in ref[part]])).max() <= tol, part


@pytest.mark.float_sensitive
@pytest.mark.heavy  # ~35 s of CPU for the tiny model (two fresh interpreters, pybioclip's Python grouping loops)
@pytest.mark.parametrize("architecture", ["tiny-224", "ViT-B-16"])
def test_pybioclip_identical_answers(architecture, bird_photos, tmp_path):
    pytest.importorskip("bioclip.predict")
    cache, home = tmp_path / "hub", tmp_path / "home"
    model_cfg = "ViT-B-16" if architecture == "ViT-B-16" else TINY_224
    model = write_model_release(cache, "imageomics/bioclip", model_cfg=model_cfg, safe_serialization=True)
    # 300 taxa with empty ranks (orders, epithets) and missing common names, as in the TreeOfLife-10M layout.
    write_index_release(cache, "imageomics/TreeOfLife-10M", (random_taxa(300, seed=1), model.text_projection.shape[1]))
    images = non_square_images(bird_photos, tmp_path / "images")
    images_file = tmp_path / "images.txt"
    images_file.write_text("\n".join(images), encoding="utf-8")
    ours, ref = run_tools(images_file, tmp_path, cache, home)
    assert_same_answers(ours, ref)
    shutil.rmtree(tmp_path / "images")
