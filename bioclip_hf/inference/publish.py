"""Publish a batch run (embeddings and/or predictions in Parquet parts) as a Hub dataset with a dataset card.

The parts go to `data/` in one commit with a README.md whose YAML declares them as the default config, so
`datasets.load_dataset(repo_id)` and embedding explorers read them as they are; the card (rendered from
`bioclip_hf/hub/templates/results_card.md`) says which model (and revision) made them, with which options, and how
many images were unreadable (listed in `errors.csv`). The upload is `bioclip_hf.hub.upload.upload`.

Example:
    >>> push_parts(list_parts("emb/"), "me/camera-trap-embeddings", metadata)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def push_parts(parts: Mapping[int, Path], repo_id: str, metadata: Mapping[str, Any],
               errors: Sequence[Mapping[str, Any]] = (), key_column: str = "file", private: bool = False,
               token: str | None = None) -> str:  # fmt: skip
    """Upload the non-empty parts to `data/` of dataset `repo_id` (created if needed) with a card; one commit.

    Files of an earlier push under `data/` that this run does not have are removed in the same commit.
    Returns the URL of the dataset.
    """
    import pyarrow.parquet as pq

    from bioclip_hf.hub.cards import build_results_card
    from bioclip_hf.hub.upload import upload
    from bioclip_hf.inference.parquet import errors_csv, part_info

    if repo_id.count("/") != 1:
        raise ValueError(f"--push-to-hub needs 'owner/name', got {repo_id!r}")
    row_counts = {path: pq.ParquetFile(path).metadata.num_rows for path in parts.values()}  # one footer read each
    files: dict[str, Any] = {f"data/{path.name}": path for path, count in row_counts.items() if count}
    rows = sum(row_counts.values())
    images = sum(part_info(path).get("images", 0) for path in parts.values())
    columns = pq.read_schema(next(iter(files.values()))).names if files else []
    parquet_files = len(files)
    card = build_results_card(repo_id, metadata, columns, rows, images, parquet_files, len(errors))
    files["README.md"] = str(card).encode("utf-8")
    if errors:
        files["errors.csv"] = errors_csv(errors, key_column)
    # The same commit deletes parts (and an errors.csv) of an earlier push that this run does not have.
    commit = upload(repo_id, files=files, repo_type="dataset", private=private, token=token,
                    delete_patterns=["data/*", "errors.csv"],
                    commit_message=f"bioclip-hf {metadata.get('command', '')}: {rows} rows from {images} images")  # fmt: skip
    logger.info("pushed %d files to %s", parquet_files, repo_id)
    return str(commit.repo_url)
