"""TreeOfLife sources that are image tars plus a catalog, streamed without a conversion step.

- **TreeOfLife-10M** (`imageomics/TreeOfLife-10M` on the Hub, or a local folder with the same layout):
  `dataset/EOL/image_set_*.tar.gz` (members `<treeoflife_id>.jpg`) + `metadata/catalog.csv`
  (`split`, `treeoflife_id`, ..., `kingdom` ... `species`, `common`). Only the EOL images are in the repo.
- **TreeOfLife-200M** (local): `shard-######.tar` rebuilt with Imageomics' distributed-downloader /
  TreeOfLife-toolbox (members `<uuid>.jpg`, other members ignored) + `catalog.parquet` keyed by `uuid`.

Captions are joined from the catalog by the member's id (`CatalogIndex`, built once into an on-disk cache that
every process and loader worker memory-maps: `catalog_cache`); the catalog's `split` column is honoured.
Images without a catalog row are skipped and counted (`no_catalog_row`), images of another split are skipped and
counted (`other_split`).
The samples look like our shards' (`jpg` + `taxon.json`), so the rest of `bioclip_hf.data.stream` is shared.

Example:
    >>> source = find_tol_source("imageomics/TreeOfLife-10M")  # doctest: +SKIP
    >>> stream = tol_stream(source, split="train")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bioclip_hf.data.catalog import TOL10M_SCHEMA, TOL200M_SCHEMA, CatalogIndex, CatalogSchema
from bioclip_hf.data.catalog_cache import open_catalog_index
from bioclip_hf.treeoflife.taxonomy import RANKS

logger = logging.getLogger(__name__)

TOL10M_REPO = "imageomics/TreeOfLife-10M"
EOL_DIR = "dataset/EOL"
EOL_PATTERN = "image_set_*.tar.gz"
TOL10M_CATALOG = "metadata/catalog.csv"
TOL200M_CATALOG = "catalog.parquet"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SKIP_FIELD = "_skip"  # reason a sample is skipped ("" for good samples)
DATA_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".parquet", ".arrow")  # files `datasets` can stream image samples from
SCHEMAS = {"treeoflife-10m": TOL10M_SCHEMA, "treeoflife-200m": TOL200M_SCHEMA}


@dataclass(frozen=True)
class ToLSource:
    """A located TreeOfLife source.

    Args:
        kind: "treeoflife-10m" or "treeoflife-200m".
        location: the folder or Hub repo id given.
        catalog: local path of the catalog (downloaded to the HF cache for Hub repos).
        shards: image tars, in order: local paths or `hf://datasets/<repo>/<path>` URLs.
    """

    kind: str
    location: str
    catalog: str
    shards: tuple[str, ...]

    @property
    def schema(self) -> CatalogSchema:
        return SCHEMAS[self.kind]

    def index(self) -> CatalogIndex:
        return load_catalog_index(self.catalog, self.kind)

    def num_examples(self, split: str) -> int:
        """Images of `split` the source holds (catalog rows of the split with an image here)."""
        index = self.index()
        index.split_bit(split)  # clear error for an unknown split
        return index.counts[split]


@functools.lru_cache(maxsize=4)
def load_catalog_index(catalog: str, kind: str) -> CatalogIndex:
    """The catalog's `CatalogIndex`, memory-mapped from its cache (built by the first process of a node)."""
    return open_catalog_index(catalog, SCHEMAS[kind])


def _missing(parts: dict[str, bool]) -> list[str]:
    return [name for name, present in parts.items() if not present]


def _local_source(path: Path) -> ToLSource | None:
    eol = sorted((path / EOL_DIR).glob(EOL_PATTERN))
    catalog10m = path / TOL10M_CATALOG
    if eol or catalog10m.exists() or (path / EOL_DIR).is_dir():
        missing = _missing({f"{EOL_DIR}/{EOL_PATTERN}": bool(eol), TOL10M_CATALOG: catalog10m.is_file()})
        if missing:
            raise FileNotFoundError(f"{path} is an incomplete TreeOfLife-10M layout: missing {' and '.join(missing)}")
        return ToLSource("treeoflife-10m", str(path), str(catalog10m), tuple(str(p) for p in eol))
    if (path / TOL200M_CATALOG).is_file():
        shards = sorted(str(p) for p in path.rglob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"{path} has {TOL200M_CATALOG} but no image shards (*.tar) beside or below it")
        return ToLSource("treeoflife-200m", str(path), str(path / TOL200M_CATALOG), tuple(shards))
    return None


def _hub_source(repo_id: str) -> ToLSource | None:
    """The TreeOfLife-10M layout of a Hub dataset repo; None for other repos (e.g. WebDataset shards)."""
    import fnmatch

    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        files = HfApi().list_repo_files(repo_id, repo_type="dataset")
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as err:
        if repo_id.lower() == TOL10M_REPO.lower():
            raise FileNotFoundError(f"cannot list {repo_id} on the Hub: {str(err).splitlines()[0]}") from None
        return None  # let `datasets` report on it (offline cache, private repo, ...)
    eol = sorted(f for f in files if fnmatch.fnmatch(f, f"{EOL_DIR}/{EOL_PATTERN}"))
    has_catalog = TOL10M_CATALOG in files
    looks_like_tol = eol or has_catalog or repo_id.lower() == TOL10M_REPO.lower()
    if not looks_like_tol:
        if not any(f.endswith(DATA_SUFFIXES) for f in files):
            raise FileNotFoundError(
                f"dataset repo {repo_id} has no training data: expected WebDataset shards (*.tar) or the TreeOfLife-10M "
                f"layout ({EOL_DIR}/{EOL_PATTERN} + {TOL10M_CATALOG})"
            )
        return None
    missing = _missing({f"{EOL_DIR}/{EOL_PATTERN}": bool(eol), TOL10M_CATALOG: has_catalog})
    if missing:
        raise FileNotFoundError(
            f"dataset repo {repo_id} is an incomplete TreeOfLife-10M layout: missing {' and '.join(missing)}"
        )
    catalog = hf_hub_download(repo_id, TOL10M_CATALOG, repo_type="dataset")
    shards = tuple(f"hf://datasets/{repo_id}/{name}" for name in eol)
    return ToLSource("treeoflife-10m", repo_id, catalog, shards)


def find_tol_source(location: str) -> ToLSource | None:
    """Locate a TreeOfLife image-tars + catalog source; None when `location` is something else (plain shards).

    Raises FileNotFoundError with one line naming what is missing when the layout is incomplete.

    Example:
        >>> find_tol_source("imageomics/TreeOfLife-10M").kind  # doctest: +SKIP
        'treeoflife-10m'
    """
    path = Path(location).expanduser()
    if path.is_dir():
        return _local_source(path)
    if path.exists():
        return None
    return _hub_source(location)


def _open_shard(shard: str):
    if shard.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        return HfFileSystem().open(shard[len("hf://") :], "rb", block_size=0)  # streamed, never downloaded whole
    return open(shard, "rb")


def iter_tar_images(fileobj: Any, shard: str):
    """`(key, member name, bytes)` of the image members of a (gzipped) tar read as a stream."""
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = PurePosixPath(member.name).name
            key, _, extension = name.partition(".")
            if extension.lower() in IMAGE_EXTENSIONS:
                yield key, name, tar.extractfile(member).read()


def _skipped(key: str, reason: str) -> dict[str, Any]:
    return {"__key__": key, "jpg": None, "taxon.json": None, SKIP_FIELD: reason}


def generate_samples(shards: list[str], catalog: str, kind: str, split: str):
    """Samples of `split` from image tars joined with the catalog (the `datasets` generator; sharded by `shards`)."""
    index = load_catalog_index(catalog, kind)
    bit = index.split_bit(split)
    for shard in shards:
        try:
            with _open_shard(shard) as fileobj:
                for key, name, data in iter_tar_images(fileobj, shard):
                    row = index.lookup(key)
                    if row < 0:
                        yield _skipped(key, f"no_catalog_row: {name} in {shard}")
                    elif not int(index.split_masks[row]) & bit:
                        yield _skipped(key, "other_split")
                    else:
                        yield {"__key__": key, "jpg": {"bytes": data, "path": name}, "taxon.json": index.taxon(row),
                               SKIP_FIELD: ""}  # fmt: skip
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:  # a truncated download: keep going
            logger.warning("skipping the rest of shard %s: %s", shard, err)
            yield _skipped(PurePosixPath(shard).name, f"shard: {err}")


def sample_features():
    """`datasets.Features` of the generated samples."""
    import datasets

    taxon = {name: datasets.Value("string") for name in (*RANKS, "common_name")}
    return datasets.Features({"__key__": datasets.Value("string"), "jpg": datasets.Image(decode=False),
                              "taxon.json": taxon, SKIP_FIELD: datasets.Value("string")})  # fmt: skip


def tol_stream(source: ToLSource, split: str = "train"):
    """A streaming `datasets.IterableDataset` over the source's images of `split` (one shard per tar).

    Example:
        >>> raw = tol_stream(find_tol_source("path/to/TreeOfLife-10M"), split="val")  # doctest: +SKIP
    """
    import datasets

    try:
        source.index().split_bit(split)  # map (or build) the catalog's lookup now and fail early on a bad split
    except ValueError as err:
        raise ValueError(f"dataset {source.location}: {err}") from None
    kwargs = {"shards": list(source.shards), "catalog": source.catalog, "kind": source.kind, "split": split}
    return datasets.IterableDataset.from_generator(generate_samples, features=sample_features(), gen_kwargs=kwargs)


def write_split_shards(source: ToLSource, split: str, out: str | Path, rank: int = 0, world_size: int = 1,
                       shard_size: int = 10_000) -> int:  # fmt: skip
    """Write this process's share of `split` as WebDataset shards in our layout (`<key>.jpg` + `<key>.taxon.json`)
    under `out/<split>/`, atomically; returns the number of samples.

    The catalog's val split is scattered over every EOL image set, so reading it means scanning all of them:
    validation does that once and reads these shards afterwards (`bioclip_hf.training.validation`).

    Example:
        >>> write_split_shards(find_tol_source("imageomics/TreeOfLife-10M"), "val", "val_cache/")  # doctest: +SKIP
    """
    import io
    import json

    from bioclip_hf.utils.io import atomic_directory

    raw = tol_stream(source, split)
    if world_size > 1:
        from datasets.distributed import split_dataset_by_node

        raw = split_dataset_by_node(raw, rank=rank, world_size=world_size)
    count, tar = 0, None
    with atomic_directory(Path(out) / split) as scratch:
        for example in raw:
            if example[SKIP_FIELD]:
                continue
            if count % shard_size == 0:
                tar = _next_shard(tar, scratch / f"shard-{count // shard_size:06d}.tar")
            key = example["__key__"]
            for name, data in (
                (f"{key}.jpg", example["jpg"]["bytes"]),
                (f"{key}.taxon.json", json.dumps(example["taxon.json"]).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            count += 1
        if tar is not None:
            tar.close()
    logger.info("wrote %d %s samples of %s to %s", count, split, source.location, Path(out) / split)
    return count


def _next_shard(current: Any, path: Path):
    if current is not None:
        current.close()
    return tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)


__all__ = ["SKIP_FIELD", "TOL10M_REPO", "ToLSource", "find_tol_source", "generate_samples", "iter_tar_images",
           "load_catalog_index", "tol_stream", "write_split_shards"]  # fmt: skip
