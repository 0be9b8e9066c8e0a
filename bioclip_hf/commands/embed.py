"""`bioclip-hf embed`: image embeddings to parquet (file + embedding columns) or .npy (+ .files.txt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._records import add_model_arguments, quiet_library_skip_warnings, report_errors

EMBED_SUFFIXES = (".parquet", ".npy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--output", "-o", required=True, help="emb.parquet (file, embedding) or emb.npy (+ emb.files.txt)")
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (not unit-length) embeddings")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..classify import BaseClassifier
    from ..cli import CLIError

    quiet_library_skip_warnings()
    output = Path(args.output)
    if output.suffix.lower() not in EMBED_SUFFIXES:
        raise CLIError(f"--output must end with {' or '.join(EMBED_SUFFIXES)}, got {output.name}")
    embedder = BaseClassifier(model_name_or_path=args.model, revision=args.revision, device=args.device,
                              batch_size=args.batch_size, progress=not args.no_progress,
                              preprocess=args.preprocess)  # fmt: skip
    files, features = embedder.embed_images(args.images, normalize=not args.no_normalize)
    report_errors("embed", embedder.errors)
    if not files:
        raise CLIError("no readable images to embed")
    save_embeddings(output, files, features.cpu().numpy())
    print(f"wrote {len(files)} embeddings of dim {features.shape[1]} to {output}")
    return 0


def save_embeddings(output: Path, files: list[str], array) -> None:
    """parquet: one row per image (file, embedding list); npy: `[M, D]` float32 plus `<stem>.files.txt`."""
    import numpy as np

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".npy":
        np.save(output, array.astype(np.float32))
        output.with_suffix(".files.txt").write_text("".join(f"{file}\n" for file in files), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dim = array.shape[1]
        values = pa.array(array.astype(np.float32).reshape(-1))
        table = pa.table({"file": files, "embedding": pa.FixedSizeListArray.from_arrays(values, dim)})
        pq.write_table(table, output)
