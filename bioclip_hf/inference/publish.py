"""Publish a batch run (embeddings and/or predictions in Parquet parts) as a Hub dataset with a dataset card.

The parts go to `data/` in one commit with a README.md whose YAML declares them as the default config, so
`datasets.load_dataset(repo_id)` and embedding explorers read them as they are; the card says which model
(and revision) made them, with which options, and how many images were unreadable (listed in `errors.csv`).

Example:
    >>> push_parts(list_parts("emb/"), "me/camera-trap-embeddings", metadata)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CARD_BODY = """
# {title}

{what} of {images:,} images made with [bioclip-hf](https://github.com/Imageomics) `{command}` and the model
[`{model}`]({model_url}){revision}.

- rows: {rows:,} in {files} Parquet file(s) under `data/`
- columns: {columns}
- unreadable images: {errors:,}{errors_note}

## Usage

```python
from datasets import load_dataset

ds = load_dataset("{repo_id}", split="train")
```

## How it was made

Options of the run (also stored in each Parquet file's metadata under the key `bioclip_hf`):

```json
{options}
```
"""


def render_card(repo_id: str, metadata: Mapping[str, Any], columns: Sequence[str], rows: int, images: int,
                files: int, errors: int) -> str:  # fmt: skip
    """README.md text (YAML header + body) for a pushed run."""
    from huggingface_hub import DatasetCard, DatasetCardData

    command = str(metadata.get("command", "embed"))
    embeds = "embedding" in columns
    tags = ["bioclip", "biology", "tree-of-life"] + (["embeddings"] if embeds else ["predictions"])
    data = DatasetCardData(tags=tags, configs=[{"config_name": "default",
                                                "data_files": [{"split": "train", "path": "data/*.parquet"}]}])  # fmt: skip
    model = str(metadata.get("model", ""))
    revision = metadata.get("revision") or metadata.get("commit")
    body = CARD_BODY.format(
        title=repo_id.split("/")[-1], what="Image embeddings" if embeds else "Predictions", images=images,
        command=command, model=model, model_url=f"https://huggingface.co/{model}" if "/" in model and not
        Path(model).exists() else model, revision=f" (revision `{revision}`)" if revision else "", rows=rows,
        files=files, columns=", ".join(f"`{c}`" for c in columns), errors=errors,
        errors_note=" (listed in `errors.csv`)" if errors else "", repo_id=repo_id,
        options=json.dumps(metadata.get("options", {}), indent=2, default=str),
    )  # fmt: skip
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def push_parts(parts: Mapping[int, Path], repo_id: str, metadata: Mapping[str, Any],
               errors: Sequence[Mapping[str, Any]] = (), key_column: str = "file", private: bool = False,
               token: str | None = None) -> str:  # fmt: skip
    """Upload the non-empty parts to `data/` of dataset `repo_id` (created if needed) with a card; one commit.

    Files of an earlier push under `data/` that this run does not have are removed in the same commit.
    Returns the URL of the dataset.
    """
    import pyarrow.parquet as pq
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from bioclip_hf.inference.parquet import errors_csv, part_info

    if repo_id.count("/") != 1:
        raise ValueError(f"--push-to-hub needs 'owner/name', got {repo_id!r}")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    files = {f"data/{path.name}": path for path in parts.values() if pq.ParquetFile(path).metadata.num_rows}
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files.values())
    images = sum(part_info(path).get("images", 0) for path in parts.values())
    columns = pq.read_schema(next(iter(files.values()))).names if files else []
    operations: list[Any] = [CommitOperationAdd(name, str(path)) for name, path in files.items()]
    card = render_card(repo_id, metadata, columns, rows, images, len(files), len(errors))
    operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
    if errors:
        operations.append(CommitOperationAdd("errors.csv", errors_csv(errors, key_column)))
    stale = [name for name in api.list_repo_files(repo_id, repo_type="dataset")
             if (name.startswith("data/") and name not in files) or (name == "errors.csv" and not errors)]  # fmt: skip
    operations += [CommitOperationDelete(name) for name in stale]
    api.create_commit(repo_id, operations, repo_type="dataset",
                      commit_message=f"bioclip-hf {metadata.get('command', '')}: {rows} rows from {images} images")  # fmt: skip
    logger.info("pushed %d files to %s", len(files), repo_id)
    return str(url)
