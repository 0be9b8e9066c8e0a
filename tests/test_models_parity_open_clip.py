"""Numerical parity with the reference implementation, open_clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.models import import_open_clip

from bioclip_hf import BioCLIPModel, BioCLIPProcessor

open_clip = import_open_clip()

TEXTS = [
    "a photo of Danaus plexippus.",
    "Animalia Chordata Aves Passeriformes Corvidae Corvus corax",
    "Animalia Arthropoda Insecta Lepidoptera Nymphalidae Danaus plexippus with common name monarch butterfly",
    "common raven", "Common Raven", "COMMON RAVEN", "cOmMoN rAvEn",
    "Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina",
    "Fungi Basidiomycota Agaricomycetes Agaricales Amanitaceae Amanita muscaria",
    "Quercus robur with common name English oak", "Homo sapiens", "Canis lupus familiaris",
    "Lewis’s woodpecker", "Anna’s hummingbird", "Wilson's warbler", "Clark&#39;s nutcracker", "Bewick&amp;apos;s wren",
    "Rüppell's vulture", "Gyps rueppelli", "Æsculapian snake", "Zamenis longissimus", "Ånäs fågel",
    "ąčęėįšųūž lietuvių", "东方白鹳 Ciconia boyciana", "ニホンザル Macaca fuscata", "코끼리 Elephas maximus",
    "Ελληνική χελώνα Testudo graeca", "Москва река щука Esox lucius", "مرحبا عالم", "हिन्दी मोर Pavo cristatus",
    "emoji 🦋🐦🌿 butterfly", "naïve café résumé coöperate", "tab\tseparated\ttext", "  leading and trailing spaces  ",
    "multiple     spaces   inside", "line\nbreak\r\nwindows", "numbers 1234567890 and 3.14159", "punctuation!?.,;:()[]{}",
    "hyphen-ated x-ray T-rex", "quotes \"double\" and 'single'", "C. elegans (nematode)", "E. coli K-12",
    "ﬁne ligature ﬂower", "mojibake Ã©tÃ© cafÃ©", "Fullwidth ＡＢＣ１２３", "<|endoftext|> inside text",
    "sp. nov. cf. aff. var. subsp.", "a", "",
    " ".join(["Animalia Chordata Mammalia Carnivora Felidae Panthera leo"] * 12),  # > 77 tokens
    "supercalifragilisticexpialidocious " * 30,  # > 77 tokens
    "x" * 500,  # one very long word
]


def _reference_tokenizer():
    return open_clip.get_tokenizer("ViT-B-16")


def test_tokenizer_ids_identical_to_open_clip(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    assert len(TEXTS) >= 50
    ours = processor.tokenize(TEXTS)["input_ids"]
    ref = _reference_tokenizer()(TEXTS)
    assert ours.shape == ref.shape == (len(TEXTS), 77)
    for text, a, b in zip(TEXTS, ours, ref):
        assert torch.equal(a, b), f"token ids differ for {text!r}"
    assert (ref[:, -1] != 0).sum() >= 3, "the >77-token cases must actually be truncated"


@pytest.mark.float_sensitive
def test_tiny_open_clip_embeddings_and_logits_match(tiny_open_clip):
    reference, path = tiny_open_clip
    model = BioCLIPModel.from_pretrained(path).eval()
    processor = BioCLIPProcessor.from_pretrained(path)
    _assert_parity(reference, model, processor, image_size=30)


@pytest.mark.float_sensitive
@pytest.mark.heavy
def test_vit_b16_open_clip_parity(tmp_path):
    """Random-weight ViT-B-16 (the BioCLIP architecture) saved with open_clip's own Hub writer."""
    import types

    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-16").eval()
    with torch.no_grad():  # a non-trivial temperature so logits are not just 1/0.07-scaled cosines
        reference.logit_scale.fill_(4.2)
    model_cfg = open_clip.get_model_config("ViT-B-16")
    save_for_hf(reference, types.SimpleNamespace(save_pretrained=lambda d: None), model_cfg, str(tmp_path),
                safe_serialization=True)
    model = BioCLIPModel.from_pretrained(tmp_path).eval()
    processor = BioCLIPProcessor.from_pretrained(tmp_path)
    assert model.config.vision_config.patch_size == 16 and model.config.projection_dim == 512
    _assert_parity(reference, model, processor, image_size=224)


def _assert_parity(reference, model, processor, image_size: int) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 52), (64, 33), (30, 30))]
    _, _, ref_transform = open_clip.create_model_and_transforms(
        "ViT-B-16", force_image_size=image_size, pretrained=None
    )
    ref_pixels = torch.stack([ref_transform(im) for im in images])
    pixels = processor(images=images)["pixel_values"]
    # Same PIL resize/crop, then (x / 255 - mean) / std in float32 on |x| <= 2.7: a few ulps (<= 1e-6) if the
    # operations are ordered differently; measured 0.
    assert (pixels - ref_pixels).abs().max().item() <= 1e-5
    texts = TEXTS[:6]
    ref_ids = _reference_tokenizer()(texts)
    ids = processor(text=texts)["input_ids"]
    assert torch.equal(ids, ref_ids)
    with torch.no_grad():
        ref_img = reference.encode_image(ref_pixels)
        ref_txt = reference.encode_text(ref_ids)
        ref_logits = reference.logit_scale.exp() * torch.nn.functional.normalize(ref_img, dim=-1) @ torch.nn.functional.normalize(ref_txt, dim=-1).T
        out = model(input_ids=ids, pixel_values=pixels)
        img = model.encode_image(pixels)
        txt = model.encode_text(ids)
    # Two float32 implementations (SDPA vs open_clip's attention, fused vs split QKV) round differently; the
    # differences random-walk through the layers to a few ulps of the largest values (|x| <= 3.5 here, ulp 2.4e-7):
    # measured <= 2.2e-6 (ViT-B/16) and <= 1.9e-6 (tiny) on AVX-512, under AVX2 emulation and with 1 thread.
    # 1e-5 (the README's claim, >= 40 ulps) keeps a 4x margin; a conversion error is O(0.1).
    assert (img - ref_img).abs().max().item() <= 1e-5
    assert (txt - ref_txt).abs().max().item() <= 1e-5
    assert (out.logits_per_image - ref_logits).abs().max().item() <= 1e-5
    assert torch.allclose(out.logits_per_text, out.logits_per_image.T)
    assert out.logits_per_image.shape == (3, 6)


def _ref_eval_transform(size: int = 224):
    return open_clip.image_transform(size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD)


def _generated_images():
    rng = np.random.default_rng(1)
    arr = lambda h, w, c=3: rng.integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)  # noqa: E731
    rgba = Image.fromarray(arr(301, 257, 4), "RGBA")
    palette = Image.fromarray(arr(180, 240)).convert("P")
    return [
        Image.fromarray(arr(224, 224)), Image.fromarray(arr(225, 227)), Image.fromarray(arr(500, 333)),
        Image.fromarray(arr(100, 60)), Image.fromarray(arr(17, 999)), Image.fromarray(arr(227, 1000)),
        Image.fromarray(arr(300, 300, 0), "L"), rgba, palette, Image.fromarray(arr(223, 225)).convert("CMYK"),
    ]


@pytest.mark.float_sensitive
def test_preprocessing_matches_open_clip_on_generated_images(tiny_model_and_processor):
    from bioclip_hf import BioCLIPImageProcessor

    ours, ref = BioCLIPImageProcessor(size=224), _ref_eval_transform(224)
    for image in _generated_images():
        expected = ref(image).numpy()
        got = ours.transform(image)
        assert got.shape == expected.shape == (3, 224, 224), image
        # same PIL resampling; float32 normalisation of |x| <= 2.7: a few ulps (<= 1e-6) at most
        assert np.abs(got - expected).max() <= 1e-5, (image.mode, image.size)


@pytest.mark.float_sensitive
def test_preprocessing_matches_open_clip_on_real_photos(bird_photos):
    from bioclip_hf import BioCLIPImageProcessor

    ours, ref = BioCLIPImageProcessor(size=224), _ref_eval_transform(224)
    for path in bird_photos:
        with Image.open(path) as image:
            expected = ref(image).numpy()
            got = ours.transform(image)
        assert np.abs(got - expected).max() <= 1e-5, path
        # Also at a size that forces real resampling (the photos are 224 px already).
        with Image.open(path) as image:
            small_ref = _ref_eval_transform(96)(image).numpy()
            small = BioCLIPImageProcessor(size=96).transform(image)
        assert np.abs(small - small_ref).max() <= 1e-5, path


def test_round_trip_open_clip_ours_open_clip_identical_state_dicts(tiny_open_clip, tmp_path):
    from bioclip_hf import convert_open_clip_checkpoint, export_to_open_clip

    reference, path = tiny_open_clip
    hf_dir = convert_open_clip_checkpoint(path, tmp_path / "hf")
    oc_dir = export_to_open_clip(hf_dir, tmp_path / "oc")
    reloaded, _, transform = open_clip.create_model_and_transforms(f"local-dir:{oc_dir}")
    ref_sd, new_sd = reference.state_dict(), reloaded.state_dict()
    assert set(ref_sd) == set(new_sd)
    for key in ref_sd:
        assert torch.equal(ref_sd[key], new_sd[key]), key
    # open_clip picks up our preprocessing settings from the exported config.
    assert tuple(transform.transforms[-1].mean) == tuple(open_clip.OPENAI_DATASET_MEAN)
