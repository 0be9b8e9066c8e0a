"""Image preprocessing modes: every open_clip `resize_mode` against open_clip's own `image_transform`, and
`preprocess="pybioclip"` against torchvision and pybioclip's own transform object, on generated and real photos.

Exact equality is the right expectation here, not a tolerance: both sides run the same resampling code (PIL's
`Image.resize` for open_clip modes, torch's antialiased bilinear `interpolate` for pybioclip's tensor resize, which
is what torchvision calls) on the same pixels, followed by the same IEEE float32 operations (uint8 / 255, then
(x - mean) / std), so any difference means a different step, crop, rounding or order.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from support.models import import_open_clip

from bioclip_hf import BioCLIPImageProcessor, BioCLIPProcessor

open_clip = import_open_clip()
MEAN, STD = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD


def generated_images() -> list[Image.Image]:
    """Squares, near-squares, extreme aspect ratios, smaller than the target, and every PIL mode users hand in."""
    rng = np.random.default_rng(1)
    arr = lambda h, w, c=3: rng.integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)  # noqa: E731
    return [
        Image.fromarray(arr(224, 224)), Image.fromarray(arr(225, 227)), Image.fromarray(arr(500, 333)),
        Image.fromarray(arr(100, 60)), Image.fromarray(arr(17, 999)), Image.fromarray(arr(227, 1000)),
        Image.fromarray(arr(300, 300, 0), "L"), Image.fromarray(arr(301, 257, 4), "RGBA"),
        Image.fromarray(arr(180, 240, 0)).convert("P"), Image.fromarray(arr(223, 225)).convert("CMYK"),
        Image.fromarray(arr(99, 40, 0), "L").convert("LA"),
    ]  # fmt: skip


def real_non_square(photos, count: int = 12) -> list[Image.Image]:
    """Crops and aspect-changing resizes of the real photos (224x224 JPEGs)."""
    out = []
    for i, path in enumerate(photos[:count]):
        with Image.open(path) as photo:
            photo.load()
            out.append(photo.crop((10 + i, 0, 200, 150 + i)) if i % 2 else photo.resize((150 + 13 * i, 301 - 7 * i)))
    return out


@pytest.mark.float_sensitive
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resize_modes_equal_open_clip_image_transform(resize_mode, interpolation, bird_photos):
    images = generated_images() + real_non_square(bird_photos)
    for size, fill in ((224, 0), (96, 128)):
        reference = open_clip.image_transform(size, is_train=False, mean=MEAN, std=STD, resize_mode=resize_mode,
                                              interpolation=interpolation, fill_color=fill)  # fmt: skip
        ours = BioCLIPImageProcessor(size=size, resize_mode=resize_mode, interpolation=interpolation, fill_color=fill)
        for image in images:
            expected = reference(image).numpy()
            got = ours.transform(image)
            assert got.shape == expected.shape == (3, size, size)
            assert np.array_equal(got, expected), (resize_mode, interpolation, size, image.mode, image.size)


@pytest.mark.float_sensitive
def test_pybioclip_mode_equals_torchvision_and_pybioclip_transform(bird_photos):
    from torchvision import transforms

    predict = pytest.importorskip("bioclip.predict")
    images = generated_images() + real_non_square(bird_photos)
    ours = BioCLIPImageProcessor(size=224, preprocess="pybioclip")
    for image in images:
        rgb = predict.BaseClassifier.ensure_rgb_image(image)  # pybioclip's own RGB conversion
        expected = predict.preprocess_img(rgb).numpy()  # ToTensor -> Resize((224, 224), antialias=True) -> Normalize
        assert np.array_equal(ours.transform(image), expected), (image.mode, image.size)
    # Any model size: the same squash to the model's input size.
    small = transforms.Compose([transforms.ToTensor(), transforms.Resize((30, 30), antialias=True),
                                transforms.Normalize(MEAN, STD)])  # fmt: skip
    ours_small = BioCLIPImageProcessor(size=30, preprocess="pybioclip")
    for image in images:
        assert np.array_equal(ours_small.transform(image), small(image.convert("RGB")).numpy()), image.size
    # Not a no-op: on a non-square photo the squash differs from open_clip's resize + centre crop.
    assert np.abs(ours.transform(images[-1]) - BioCLIPImageProcessor(size=224).transform(images[-1])).max() > 0.1


def test_package_preprocessing_needs_no_torchvision(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["torchvision"] = None  # any import of torchvision now fails
        from PIL import Image
        from bioclip_hf import BioCLIPImageProcessor
        image = Image.new("RGB", (64, 40), (200, 30, 10))
        for kwargs in ({}, {"resize_mode": "longest"}, {"resize_mode": "squash"}, {"preprocess": "pybioclip"}):
            assert BioCLIPImageProcessor(size=30, **kwargs).transform(image).shape == (3, 30, 30)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_settings_saved_loaded_and_read_from_open_clip_config(tmp_path, tiny_open_clip):
    processor = BioCLIPImageProcessor(size=30, resize_mode="longest", fill_color=9, preprocess="pybioclip")
    processor.save_pretrained(tmp_path / "p")
    saved = (tmp_path / "p" / "preprocessor_config.json").read_text()
    assert '"preprocess": "pybioclip"' in saved and '"resize_mode": "longest"' in saved and '"fill_color": 9' in saved
    loaded = BioCLIPImageProcessor.from_pretrained(tmp_path / "p")
    assert (loaded.preprocess_mode, loaded.resize_mode, loaded.fill_color) == ("pybioclip", "longest", 9)
    assert loaded.with_preprocess("open_clip").preprocess_mode == "open_clip" and loaded.size == 30
    cfg = {"mean": list(MEAN), "std": list(STD), "interpolation": "bilinear", "resize_mode": "squash", "fill_color": 0}
    from_cfg = BioCLIPImageProcessor.from_open_clip_preprocess(cfg, 30)
    assert from_cfg.to_open_clip_preprocess() == cfg
    # An open_clip checkpoint whose preprocess_cfg says "longest" is preprocessed that way.
    import json
    import shutil

    _, path = tiny_open_clip
    shutil.copytree(path, tmp_path / "oc")
    config = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    config["preprocess_cfg"].update(resize_mode="longest", fill_color=255)
    (tmp_path / "oc" / "open_clip_config.json").write_text(json.dumps(config))
    image_processor = BioCLIPProcessor.from_pretrained(tmp_path / "oc").image_processor
    assert (image_processor.resize_mode, image_processor.fill_color) == ("longest", 255)
    for bad in ({"resize_mode": "fit"}, {"preprocess": "timm"}):
        with pytest.raises(ValueError, match="resize_mode|preprocess"):
            BioCLIPImageProcessor(**bad)


def test_cli_preprocess_flag(tiny_hf_dir, tmp_path, capsys):
    from bioclip_hf.cli import main
    from bioclip_hf.inference.classify import BaseClassifier

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for mode in ("pybioclip", None):
        out = tmp_path / f"{mode}.npy"
        argv = ["embed", str(tmp_path / "a.png"), "--output", str(out), "--model", str(tiny_hf_dir), "--no-progress"]
        assert main(argv + (["--preprocess", mode] if mode else [])) == 0
    capsys.readouterr()
    expected = BaseClassifier(model_name_or_path=str(tiny_hf_dir), preprocess="pybioclip").embed_images([tmp_path / "a.png"])[1]
    # the same image, model and preprocessing through the CLI and the API: a few ulps of unit vectors at most (~1e-7)
    assert np.allclose(np.load(tmp_path / "pybioclip.npy"), expected.numpy(), atol=1e-6)
    assert np.abs(np.load(tmp_path / "pybioclip.npy") - np.load(tmp_path / "None.npy")).max() > 1e-3
    code = main(["predict", str(tmp_path / "a.png"), "--labels", "a,b", "--model", str(tiny_hf_dir), "--no-progress",
                 "--preprocess", "pybioclip"])  # fmt: skip
    assert code == 0 and capsys.readouterr().out.startswith("file,label,score")
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", str(tmp_path / "a.png"), "-o", str(tmp_path / "x.npy"), "--preprocess", "torchvision"])
    assert exit_info.value.code == 2 and "invalid choice: 'torchvision'" in capsys.readouterr().err
