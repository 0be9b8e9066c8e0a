"""Taxon records, the five BioCLIP text types and the prompt templates.

BioCLIP (Stevens et al., CVPR 2024) trains and predicts with five text types built from a taxon:

| text type           | example (Corvus corax)                                                      |
|---------------------|-----------------------------------------------------------------------------|
| `taxonomic`         | Animalia Chordata Aves Passeriformes Corvidae Corvus corax                  |
| `scientific`        | Corvus corax                                                                |
| `common`            | common raven                                                                |
| `taxonomic+common`  | Animalia Chordata Aves Passeriformes Corvidae Corvus corax with common name common raven |
| `scientific+common` | Corvus corax with common name common raven                                  |

`format_text` wraps them in a template ("a photo of {}." by default), exactly as the paper's prompts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
TEXT_TYPES: tuple[str, ...] = ("taxonomic", "scientific", "common", "taxonomic+common", "scientific+common")
logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of {}."

# When a taxon has no common name, types that need one fall back to the closest type without it.
_COMMON_FALLBACK = {"common": "scientific", "taxonomic+common": "taxonomic", "scientific+common": "scientific"}
# Accepted spellings of table columns (CSV headers vary between datasets).
_COLUMN_ALIASES = {
    "class": ("class", "class_", "cls"),
    "species": ("species", "species_epithet", "epithet"),
    "common_name": ("common_name", "common", "vernacular_name", "common name"),
}

# The 80 OpenAI ImageNet prompt templates (Radford et al. 2021), used to embed custom labels.
OPENAI_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip


def check_rank(rank: Any) -> str:
    """Return `rank` lower-cased if it is one of `RANKS` (an Enum member such as pybioclip's `Rank.FAMILY` is
    accepted by name), else raise a clear ValueError."""
    normalized = str(getattr(rank, "name", rank)).strip().lower()
    if normalized not in RANKS:
        raise ValueError(f"unknown rank {rank!r}; choose one of: {', '.join(RANKS)}")
    return normalized


def check_text_type(text_type: str) -> str:
    """Return `text_type` if it is one of `TEXT_TYPES`, else raise a clear ValueError."""
    if text_type not in TEXT_TYPES:
        raise ValueError(f"unknown text type {text_type!r}; choose one of: {', '.join(TEXT_TYPES)}")
    return text_type


def _clean(value: Any) -> str:
    """Missing values (None, NaN, "nan") become ""; everything else a stripped string."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value).strip()
    return "" if text.lower() in ("nan", "none", "null") else text


@dataclass(frozen=True)
class Taxon:
    """One Tree-of-Life node: the seven Linnaean ranks plus a common name; any rank may be empty.

    `species` holds the epithet only ("corax"); `name_at("species")` gives the binomial "Corvus corax".

    Example:
        >>> raven = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven")
        >>> raven.name_at("species"), raven.text("scientific+common")
        ('Corvus corax', 'Corvus corax with common name common raven')
    """

    kingdom: str = ""
    phylum: str = ""
    class_: str = ""
    order: str = ""
    family: str = ""
    genus: str = ""
    species: str = ""
    common_name: str = ""

    def __post_init__(self) -> None:
        for field in ("kingdom", "phylum", "class_", "order", "family", "genus", "species", "common_name"):
            object.__setattr__(self, field, _clean(getattr(self, field)))

    # -- construction / serialisation -------------------------------------------------------------
    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Taxon:
        """Build from a mapping with keys "kingdom" ... "species", "common_name" ("class" for the class rank).

        A "species" value holding a binomial ("Corvus corax") whose first word is the genus is reduced to its epithet.
        """
        lowered = {str(key).strip().lower(): value for key, value in record.items()}

        def get(name: str) -> str:
            for alias in _COLUMN_ALIASES.get(name, (name,)):
                if alias in lowered:
                    return _clean(lowered[alias])
            return ""

        genus, species = get("genus"), get("species")
        words = species.split()
        if len(words) > 1 and genus and words[0] == genus:
            species = " ".join(words[1:])
        return cls(get("kingdom"), get("phylum"), get("class"), get("order"), get("family"), genus, species,
                   get("common_name"))  # fmt: skip

    @classmethod
    def from_tol_entry(cls, entry: Any) -> Taxon:
        """Build from one entry of TreeOfLife-10M's `txt_emb_species.json`: `[[kingdom, ..., epithet], common]`."""
        try:
            ranks, common = entry
            ranks = list(ranks)
        except (TypeError, ValueError):
            raise ValueError(f"bad taxon entry {entry!r}: expected [[kingdom, ..., species], common_name]") from None
        if len(ranks) != len(RANKS):
            raise ValueError(f"bad taxon entry {entry!r}: expected {len(RANKS)} ranks, got {len(ranks)}")
        return cls(*ranks, common)

    def to_dict(self) -> dict[str, str]:
        """Plain dict with keys `RANKS` + "common_name" (the class rank under "class")."""
        return {**dict(zip(RANKS, self.ranks())), "common_name": self.common_name}

    def to_tol_entry(self) -> list:
        """Inverse of `from_tol_entry`."""
        return [list(self.ranks()), self.common_name]

    # -- names -----------------------------------------------------------------------------------
    def ranks(self) -> tuple[str, ...]:
        """The seven stored values, kingdom first; the species slot is the bare epithet."""
        return (self.kingdom, self.phylum, self.class_, self.order, self.family, self.genus, self.species)

    @property
    def scientific_name(self) -> str:
        """The binomial ("Corvus corax"); falls back to the deepest known rank name."""
        if self.species:
            return f"{self.genus} {self.species}".strip()
        return next((name for name in reversed(self.ranks()) if name), "")

    def name_at(self, rank: str) -> str:
        """Name at `rank` ("" when unknown); for "species" the binomial "Genus epithet"."""
        rank = check_rank(rank)
        if rank == "species":
            return f"{self.genus} {self.species}".strip() if self.species else ""
        return self.ranks()[RANKS.index(rank)]

    def lineage(self, rank: str = "species") -> tuple[str, ...]:
        """Stored values from kingdom down to `rank` inclusive (epithet in the species slot), empties kept.

        The tuple identifies a clade unambiguously (homonyms in different kingdoms stay apart).
        """
        return self.ranks()[: RANKS.index(check_rank(rank)) + 1]

    def text(self, text_type: str = "taxonomic") -> str:
        """The paper's text for `text_type`, without a template (types needing a common name fall back)."""
        text_type = check_text_type(text_type)
        if not self.common_name and text_type in _COMMON_FALLBACK:
            text_type = _COMMON_FALLBACK[text_type]
        taxonomic = " ".join(name for name in self.ranks() if name)
        if text_type == "taxonomic":
            return taxonomic
        if text_type == "scientific":
            return self.scientific_name
        if text_type == "common":
            return self.common_name
        base = taxonomic if text_type == "taxonomic+common" else self.scientific_name
        return f"{base} with common name {self.common_name}"


def format_text(taxon: Taxon, text_type: str = "taxonomic", template: str | Callable[[str], str] = DEFAULT_TEMPLATE) -> str:
    """Prompt text for `taxon`: `template` ("a photo of {}." by default, or a callable) applied to `taxon.text`.

    Example:
        >>> raven = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven")
        >>> format_text(raven, "taxonomic")
        'a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus corax.'
    """
    return apply_template(template, taxon.text(text_type))


def apply_template(template: str | Callable[[str], str], text: str) -> str:
    """`template.format(text)` for format strings, `template(text)` for callables."""
    return template(text) if callable(template) else template.format(text)


def sample_text_type(rng: Any = None, taxon: Taxon | None = None) -> str:
    """Draw one of `TEXT_TYPES` uniformly (the paper's mixed text-type training).

    Args:
        rng: `random.Random`, `numpy.random.Generator` or None (module-level `random`).
        taxon: when given and it has no common name, types needing one fall back
            (common -> scientific, taxonomic+common -> taxonomic, scientific+common -> scientific).

    Example:
        >>> sample_text_type(random.Random(0)) in TEXT_TYPES
        True
    """
    if rng is None:
        index = random.randrange(len(TEXT_TYPES))
    elif hasattr(rng, "integers"):  # numpy Generator
        index = int(rng.integers(len(TEXT_TYPES)))
    else:
        index = rng.randrange(len(TEXT_TYPES))
    text_type = TEXT_TYPES[index]
    if taxon is not None and not taxon.common_name:
        text_type = _COMMON_FALLBACK.get(text_type, text_type)
    return text_type


def sample_text(taxon: Taxon, rng: Any = None, template: str | Callable[[str], str] = DEFAULT_TEMPLATE) -> str:
    """`format_text` with a randomly drawn text type (see `sample_text_type`), for training captions."""
    return format_text(taxon, sample_text_type(rng, taxon), template)


def taxa_from_records(records: Iterable[Mapping[str, Any]]) -> list[Taxon]:
    """`Taxon.from_dict` over an iterable of mappings (e.g. `DataFrame.to_dict("records")`)."""
    return [Taxon.from_dict(record) for record in records]


def read_taxa_table(path: str) -> list[Taxon]:
    """Read a taxa table (CSV/TSV/parquet/JSON) with rank columns (any subset of `RANKS`) and optional common_name.

    A table with a "scientific_name" column and no rank columns is also accepted (split into genus + epithet).
    Repeated rows (e.g. one row per image) are collapsed into one taxon each, in order of first appearance.

    Example:
        >>> read_taxa_table("taxa.csv")  # doctest: +SKIP
    """
    import pandas as pd

    suffix = str(path).lower().rsplit(".", 1)[-1]
    if suffix == "parquet":
        frame = pd.read_parquet(path)
    elif suffix in ("json", "jsonl"):
        frame = pd.read_json(path, lines=suffix == "jsonl")
    else:
        frame = pd.read_csv(path, sep="\t" if suffix == "tsv" else ",", dtype=str, keep_default_na=False)
    columns = {str(column).strip().lower() for column in frame.columns}
    known = set(RANKS) | set(_COLUMN_ALIASES["class"]) | set(_COLUMN_ALIASES["species"])
    if not columns & known:
        if "scientific_name" not in columns:
            raise ValueError(f"{path}: no taxonomic columns found (expected some of {', '.join(RANKS)} or scientific_name)")
        frame = frame.rename(columns={c: str(c).strip().lower() for c in frame.columns})
        split = frame["scientific_name"].astype(str).str.strip().str.split(n=1, expand=True).reindex(columns=[0, 1])
        frame = frame.assign(genus=split[0], species=split[1])
    records = taxa_from_records(frame.to_dict("records"))
    taxa = list(dict.fromkeys(records))  # tables listing one row per image repeat taxa: keep the first of each
    if not taxa:
        raise ValueError(f"{path}: the taxa table is empty")
    if len(taxa) < len(records):
        logger.info("%s: %d rows, %d distinct taxa", path, len(records), len(taxa))
    return taxa
