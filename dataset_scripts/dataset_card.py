"""Write the dataset card (README.md with Hub YAML metadata) for a folder of shards built by build_shards.py.

The YAML declares `configs` -> `data_files` per split (so `load_dataset(repo)` finds the tars without a
loading script), the `features` of one sample, `license`, `task_categories` and `size_categories`. The card is
rendered by `bioclip_hf.hub.cards.build_dataset_card` (huggingface_hub's `DatasetCard.from_template`) from the
template shipped in the package, `bioclip_hf/hub/templates/dataset_card.md` (`dataset_card.md` here links to it).

Example:
    >>> write_dataset_card("shards", report, name="my-tol", repo_id="me/my-tol")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))  # fmt: skip
TAXON_FIELDS = ("class", "common_name", "family", "genus", "kingdom", "order", "phylum", "species")
TEXT_FIELDS = ("taxonomic.txt", "scientific.txt", "common.txt", "taxonomic_common.txt", "scientific_common.txt",
               "source.txt")  # fmt: skip


def size_category(num_samples: int) -> str:
    """The Hub's `size_categories` bucket for `num_samples` rows."""
    for limit, label in _SIZE_CATEGORIES:
        if num_samples < limit:
            return label
    return "n>1T" if num_samples >= 1_000_000_000_000 else "1B<n<10B"


def card_metadata(report: Any, name: str, license: str) -> dict[str, Any]:
    """The YAML header of the card as a dict (see module docstring)."""
    splits = sorted(report.splits)
    split_bytes = {split: 0 for split in splits}
    for shard in report.shards:
        split_bytes[shard["path"].split("/")[0]] += int(shard["bytes"])
    # `__key__` (the sample key) is declared so it stays in the stream: loaders seed per-sample draws with it.
    features = [{"name": "__key__", "dtype": "string"}, {"name": "jpg", "dtype": "image"}]
    features += [{"name": field, "dtype": "string"} for field in TEXT_FIELDS]
    features.append({"name": "taxon.json", "struct": [{"name": key, "dtype": "string"} for key in TAXON_FIELDS]})
    return {
        "license": license,
        "pretty_name": name,
        "language": ["en", "la"],
        "task_categories": ["zero-shot-image-classification", "image-classification"],
        "tags": ["biology", "taxonomy", "tree-of-life", "webdataset", "clip"],
        "size_categories": [size_category(report.num_samples)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": split, "path": f"{split}/*.tar"} for split in splits]}],  # fmt: skip
        "dataset_info": {
            "features": features,
            "splits": [{"name": split, "num_bytes": split_bytes[split], "num_examples": report.splits[split]}
                       for split in splits],  # fmt: skip
            "download_size": sum(split_bytes.values()),
            "dataset_size": sum(split_bytes.values()),
        },
    }


def write_dataset_card(out_dir: str | Path, report: Any, name: str, license: str = "cc0-1.0",
                       repo_id: str | None = None) -> Path:  # fmt: skip
    """Render the dataset card for the shards described by `report` (a `BuildReport`) into `out_dir/README.md`.

    Args:
        out_dir: the shard folder.
        report: `BuildReport` with `num_samples`, `splits`, `shards`, `skipped`.
        name: dataset title.
        license: license id for the YAML header.
        repo_id: Hub id shown in the usage snippet (defaults to `name`).

    Returns:
        Path of the written README.md.
    """
    from bioclip_hf.hub.cards import build_dataset_card
    from bioclip_hf.utils.io import atomic_path

    card = build_dataset_card(
        card_metadata(report, name, license), name=name, repo_id=repo_id or name, license=license,
        num_samples=report.num_samples, splits=report.splits, num_shards=len(report.shards),
        shard_size=max((shard["num_samples"] for shard in report.shards), default=0),
        num_skipped=report.num_skipped, skipped=report.skipped,
    )  # fmt: skip
    path = Path(out_dir) / "README.md"
    with atomic_path(path) as scratch:
        card.save(scratch)
    return path
