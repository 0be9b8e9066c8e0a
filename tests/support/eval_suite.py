"""Miniatures of the BioCLIP 2 suite's 15 tasks in their exact layouts, with tiny generated images.

- `write_suite_data(root)`: `root/<task>/` for the 13 local tasks: BioCLIP 2's annotation layout (`metadata.csv`
  with pandas' unnamed index column, `filepath,class` [+ lineage], images in class folders) for NABirds and the
  Meta-Album tasks; the same CSV with the columns each protocol reads for FishNet, NeWT, AwA2 (+ its .txt files),
  Herbarium19 and PlantDoc.
- `push_hub_tasks(server_token, scratch)`: `imageomics/rare-species` (a `datasets` image folder with the Hub's own
  column names) and `imageomics/IDLE-OO-Camera-Traps` (`<subset>-balanced.csv` + `data/test/<subset>/`) on the
  local Hub test server.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .images import make_image

LOCAL_TASKS = ("nabirds", "plankton", "insects", "insects2", "plantnet", "fungi", "plantvillage", "medicinal_leaf",
               "fishnet", "newt", "awa2", "herbarium19", "plantdoc")  # fmt: skip
HUB_TASKS = ("rare_species", "camera_trap")
CAMERA_SUBSETS = ("desert-lion", "ENA24", "island", "orinoquia", "ohio-small-animals")
LINEAGE = ("kingdom", "phylum", "cls", "order", "family", "genus", "species")
TAXA = [  # lineage (kingdom .. epithet), common name
    (("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"), "common raven"),
    (("Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Panthera", "leo"), "lion"),
    (("Animalia", "Chordata", "Mammalia", "Rodentia", "Sciuridae", "Sciurus", "niger"), "fox squirrel"),
]
PER_CLASS = 6  # >= 5 + 1: 5-shot SimpleShot keeps a query per class
FISHNET_TRAITS = ("Tropical", "Temperate", "Subtropical", "Boreal", "Polar", "freshwater", "saltwater", "brackish")
AWA2_CLASSES = ("antelope", "grizzly+bear", "killer+whale", "beaver")
AWA2_TRAIN, AWA2_TEST = AWA2_CLASSES[:2], AWA2_CLASSES[2:]


def _image(path: Path, index: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_image(index))
    return str(path)


def write_annotation(folder: Path, rows: list[dict], name: str = "metadata.csv", index_column: bool = True) -> Path:
    """A CSV as BioCLIP 2's annotation files: pandas' saved index as an unnamed first column, then the rows."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (folder / name).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(([""] if index_column else []) + columns)
        for i, row in enumerate(rows):
            writer.writerow(([i] if index_column else []) + [row.get(c, "") for c in columns])
    return folder / name


def species_folder(folder: Path, classes: list[str], seed: int, lineage: bool = False) -> Path:
    """`folder/<class>/<n>.jpg` + metadata.csv (filepath,class [+ lineage, common_name]), rows interleaved."""
    rows = []
    for n in range(PER_CLASS):
        for c, name in enumerate(classes):
            rel = f"{name}/{n}.jpg"
            _image(folder / rel, seed + 31 * c + n)
            row = {"filepath": rel, "class": name}
            if lineage:
                ranks, common = TAXA[c % len(TAXA)]
                row.update(dict(zip(LINEAGE, ranks)), common_name=common)
            rows.append(row)
    return write_annotation(folder, rows)


def fishnet_folder(folder: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(24):
        rel = f"Image_Library/Family{i % 3}/{i}.jpg"
        _image(folder / rel, 500 + i)
        traits = {t: str(int(v)) for t, v in zip(FISHNET_TRAITS, rng.integers(0, 2, len(FISHNET_TRAITS)))}
        if i == 5:
            traits["Polar"] = ""  # a null trait: the original drops the row
        rows.append({"filepath": rel, "split": "train" if i < 16 else "test",
                     "FeedingPath": "pelagic" if i % 2 else "benthic", **traits})  # fmt: skip
    write_annotation(folder, rows)


def newt_folder(folder: Path) -> None:
    rows = []
    for t, task in enumerate(("appearance_age_owl", "behavior_feeding_bee")):
        for i in range(14):  # 10 train (5 per label: the SVM search's 5-fold CV needs them), 4 test
            image_id = f"{t}{i:04d}"
            rel = f"newt2021_images/{image_id}.jpg"
            _image(folder / rel, 700 + 20 * t + i)
            rows.append({"id": image_id, "filepath": rel, "task": task, "label": str(i % 2),
                         "split": "train" if i < 10 else "test", "task_cluster": "appearance", "task_subcluster": ""})  # fmt: skip
    write_annotation(folder, rows)


def awa2_folder(folder: Path) -> None:
    rng = np.random.default_rng(2)
    rows = []
    for c, name in enumerate(AWA2_CLASSES):
        for i in range(4):
            rel = f"JPEGImages/{name}/{name}_{i:05d}.jpg"
            _image(folder / rel, 900 + 10 * c + i)
            rows.append({"filepath": rel, "class": name})
    write_annotation(folder, rows)
    (folder / "classes.txt").write_text("".join(f"{i + 1}\t{n}\n" for i, n in enumerate(AWA2_CLASSES)))
    (folder / "trainclasses.txt").write_text("".join(f"{n}\n" for n in AWA2_TRAIN))
    (folder / "testclasses.txt").write_text("".join(f"{n}\n" for n in AWA2_TEST))
    matrix = rng.integers(0, 2, (len(AWA2_CLASSES), 85))
    (folder / "predicate-matrix-binary.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in matrix))


def herbarium19_folder(folder: Path, classes: int = 4, per_class: int = 6) -> None:
    rows = []
    for c in range(classes):
        for i in range(per_class):
            rel = f"small-train/{c}/{i}.jpg"
            _image(folder / rel, 1100 + 10 * c + i)
            rows.append({"filepath": rel, "class": str(c), "split": "train"})
    write_annotation(folder, rows)


def plantdoc_folder(folder: Path) -> None:
    rows = []
    for split, count in (("train", 3), ("test", 2)):
        for c, name in enumerate(("Apple leaf", "Corn rust leaf", "Tomato leaf")):
            for i in range(count):
                rel = f"{split}/{name}/{i}.jpg"
                _image(folder / rel, 1300 + 100 * (split == "test") + 10 * c + i)
                rows.append({"filepath": rel, "split": split, "class": name})
    write_annotation(folder, rows)


def write_suite_data(root: Path, tasks: tuple[str, ...] = LOCAL_TASKS) -> Path:
    """`root/<task>/` for each local task of the suite, in its layout; returns `root`."""
    builders = {"fishnet": fishnet_folder, "newt": newt_folder, "awa2": awa2_folder,
                "herbarium19": herbarium19_folder, "plantdoc": plantdoc_folder}  # fmt: skip
    for t, task in enumerate(tasks):
        if task in builders:
            builders[task](root / task)
        elif task == "nabirds":
            species_folder(root / task, ["Oak Titmouse", "Ovenbird", "Savannah Sparrow"], seed=100)
        else:
            species_folder(root / task, [f"{task} class {c}" for c in range(3)], seed=200 + 50 * t)
    return root


def rare_species_folder(folder: Path) -> Path:
    """The Hub dataset's layout: `dataset/<lineage>/<id>.jpg` + metadata.csv with its own column names."""
    rows = []
    for n in range(PER_CLASS):
        for c, (ranks, common) in enumerate(TAXA):
            rel = f"dataset/{'_'.join(ranks)}/{n}_{c}_eol-full-size-copy.jpg"
            _image(folder / rel, 1500 + 31 * c + n)
            rows.append({"file_name": rel, **dict(zip(("kingdom", "phylum", "class", "order", "family", "genus",
                         "species"), ranks)), "sciName": f"{ranks[5]} {ranks[6]}", "common": common})  # fmt: skip
    write_annotation(folder, rows, index_column=False)
    return folder


def camera_trap_folder(folder: Path, classes: int = 2) -> Path:
    """The Hub dataset's layout: `<subset>-balanced.csv` (annotation rows) and `data/test/<subset>/` images."""
    for s, subset in enumerate(CAMERA_SUBSETS):
        rows = []
        for n in range(PER_CLASS):
            for c in range(classes):
                ranks, common = TAXA[(s + c) % len(TAXA)]
                rel = f"{common.replace(' ', '_')}_{n}.jpg"
                _image(folder / "data" / "test" / subset / rel, 1700 + 100 * s + 31 * c + n)
                rows.append({"filepath": rel, "class": f"{ranks[5]} {ranks[6]}", **dict(zip(LINEAGE, ranks)),
                             "common_name": common})  # fmt: skip
        write_annotation(folder, rows, name=f"{subset}-balanced.csv")
    return folder


def push_hub_tasks(token: str, scratch: Path) -> dict[str, Path]:
    """Upload the two Hub tasks to the local Hub test server (their official ids); returns their local folders."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    folders = {"imageomics/rare-species": rare_species_folder(scratch / "rare-species"),
               "imageomics/IDLE-OO-Camera-Traps": camera_trap_folder(scratch / "IDLE-OO-Camera-Traps")}  # fmt: skip
    for repo_id, folder in folders.items():
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")
    return folders
