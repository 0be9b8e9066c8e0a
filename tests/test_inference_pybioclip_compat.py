"""pybioclip's Python API and CSV columns, drop-in: one script runs against the real pybioclip 2.1.6 and against
`bioclip_hf.pybioclip`, both reading the same random model (`imageomics/bioclip`, open_clip layout) and random
TreeOfLife-10M index from one offline HF cache, and the answers are compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from support.models import TINY_224_CFG, write_model_release
from support.treeoflife import index_for, random_taxa, write_index_release

from bioclip_hf.inference.pybioclip_format import pybioclip_columns

pytest.importorskip("bioclip", reason="pybioclip (the dev extra) is needed for the comparison")

# The same text runs against both packages; argv: module, output JSON, images...
SCRIPT = textwrap.dedent('''
    import contextlib, importlib, io, json, sys
    from PIL import Image
    mod = importlib.import_module(sys.argv[1])
    images = sys.argv[3:]
    out, model = {}, "hf-hub:imageomics/bioclip"
    tol = mod.TreeOfLifeClassifier(model_str=model)
    out["species"] = tol.predict(images, mod.Rank.SPECIES)
    out["family"] = tol.predict(images, mod.Rank.FAMILY, 1e-9, 3, 2)  # pybioclip's positional order
    pil = [Image.open(p).convert("RGB") for p in images[:3]]
    out["pil_genus"] = tol.predict(pil, mod.Rank.GENUS, k=2, batch_size=2)
    labels = tol.get_label_data()
    out["label_data"] = {"columns": list(labels.columns), "rows": labels.to_dict("records")}
    genus = sorted(set(labels["genus"]))[1]
    tol.apply_filter(tol.create_taxa_filter(mod.Rank.GENUS, [genus]))
    out["filtered"] = tol.predict(images[:2], mod.Rank.SPECIES, k=50)
    try:
        tol.create_taxa_filter(mod.Rank.GENUS, [genus, "Nonexistentia"])
    except ValueError as err:
        out["filter_error"] = str(err)
    with open("subset.csv", "w") as handle:
        handle.write(f"genus\\n{genus}\\n")
    tol.apply_filter(tol.create_taxa_filter_from_csv("subset.csv"))
    out["csv_filtered"] = tol.predict(images[2:4], mod.Rank.SPECIES, k=50)
    with open("bad_subset.csv", "w") as handle:
        handle.write("tribe\\nCorvini\\n")
    try:
        tol.create_taxa_filter_from_csv("bad_subset.csv")
    except ValueError as err:
        out["csv_error"] = str(err)
    progress = []
    cls = mod.CustomLabelsClassifier(cls_ary=["duck", "goose", "crow", "magpie"], model_str=model)
    out["labels_all"] = cls.predict(images, callback=lambda done, total: progress.append([done, total]), batch_size=2)
    out["labels_progress"] = progress
    out["labels_k2"] = cls.predict(images, 2)
    binned = mod.CustomLabelsBinningClassifier(cls_to_bin={"duck": "water", "goose": "water", "crow": "land",
                                                           "magpie": "land"}, model_str=model)
    out["bins"] = binned.predict(images, k=1)
    try:
        mod.CustomLabelsBinningClassifier(cls_to_bin={"duck": "water", "crow": ""}, model_str=model)
    except ValueError as err:
        out["bin_error"] = str(err)
    json.dump(out, open(sys.argv[2], "w"))
''')

# The command lines: pybioclip's `bioclip predict` and ours with --columns pybioclip (same flags otherwise).
CLI_SCRIPT = textwrap.dedent('''
    import contextlib, io, json, sys
    module, target, images, out = sys.argv[1], sys.argv[2], sys.argv[3:], {}
    for name, flags in (("family", ["--rank", "family", "--k", "3"]), ("cls", ["--cls", "duck,goose,crow"])):
        argv = ["predict", *images, "--format", "csv", "--model", "hf-hub:imageomics/bioclip", *flags]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            if module == "bioclip":
                from bioclip.__main__ import main as bioclip_main
                sys.argv = ["bioclip", *argv]
                bioclip_main()
            else:
                from bioclip_hf.cli import main as bioclip_hf_main
                flags = ["--columns", "pybioclip", "--preprocess", "pybioclip", "--dtype", "float32", "--no-progress"]
                assert bioclip_hf_main([*argv, *flags]) == 0
        out[name] = buffer.getvalue()
    json.dump(out, open(target, "w"))
''')


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The offline HF cache (model + index) and five photos (PNG, lossless), the last one 320 x 224.

    The non-square photo is squashed by pybioclip (its own transform for Tree-of-Life models) but resized and
    centre-cropped by open_clip's: the drop-in module must pick pybioclip's preprocessing for those models too."""
    root = tmp_path_factory.mktemp("pybioclip_compat")
    cache = root / "hub"
    write_model_release(cache, "imageomics/bioclip", root, seed=0, model_cfg=TINY_224_CFG)
    taxa = random_taxa(40, seed=3)  # some with empty ranks / no epithet / no common name
    write_index_release(cache, "imageomics/TreeOfLife-10M", index_for(16, taxa, seed=1), root)
    rng = np.random.default_rng(0)
    photos = []
    for i in range(5):
        width = 320 if i == 4 else 224
        y, x = np.mgrid[0:224, 0:width]
        smooth = np.stack([x * (i + 1), y * (5 - i), (x + y) * 2], -1) % 256
        pixels = (0.6 * smooth + 0.4 * rng.integers(0, 255, (224, width, 3))).astype(np.uint8)
        photos.append(root / f"photo{i}.png")
        Image.fromarray(pixels).save(photos[-1])
    return root, cache, [f"./{p.name}" for p in photos]  # relative, as typed: both key records by the string given


def _run(script: str, module: str, release, name: str) -> dict:
    root, cache, photos = release
    out = root / f"{name}-{module}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(root / "home"),
           "TORCHDYNAMO_DISABLE": "1"}  # pybioclip wraps the model in torch.compile; eager gives the same numbers
    proc = subprocess.run([sys.executable, "-c", script, module, str(out), *photos], env=env, capture_output=True,
                          text=True, timeout=600, cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def answers(release):
    return {module: _run(SCRIPT, module, release, "api") for module in ("bioclip", "bioclip_hf.pybioclip")}


# Both load the same float32 weights; open_clip's and transformers' CLIP towers agree to <= 1e-5 per feature
# (tests/test_models_parity_open_clip.py). With logit scale exp(log(1/0.07)) = 14.3 a logit moves by <= 14.3 * 2e-5 = 3e-4
# and a probability p by <= p * 2 * 3e-4: a relative tolerance of 1e-3 on every score (and sums of scores).
REL = 1e-3


def assert_same_predictions(ours: list[dict], theirs: list[dict]) -> None:
    """Same keys in the same order, same files, same classes per file, scores within `REL`; the order may differ
    only between classes whose scores are within that tolerance (near ties)."""
    assert [list(r) for r in ours] == [list(r) for r in theirs]
    assert [r["file_name"] for r in ours] == [r["file_name"] for r in theirs]
    for file in dict.fromkeys(r["file_name"] for r in theirs):
        mine = [r for r in ours if r["file_name"] == file]
        pyb = [r for r in theirs if r["file_name"] == file]
        by_class = {json.dumps({k: v for k, v in r.items() if k != "score"}): r["score"] for r in pyb}
        for position, (a, b) in enumerate(zip(mine, pyb)):
            key = json.dumps({k: v for k, v in a.items() if k != "score"})
            assert a["score"] == pytest.approx(b["score"], rel=REL, abs=1e-9), (file, position)
            if key != json.dumps({k: v for k, v in b.items() if k != "score"}):  # a swapped near tie
                assert key in by_class and by_class[key] == pytest.approx(b["score"], rel=2 * REL), (file, position)


@pytest.mark.parametrize("call", ["species", "family", "pil_genus", "filtered", "csv_filtered", "labels_all", "labels_k2",
                                  "bins"])
def test_same_script_same_answers(answers, call):
    theirs, ours = answers["bioclip"][call], answers["bioclip_hf.pybioclip"][call]
    assert theirs, "pybioclip returned nothing: the comparison would be vacuous"
    assert_same_predictions(ours, theirs)


def test_keys_columns_and_errors_match(answers, release):
    theirs, ours = answers["bioclip"], answers["bioclip_hf.pybioclip"]
    assert list(theirs["species"][0]) == pybioclip_columns("species") == list(ours["species"][0])
    assert list(theirs["family"][0]) == pybioclip_columns("family")
    assert {r["file_name"] for r in ours["pil_genus"]} == {"0", "1", "2"}  # in-memory images keyed by position
    assert ours["species"][0]["file_name"] == theirs["species"][0]["file_name"] == "./photo0.png"
    # A taxon without an epithet is "Genus " in pybioclip's species column; the test index has such taxa.
    assert ours["label_data"] == theirs["label_data"]
    assert any(row["species_epithet"] == "" and row["species"].endswith(" ") for row in theirs["label_data"]["rows"])
    assert ours["filter_error"] == theirs["filter_error"] and "Nonexistentia" in theirs["filter_error"]
    assert ours["csv_error"] == theirs["csv_error"] and "named 'tribe'" in theirs["csv_error"]
    assert ours["bin_error"] == theirs["bin_error"] == "Empty, null, or nan are not allowed for bin values."
    assert ours["labels_progress"] == theirs["labels_progress"] == [[2, 5], [4, 5], [5, 5]]
    assert len(theirs["labels_all"]) == 5 * 4 and len(theirs["bins"]) == 5


def test_cli_csv_columns_match_pybioclip(release):
    import csv
    import io

    theirs, ours = (_run(CLI_SCRIPT, module, release, "cli") for module in ("bioclip", "bioclip_hf"))
    for name in ("family", "cls"):
        mine, pyb = (list(csv.DictReader(io.StringIO(text))) for text in (ours[name], theirs[name]))
        assert ours[name].splitlines()[0] == theirs[name].splitlines()[0]  # same header, same column order
        assert_same_predictions([{**r, "score": float(r["score"])} for r in mine], [{**r, "score": float(r["score"])} for r in pyb])
    assert theirs["cls"].splitlines()[0] == ",".join(pybioclip_columns(None))


def test_api_aliases_and_refusals(tiny_model_and_processor, tmp_path):
    from bioclip_hf import CustomLabelsClassifier, TreeOfLifeClassifier
    from bioclip_hf.pybioclip import CustomLabelsBinningClassifier, Rank

    model, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match="disagree"):
        CustomLabelsClassifier(["a"], model_name_or_path="imageomics/bioclip", model_str="hf-hub:imageomics/bioclip-2")
    with pytest.raises(ValueError, match="pretrained tags"):
        CustomLabelsClassifier(["a"], model_str="ViT-B-16", pretrained_str="openai")
    with pytest.raises(ValueError, match="labels or cls_ary"):
        CustomLabelsClassifier(["a"], cls_ary=["b"], model=model, processor=processor)
    with pytest.raises(ValueError, match="Empty, null, or nan"):  # refused before any model is loaded
        CustomLabelsBinningClassifier({"duck": "water", "crow": float("nan")}, model_str="imageomics/not-downloaded")
    with pytest.raises(ValueError, match="unknown record_keys"):
        CustomLabelsClassifier(["a", "b"], model=model, processor=processor, record_keys="csv")
    with pytest.raises(ValueError, match="index_revision applies"):
        TreeOfLifeClassifier(index=tmp_path, index_revision="main", model=model, processor=processor)
    assert [rank.get_label() for rank in Rank] == ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(image)
    clf = CustomLabelsClassifier(cls_ary=["x", "y"], templates=("{}",), model=model, processor=processor)
    assert clf.predict(str(image), None, 1) == clf.predict(str(image), k=None)  # pybioclip order: images, k, batch_size
