"""`load_labelled_data` over every data form (folder, tables, datasets on disk / loadable / streamed / on the local Hub),
class texts from lineages and taxa files, the stratified split, bad inputs, and the resumable labelled loader."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from support.images import write_image
from support.labelled import (
    make_labelled_folder,
    split_files,
    to_dataset,
    write_dataset,
    write_table,
    write_taxa,
)

from bioclip_hf.data.labelled import load_labelled_data, stratified_split, val_count
from bioclip_hf.data.labelled_loader import epoch_order, labelled_loader
from bioclip_hf.utils.errors import UsageError


@pytest.fixture(scope="module")
def transform():
    from bioclip_hf import BioCLIPImageProcessor

    return BioCLIPImageProcessor(size=30).transform


def _key_names(examples):
    """Per example, (label id, file name) whatever the form's key spelling."""
    return [(e.label_id, Path(str(e.key)).name) for e in examples]


def _one_line(err):
    message = str(err.value)
    assert "\n" not in message, message
    return message


# -- the data forms ------------------------------------------------------------------------------


def test_folder_by_class_nested_and_case_insensitive(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "duck" / "a.JPG", 1)
    write_image(root / "duck" / "pond" / "b.Png", 2)
    write_image(root / "duck" / ".hidden" / "c.png", 3)  # hidden folders are left out
    (root / "duck" / "notes.txt").write_text("not a photo")
    write_image(root / "swan" / "c.jpeg", 4)
    write_image(root / "swan" / "d.TIFF", 5)
    write_image(root / "stray.png", 6)  # outside class folders: left out
    data = load_labelled_data(root, val_fraction=0.5, seed=0)
    assert data.labels == ["duck", "swan"] and not data.lineage_known and data.class_texts() == ["a photo of duck.", "a photo of swan."]
    keys = sorted(e.key for e in [*data.train, *data.val])
    assert keys == ["duck/a.JPG", "duck/pond/b.Png", "swan/c.jpeg", "swan/d.TIFF"]
    assert data.report.train_counts == {"duck": 1, "swan": 1} and data.report.val_counts == {"duck": 1, "swan": 1}
    assert all(isinstance(e.image, str) and Path(e.image).is_file() for e in data.train)


def test_folder_with_its_own_val_split(tmp_path):
    for part, count in (("train", 3), ("val", 1)):
        for label in ("duck", "swan"):
            for i in range(count):
                write_image(tmp_path / "photos" / part / label / f"{i}.png", i)
    data = load_labelled_data(tmp_path / "photos", val_fraction=0.5)
    assert data.labels == ["duck", "swan"] and len(data.train) == 6 and len(data.val) == 2
    assert sorted(e.key for e in data.val) == ["val/duck/0.png", "val/swan/0.png"]
    assert data.report.split == "the folder's own val/ split"
    # train/ alone: its class folders, with a held-out part drawn from them.
    import shutil

    shutil.rmtree(tmp_path / "photos" / "val")
    alone = load_labelled_data(tmp_path / "photos", val_fraction=0.34)
    assert alone.labels == ["duck", "swan"] and len(alone.train) == 4 and len(alone.val) == 2
    assert all(e.key.startswith("train/") for e in alone.val)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_with_lineage_equal_the_folder(tmp_path, suffix):
    """Real photos: a table (relative or absolute paths) gives the folder's classes, split and lineage texts."""
    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=5)
    folder = load_labelled_data(photos.root, seed=3)
    table = load_labelled_data(write_table(photos, tmp_path / f"labels{suffix}"), seed=3)
    absolute = load_labelled_data(write_table(photos, tmp_path / "abs" / f"labels{suffix}", absolute=True), seed=3)
    for data in (table, absolute):
        assert data.labels == folder.labels and data.lineage_known
        assert _key_names(data.train) == _key_names(folder.train) and _key_names(data.val) == _key_names(folder.val)
        assert all(Path(e.image).is_file() for e in data.val)
    lineage = photos.lineages[photos.labels[0]]
    genus_species = f"{lineage['genus']} {lineage['species']}"
    assert table.classes[0].text == f"Animalia Chordata Aves {genus_species} with common name {photos.labels[0]}"
    assert table.classes[0].taxon.name_at("species") == genus_species and folder.classes[0].taxon is None
    assert table.describe()["lineage_known"] is True and table.describe()["classes"] == photos.labels


def test_table_columns_detected_and_split_column(tmp_path):
    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=4, from_birds=False)
    train_files, val_files = split_files(photos)
    path = write_table(photos, tmp_path / "t.csv", lineage=False, label_column="Species", file_column="FilePath",
                       split={r: "validation" for r in val_files})  # fmt: skip
    data = load_labelled_data(path, val_fraction=0.5)
    assert data.labels == photos.labels and not data.lineage_known
    assert sorted(Path(e.key).name for e in data.val) == sorted(Path(r).name for r in val_files)
    assert len(data.train) == len(train_files) and "split column" in data.report.split
    # No label column under a usual name: the columns are named.
    bad = write_table(photos, tmp_path / "b.csv", lineage=False, label_column="what")
    with pytest.raises(UsageError) as err:
        load_labelled_data(bad)
    assert "no label column" in _one_line(err) and "its columns: file, what" in str(err.value)
    data = load_labelled_data(bad, label_column="what")
    assert data.labels == photos.labels


def test_text_types_and_label_taxa(tmp_path):
    photos = make_labelled_folder(tmp_path, n_classes=4, per_class=3, from_birds=False)
    taxa = write_taxa(photos, tmp_path / "taxa.csv")
    data = load_labelled_data(photos.root, label_taxa=taxa, text_type="scientific")
    assert data.lineage_known and data.text_type == "scientific"
    assert dict(zip(data.labels, (c.text for c in data.classes)))["raven"] == "Corvus corax"
    default = load_labelled_data(photos.root, label_taxa=taxa)
    mallard = default.classes[default.labels.index("mallard")]
    assert mallard.text == "Animalia Chordata Aves Anseriformes Anatidae Anas platyrhynchos with common name mallard"
    assert default.class_texts("{}")[default.labels.index("mallard")] == mallard.text
    with pytest.raises(ValueError) as err:
        load_labelled_data(photos.root, text_type="latin")
    assert "unknown text type 'latin'" in _one_line(err)
    with pytest.raises(UsageError) as err:
        load_labelled_data(photos.root, label_taxa=write_taxa(photos, tmp_path / "part.csv", leave_out=2))
    assert _one_line(err).endswith("does not cover 2 label(s): raven, rose")


def test_uncovered_labels_list_first_few_and_count(tmp_path):
    photos = make_labelled_folder(tmp_path, n_classes=8, per_class=2, from_birds=False)
    with pytest.raises(UsageError) as err:
        load_labelled_data(photos.root, label_taxa=write_taxa(photos, tmp_path / "t.csv", leave_out=7))
    uncovered = photos.labels[1:]
    assert _one_line(err).endswith(f"does not cover 7 label(s): {', '.join(uncovered[:5])}, ... (7 in all)")


def test_datasets_on_disk_loadable_and_streamed(tmp_path):
    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=4, from_birds=False)
    folder = load_labelled_data(photos.root, seed=1)
    saved = load_labelled_data(write_dataset(photos, tmp_path / "ds", class_label=False), seed=1)
    assert saved.labels == folder.labels
    # The same photos held out (the dataset keeps the file names in its image column).
    assert [(e.label_id, e.image["path"]) for e in saved.val] == _key_names(folder.val)
    assert all(isinstance(e.image["bytes"], bytes) for e in saved.train)
    own = load_labelled_data(write_dataset(photos, tmp_path / "dd", val=True))
    assert own.report.split == "the dataset's own 'validation' split"
    assert own.report.val_counts == {label: 1 for label in photos.labels} and len(own.train) == 9

    to_dataset(photos).to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    loadable = load_labelled_data(tmp_path / "pq", seed=1)
    assert [e.label_id for e in loadable.val] == [e.label_id for e in folder.val] and not loadable.streamed
    streamed = load_labelled_data(tmp_path / "pq", streaming=True, max_per_class=3)
    assert streamed.streamed and streamed.labels == photos.labels
    # Held out: the first example of each class in stream order; max_per_class caps what is read.
    assert [e.key for e in streamed.val] == ["train/0", "train/4", "train/8"]
    assert [e.key for e in streamed.train] == ["train/1", "train/2", "train/3", "train/5", "train/6", "train/7",
                                               "train/9", "train/10", "train/11"]  # fmt: skip
    assert streamed.train.len_hint == 9 and streamed.report.train_counts == {label: 3 for label in photos.labels}
    # A streamed dataset's own validation split is used as it is.
    train_files, val_files = split_files(photos)
    to_dataset(photos, relatives=train_files).to_parquet(str(tmp_path / "pv" / "data" / "train-00000-of-00001.parquet"))
    to_dataset(photos, relatives=val_files).to_parquet(str(tmp_path / "pv" / "data" / "validation-00000-of-00001.parquet"))
    own_streamed = load_labelled_data(tmp_path / "pv", streaming=True)
    assert [e.key for e in own_streamed.val] == ["validation/0", "validation/1", "validation/2"]
    assert [e.label_id for e in own_streamed.val] == [0, 1, 2] and len(list(own_streamed.train)) == 9
    assert own_streamed.report.split == "the dataset's own 'validation' split (streamed)"
    capped = load_labelled_data(photos.root, max_per_class=2)
    assert capped.report.train_counts == {label: 1 for label in photos.labels} and len(capped.val) == 3


def test_hub_dataset_downloaded_or_streamed(tmp_path, hub_server, transform):
    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=3, from_birds=False)
    to_dataset(photos).push_to_hub("tester/labelled", token=hub_server.token)
    data = load_labelled_data("tester/labelled")  # the card records 9 examples: downloaded
    assert not data.streamed and data.labels == photos.labels and len(data.train) + len(data.val) == 9
    streamed = load_labelled_data("tester/labelled", streaming=True)
    assert streamed.streamed and len(streamed.val) == 3
    loader = labelled_loader(streamed.train, transform, 4, shuffle=True, seed=0, num_workers=2)
    batches = [labels.tolist() for _, labels in loader]
    assert len(loader) == 2 and [len(b) for b in batches] == [4, 2]  # two workers, every batch once
    assert sorted(sum(batches, [])) == [0, 0, 1, 1, 2, 2]
    single = labelled_loader(streamed.train, transform, 4, shuffle=True, seed=0)
    assert [labels.tolist() for _, labels in single] == batches


# -- the split ------------------------------------------------------------------------------------


def test_stratified_split_is_seeded_stratified_and_keeps_singletons(tmp_path):
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2 + ["d"]
    train, val = stratified_split(labels, 0.2, seed=7)
    assert stratified_split(labels, 0.2, seed=7) == (train, val)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    held = [labels[p] for p in val]
    assert {c: held.count(c) for c in "abcd"} == {"a": 2, "b": 1, "c": 1, "d": 0}
    assert [val_count(n, 0.2) for n in (1, 2, 5, 7, 8, 10)] == [0, 1, 1, 1, 2, 2]
    assert stratified_split(labels, 0.2, seed=8) != (train, val)
    # A class's held-out photos do not depend on the other classes.
    assert [p for p in stratified_split(labels[:10], 0.2, seed=7)[1]] == [p for p in val if labels[p] == "a"]
    # The same draw on every platform: pinned (numpy's PCG64 SeedSequence streams are stable across platforms).
    assert val == [3, 8, 10, 16]

    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=3, from_birds=False)
    (photos.root / "raven" / "2.jpg").unlink()
    (photos.root / "raven" / "3.jpg").unlink()
    data = load_labelled_data(photos.root)
    assert data.report.singleton_classes == ["raven"] and data.report.train_counts["raven"] == 1
    assert data.report.val_counts == {"magpie": 1, "mallard": 1, "raven": 0}
    assert "1 class(es) with one photo (not held out): raven" in data.report.summary()


# -- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_each_get_one_line(tmp_path):
    photos = make_labelled_folder(tmp_path, n_classes=2, per_class=2, from_birds=False)
    cases = []
    one = tmp_path / "one"
    write_image(one / "duck" / "a.png", 1)
    write_image(one / "duck" / "b.png", 2)
    cases.append((one, "has one class only ('duck'); fine-tuning needs at least two"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "no images found in"))
    (tmp_path / "nophotos" / "duck").mkdir(parents=True)
    (tmp_path / "nophotos" / "duck" / "x.txt").write_text("x")
    cases.append((tmp_path / "nophotos", "no images found in"))
    (tmp_path / "data.txt").write_text("x")
    cases.append((tmp_path / "data.txt", "unknown data format 'data.txt'"))
    table = write_table(photos, tmp_path / "t.csv")
    text = table.read_text()
    for i in range(7):
        text += f"gone/{i}.jpg,raven,,,,,,,,\n"
    table.write_text(text)
    cases.append((table, "names 7 file(s) that do not exist: gone/0.jpg, gone/1.jpg, gone/2.jpg, gone/3.jpg, gone/4.jpg, ... (7 in all)"))
    for source, message in cases:
        with pytest.raises(UsageError) as err:
            load_labelled_data(source)
        assert message in _one_line(err), (source, str(err.value))
    with pytest.raises(FileNotFoundError):
        load_labelled_data(tmp_path / "nowhere")


def test_dataset_without_named_columns_names_its_columns(tmp_path):
    photos = make_labelled_folder(tmp_path, n_classes=2, per_class=2, from_birds=False)
    path = write_dataset(photos, tmp_path / "ds")
    for options, message in [({"label_column": "species"}, "has no label column 'species'; its columns: image, label"),
                             ({"image_column": "img"}, "has no image column 'img'; its columns: image, label"),
                             ({"split": "test"}, None)]:  # fmt: skip
        if message is None:  # a single saved Dataset is the training split whatever it is called
            assert load_labelled_data(path, **options).labels == photos.labels
            continue
        with pytest.raises(UsageError) as err:
            load_labelled_data(path, **options)
        assert message in _one_line(err)
    with pytest.raises(UsageError) as err:
        load_labelled_data(write_dataset(photos, tmp_path / "dd", val=True), split="test")
    assert "has no split 'test'; its splits: train, validation" in _one_line(err)


# -- the loader -----------------------------------------------------------------------------------


def test_unreadable_images_are_skipped_and_counted(tmp_path, transform):
    photos = make_labelled_folder(tmp_path, n_classes=2, per_class=4, from_birds=False)
    (photos.root / "raven" / "2.jpg").write_bytes(b"not a jpeg")
    (photos.root / "magpie" / "1.jpg").write_bytes(b"")
    data = load_labelled_data(photos.root, val_fraction=0)
    loader = labelled_loader(data.train, transform, 3, shuffle=False, seed=0, report=data.report)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [2, 2, 2]  # magpie 1-4, raven 1-4 in batches of 3
    assert sorted(loader.skipped) == ["magpie/1.jpg", "raven/2.jpg"] and data.report.num_skipped == 2
    assert "cannot read image raven/2.jpg" in loader.skipped["raven/2.jpg"]
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (2, 3, 30, 30)
    assert batches[0][1].dtype == torch.int64 and batches[0][1].tolist() == [0, 0]
    list(loader)  # a second epoch meets the same images: each is counted once
    assert data.report.num_skipped == 2 and data.describe()["skipped_images"] == 2
    assert "2 unreadable image(s) skipped" in data.report.summary()


def test_loader_is_deterministic_and_resumes_exactly(tmp_path, transform):
    from bioclip_hf import BioCLIPImageProcessor
    from bioclip_hf.data.augment import train_transform

    photos = make_labelled_folder(tmp_path, n_classes=3, per_class=4, from_birds=False)
    examples = load_labelled_data(photos.root, val_fraction=0).train
    augment = functools.partial(train_transform, BioCLIPImageProcessor(size=30))

    def run(epoch, start_batch=0, workers=0):
        loader = labelled_loader(examples, transform, 5, shuffle=True, seed=3, num_workers=workers, epoch=epoch,
                                 start_batch=start_batch, augment=augment)  # fmt: skip
        out = [(pixels.numpy().copy(), labels.tolist()) for pixels, labels in loader]
        return out, loader

    full, loader = run(epoch=2)
    assert len(loader) == 3 and loader.next_batch == 3 and [len(b[1]) for b in full] == [5, 5, 2]
    order = epoch_order(12, 3, 2)
    assert sum((b[1] for b in full), []) == [examples[int(i)].label_id for i in order]
    resumed, _ = run(epoch=2, start_batch=1)
    assert len(resumed) == 2
    for (p1, l1), (p2, l2) in zip(full[1:], resumed):
        assert l1 == l2 and np.array_equal(p1, p2)  # same crops: drawn from (seed, epoch, key)
    workers, _ = run(epoch=2, workers=2)
    assert all(l1 == l2 and np.array_equal(p1, p2) for (p1, l1), (p2, l2) in zip(full, workers))
    other, _ = run(epoch=3)
    assert sum((b[1] for b in other), []) != sum((b[1] for b in full), []) or not np.array_equal(other[0][0], full[0][0])

    plain = labelled_loader(examples, transform, 5, shuffle=False, seed=0, drop_last=True)
    batches = [labels.tolist() for _, labels in plain]
    assert len(plain) == 2 and batches == [[0] * 4 + [1], [1] * 3 + [2] * 2]
    plain.set_epoch(1, start_batch=1)
    assert [labels.tolist() for _, labels in plain] == batches[1:] and plain.start_batch == 0


def test_birds525_metadata_table_gives_binomial_and_common_name(bird_photos):
    """The shared photos' labels.csv (file, common_name, scientific_name): the scientific name labels each class and
    gives genus and epithet; with the common name that is the base model's taxonomic+common text."""
    from support.paths import BIRDS

    data = load_labelled_data(BIRDS / "labels.csv", max_per_class=2)
    assert data.lineage_known and data.num_classes == len(set(data.labels)) > 500
    first = data.classes[0]
    assert first.taxon.genus == first.label.split()[0] and first.taxon.common_name
    assert first.text == f"{first.label} with common name {first.taxon.common_name}"
    assert all(Path(e.image).is_file() for e in data.val[:5])
    common = load_labelled_data(BIRDS / "labels.csv", max_per_class=2, text_type="common")
    assert common.classes[0].text == first.taxon.common_name
