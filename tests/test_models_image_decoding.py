"""The one image decoder (`bioclip_hf.models.bioclip.image_decoding.decode_image`): every input kind, every colour
mode, the errors, and the four callers (processor, batch inference, training stream, evaluation) that share it."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioclip_hf import BioCLIPImageProcessor
from bioclip_hf.models.bioclip import image_decoding
from bioclip_hf.models.bioclip.image_decoding import decode_image

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (40, 52, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


@pytest.fixture
def photo(tmp_path):
    """An RGB picture, its PNG bytes and the file holding them."""
    image = Image.fromarray(PIXELS)
    data = _encode(image)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    return image, data, path


def test_every_input_kind_decodes_to_the_same_pixels(photo):
    image, data, path = photo
    kinds = {
        "str path": str(path), "Path": path, "bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data),
        "dict with bytes and path": {"bytes": data, "path": "elsewhere/photo.png"},
        "dict with bytes only": {"bytes": data, "path": None}, "dict with path only": {"bytes": None, "path": str(path)},
        "HWC array": PIXELS, "CHW array": PIXELS.transpose(2, 0, 1).copy(), "HWC tensor": torch.from_numpy(PIXELS),
    }
    for kind, source in kinds.items():
        decoded = decode_image(source)
        assert isinstance(decoded, Image.Image) and _same(decoded, image), kind
    assert decode_image(image) is image  # PIL images pass through untouched (no copy, no conversion)
    grey = PIXELS[..., 0]
    assert _same(decode_image(grey), Image.fromarray(grey)) and _same(decode_image(grey[..., None]), Image.fromarray(grey))


def test_files_are_fully_read_and_closed(photo):
    """A decoded file is loaded, not lazy: it stays usable after the file is gone (and no handle is left open)."""
    image, _, path = photo
    decoded = decode_image(path)
    path.unlink()
    assert _same(decoded, image) and getattr(decoded, "fp", None) is None


MODES = {  # mode -> a lossless format that stores it
    "RGBA": "PNG", "P": "PNG", "L": "PNG", "LA": "PNG", "CMYK": "TIFF", "I;16": "PNG",
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_colour_modes_keep_their_mode_and_reach_the_model_as_rgb(mode, tmp_path):
    """Decoding keeps the file's mode; the processor converts to RGB after resizing (open_clip's order), and gives
    the same array whichever way the picture arrives."""
    base = Image.fromarray(PIXELS)
    original = base.convert("I;16") if mode == "I;16" else base.convert(mode)
    data = _encode(original, MODES[mode])
    path = tmp_path / f"image.{MODES[mode].lower()}"
    path.write_bytes(data)
    sources = [data, path, str(path), {"bytes": data, "path": None}, {"bytes": None, "path": str(path)}]
    for source in sources:
        decoded = decode_image(source)
        assert decoded.mode == original.mode and _same(decoded, original), (mode, type(source).__name__)
    processor = BioCLIPImageProcessor(size=30)
    expected = processor.transform(original)
    assert expected.shape == (3, 30, 30) and expected.dtype == np.float32
    for source in sources:
        assert np.array_equal(processor.transform(source), expected), (mode, type(source).__name__)
    batch = processor(sources, return_tensors="np")["pixel_values"]
    assert np.array_equal(batch, np.stack([expected] * len(sources)))
    rgb = Image.fromarray(np.asarray(original.convert("RGB")))
    if mode == "L":  # grey levels resize the same in L and RGB: converting first or last is the same
        assert np.array_equal(processor.transform(rgb), expected)
    if mode == "P":  # Pillow resizes palette images with NEAREST: converting first would change the pixels
        assert not np.array_equal(processor.transform(rgb), expected)


def _assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message and all(part in message for part in parts), message


def test_corrupt_data_is_a_one_line_error_naming_the_image(photo, tmp_path):
    _, data, _ = photo
    junk = b"\x00not an image at all" * 4
    with pytest.raises(ValueError) as err:
        decode_image(junk)
    _assert_one_line(err, "cannot read image <bytes>:", "not a recognised image format")
    with pytest.raises(ValueError) as err:
        decode_image(junk, name="sample-0042")
    _assert_one_line(err, "cannot read image sample-0042:")
    with pytest.raises(ValueError) as err:
        decode_image({"bytes": junk, "path": "shard-3/0042.jpg"})
    _assert_one_line(err, "cannot read image shard-3/0042.jpg:")
    truncated = data[: len(data) // 2]  # a valid PNG header whose pixel data stops halfway
    (tmp_path / "truncated.png").write_bytes(truncated)
    for source in (truncated, tmp_path / "truncated.png"):
        with pytest.raises(ValueError) as err:
            decode_image(source)
        _assert_one_line(err, "cannot read image")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError) as err:
        decode_image(str(tmp_path / "bad.jpg"))
    _assert_one_line(err, f"cannot read image {tmp_path / 'bad.jpg'}: not a recognised image format")
    with pytest.raises(ValueError) as err:
        decode_image(tmp_path)
    _assert_one_line(err, f"cannot read image {tmp_path}:")


def test_missing_files_and_wrong_inputs(tmp_path):
    missing = tmp_path / "gone.jpg"
    for source in (missing, str(missing), {"bytes": None, "path": str(missing)}):
        with pytest.raises(FileNotFoundError) as err:
            decode_image(source)
        _assert_one_line(err, f"image not found: {missing}")
    with pytest.raises(ValueError, match="^image entry has neither bytes nor a path$"):
        decode_image({"bytes": None, "path": None})
    with pytest.raises(ValueError, match="^image entry row 7 has neither bytes nor a path$"):
        decode_image({}, name="row 7")
    with pytest.raises(ValueError, match=r"^image is missing \(None\)$"):
        decode_image(None)
    with pytest.raises(TypeError, match="^unsupported image type int$"):
        decode_image(3)
    with pytest.raises(ValueError, match="must be uint8"):
        decode_image(PIXELS.astype(np.float32))
    with pytest.raises(ValueError, match="HxW or HxWxC"):
        decode_image(PIXELS[None])


def test_decompression_bombs_are_refused_as_unreadable(photo, monkeypatch):
    """Pillow's limit stands (images over twice MAX_IMAGE_PIXELS are refused); the refusal reads like bad data."""
    _, data, path = photo
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 52 // 2 - 1)
    for source in (data, path):
        with pytest.raises(ValueError) as err:
            decode_image(source)
        _assert_one_line(err, "cannot read image", "decompression bomb")


def test_the_four_callers_share_the_one_decoder(photo, tmp_path, tiny_model_and_processor):
    from bioclip_hf.data import stream
    from bioclip_hf.data.layouts import OURS
    from bioclip_hf.evaluation import harness
    from bioclip_hf.inference import images
    from bioclip_hf.models.bioclip import processing_bioclip

    assert processing_bioclip.to_pil is decode_image
    assert images.decode_image is decode_image and stream.decode_image is decode_image
    assert harness.decode_image is decode_image
    image, data, path = photo
    junk = {"bytes": b"\x00junk" * 8, "path": "x/0001.jpg"}
    with pytest.raises(ValueError) as err:
        decode_image(junk)
    message = str(err.value)
    model, processor = tiny_model_and_processor
    transform = processor.image_processor.transform

    # Batch inference: the same pixels and the same error, per position.
    batch = images.decode_batch(transform, [junk, {"bytes": data, "path": None}, str(path)])
    assert batch["ok"] == [1, 2] and batch["errors"] == [(0, message)]
    assert torch.equal(batch["pixels"], torch.from_numpy(np.stack([transform(image)] * 2)))

    # Training stream: the sample's image is the decoder's; a bad one is skipped with the decoder's message.
    decode = stream._decoder("taxonomic", 0, 0, None, "jpg", OURS)
    taxon = {"kingdom": "Animalia", "genus": "Corvus", "species": "corax"}
    good = decode({"__key__": "a", "jpg": {"bytes": data, "path": None}, "taxon.json": taxon})
    assert good["_bad"] == "" and _same(good["image"], image)
    for value, reason in ((junk, message), ({"bytes": None, "path": str(tmp_path / "no.jpg")}, "image not found")):
        bad = decode({"__key__": "b", "jpg": value, "taxon.json": taxon})
        assert bad["image"] is None and bad["_bad"].startswith("image: ") and reason in bad["_bad"]

    # Evaluation: paths, bytes and PIL images give the same features; corrupt bytes fail with the same message.
    features = harness.image_features(model, processor, [str(path), data, image])
    expected = harness.image_features(model, processor, [image])
    for row in features:  # the same forward pass on the same pixels, one image or three per batch: ~1e-7
        assert np.abs(row - expected[0]).max() < 1e-5
    with pytest.raises(ValueError) as err:
        harness.image_features(model, processor, [junk["bytes"]])
    assert str(err.value) == "cannot read image <bytes>: not a recognised image format"


def test_decoder_module_is_self_contained():
    """It ships as remote code beside processing_bioclip.py: only the standard library, PIL and numpy."""
    tree = ast.parse(Path(image_decoding.__file__).read_text())
    roots = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots[(node.module or "").split(".")[0] if node.level == 0 else "."] += 1
    assert set(roots) <= {"__future__", "io", "os", "struct", "typing", "numpy", "PIL"}, roots


def test_remote_code_processor_decodes_without_the_package(tiny_hf_dir, photo, tmp_path):
    """`save_pretrained` copies image_decoding.py with the processor; trust_remote_code decodes every kind."""
    image, data, path = photo
    assert (tiny_hf_dir / "image_decoding.py").read_text() == Path(image_decoding.__file__).read_text()
    expected = BioCLIPImageProcessor.from_pretrained(tiny_hf_dir)(image, return_tensors="np")["pixel_values"]
    (tmp_path / "photo.bin").write_bytes(data)
    code = f"""
        import sys
        import numpy as np
        from pathlib import Path
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tiny_hf_dir)!r}, trust_remote_code=True)
        assert "bioclip_hf" not in sys.modules, "the package must not be needed"
        data = Path({str(tmp_path / "photo.bin")!r}).read_bytes()
        sources = [{str(path)!r}, data, {{"bytes": data, "path": None}}, {{"bytes": None, "path": {str(path)!r}}}]
        pixels = processor.image_processor(sources, return_tensors="np")["pixel_values"]
        np.save({str(tmp_path / "pixels.npy")!r}, pixels)
        try:
            processor.image_processor(b"junk")
        except ValueError as err:
            print(err)
    """
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "cannot read image <bytes>: not a recognised image format"
    # Exact across processes: per-image resize and normalise on the same shapes, no sums that threads or GEMM
    # blocking reorder, so the same CPU computes the same pixels (unlike model outputs: see support.tolerances).
    assert np.array_equal(np.load(tmp_path / "pixels.npy"), np.concatenate([expected] * 4))
