"""Caption layouts of TreeOfLife WebDataset shards and how a sample's training text is chosen from them.

Two layouts exist in the wild; the stream detects which one a source uses from its field names:

| text type           | bioclip-hf (`dataset_scripts/build_shards.py`) | Imageomics (`make_wds.py`, TreeOfLife-toolbox) |
|---------------------|------------------------------------------------|------------------------------------------------|
| `taxonomic`         | `taxonomic.txt` (bare name)                    | `taxon.txt` ("a photo of ...")                 |
| `scientific`        | `scientific.txt`                               | `sci.txt`                                      |
| `common`            | `common.txt`                                   | `com.txt`                                      |
| `taxonomic+common`  | `taxonomic_common.txt`                         | `taxon_com.txt`                                |
| `scientific+common` | `scientific_common.txt`                        | `sci_com.txt`                                  |

Ours stores bare names plus `taxon.json` and applies the prompt template at load time; Imageomics' shards
store finished captions ("a photo of Corvus corax."), so no second template is applied. Their other members
(`scientific_name.txt`, `taxonomic_name.txt`, `common_name.txt`, `taxonTag.txt`, `taxonTag_com.txt`,
`classes`) are not captions used in training; `taxonTag.txt` ("a photo of kingdom Animalia ... species
corax.") gives the ranks back for the sample's `taxon`.

Text-type mixing (`text_type="mixed"`):
- `per_sample` (ours): one of the five types drawn per sample, seeded by (seed, epoch, sample key).
- `per_batch` (BioCLIP's original trainer): one type for the whole batch, `random.seed(step)` then
  `random.choice([sci, com, taxon, sci_com, taxon_com])` with `step` the optimizer step; the loader
  then tokenizes all five captions and the trainer picks (`per_batch_text_type`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from bioclip_hf.treeoflife.taxonomy import RANKS, TEXT_TYPES, Taxon, apply_template, sample_text_type

TEXT_MIXING = ("per_sample", "per_batch")
TAXON_FIELD = "taxon.json"
# The original trainer's list order for the per-batch draw (src/training/train.py: sci, com, taxon, sci_com, taxon_com).
PER_BATCH_ORDER: tuple[str, ...] = ("scientific", "common", "taxonomic", "scientific+common", "taxonomic+common")
# A type whose caption is missing falls back to the closest one without a common name.
_FALLBACK = {"common": "scientific", "taxonomic+common": "taxonomic", "scientific+common": "scientific"}
_TAG_RE = re.compile(r"(?:^|\s)(kingdom|phylum|class|order|family|genus|species)\s")


@dataclass(frozen=True)
class CaptionLayout:
    """Where a layout keeps the caption of each text type.

    Args:
        name: "bioclip-hf" or "imageomics".
        fields: text type -> member (field) name.
        templated: the stored texts are bare names that still need the prompt template.
        other_fields: known non-caption members (ignored for training).
    """

    name: str
    fields: dict[str, str]
    templated: bool
    other_fields: tuple[str, ...] = field(default_factory=tuple)

    def caption(self, example: dict[str, Any], text_type: str, template: str | None) -> tuple[str, str]:
        """(caption, text type used) for `text_type`; raises ValueError when the sample has no text."""
        if self.templated:
            return _our_caption(example, text_type, template)
        chosen = text_type
        text = _clean(example.get(self.fields[chosen]))
        while not text and chosen in _FALLBACK:
            chosen = _FALLBACK[chosen]
            text = _clean(example.get(self.fields[chosen]))
        if not text:
            raise ValueError("sample has no text")
        return text, chosen

    def taxon(self, example: dict[str, Any]) -> dict[str, str]:
        """The sample's ranks and common name (`Taxon.to_dict` keys); empty strings where unknown."""
        if self.templated:
            return dict(example.get(TAXON_FIELD) or {})
        return official_taxon(example).to_dict()

    def draw(self, example: dict[str, Any], rng: random.Random) -> str:
        """A uniformly drawn text type (ours: types needing a missing common name fall back, as in the paper)."""
        taxon = Taxon.from_dict(example.get(TAXON_FIELD) or {}) if self.templated else None
        return sample_text_type(rng, taxon)


def _clean(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    return value.strip() if isinstance(value, str) else ""


def _our_caption(example: dict[str, Any], text_type: str, template: str | None) -> tuple[str, str]:
    text = _clean(example.get(OURS.fields[text_type])) or Taxon.from_dict(example.get(TAXON_FIELD) or {}).text(text_type)
    if not text:
        raise ValueError("sample has no text")
    return (apply_template(template, text) if template else text), text_type


OURS = CaptionLayout(
    "bioclip-hf",
    {"taxonomic": "taxonomic.txt", "scientific": "scientific.txt", "common": "common.txt",
     "taxonomic+common": "taxonomic_common.txt", "scientific+common": "scientific_common.txt"},
    templated=True, other_fields=(TAXON_FIELD, "source.txt"),
)  # fmt: skip
OFFICIAL = CaptionLayout(
    "imageomics",
    {"taxonomic": "taxon.txt", "scientific": "sci.txt", "common": "com.txt",
     "taxonomic+common": "taxon_com.txt", "scientific+common": "sci_com.txt"},
    templated=False,
    other_fields=("scientific_name.txt", "taxonomic_name.txt", "common_name.txt", "taxonTag.txt",
                  "taxonTag_com.txt", "classes"),
)  # fmt: skip
LAYOUTS = (OURS, OFFICIAL)


def detect_layout(field_names: Any, location: str) -> CaptionLayout:
    """The caption layout of a source from its field names; one ValueError naming the fields otherwise.

    Example:
        >>> detect_layout(["jpg", "sci.txt", "taxon.txt", "classes"], "shards/").name
        'imageomics'
    """
    names = set(field_names or ())
    for layout in LAYOUTS:
        if names & set(layout.fields.values()) or (layout.templated and TAXON_FIELD in names):
            return layout
    expected = "; ".join(f"{layout.name}: {', '.join(layout.fields.values())}" for layout in LAYOUTS)
    found = ", ".join(sorted(names)) or "none"
    raise ValueError(f"{location}: no caption fields of a known shard layout (found fields: {found}; expected {expected})")


def official_taxon(example: dict[str, Any]) -> Taxon:
    """Ranks from Imageomics' `taxonTag.txt` ("a photo of kingdom Animalia ... species corax."), common name
    from `common_name.txt` unless that only repeats the scientific/taxonomic name (make_wds.py's fallback)."""
    tagged = _clean(example.get("taxonTag.txt")).removeprefix("a photo of").strip().rstrip(".")
    parts = _TAG_RE.split(" " + tagged)
    values = {rank: value.strip() for rank, value in zip(parts[1::2], parts[2::2])}
    common = _clean(example.get("common_name.txt"))
    if common in (_clean(example.get("scientific_name.txt")), _clean(example.get("taxonomic_name.txt"))):
        common = ""
    return Taxon(*(values.get(rank, "") for rank in RANKS), common)


def per_batch_text_type(step: int) -> str:
    """BioCLIP's per-batch choice for optimizer step `step`: `random.seed(step); random.choice(...)`.

    Example:
        >>> per_batch_text_type(0) in TEXT_TYPES
        True
    """
    return random.Random(step).choice(PER_BATCH_ORDER)


def select_batch_text_type(batch: dict[str, Any], step: int) -> dict[str, Any]:
    """Per-batch text mixing: keep only the captions of the type `per_batch_text_type(step)` picks.

    Batches built with `text_mixing: per_batch` carry `input_ids_by_type` (one row per text type, in `TEXT_TYPES`
    order); other batches are returned unchanged. Training passes the optimizer step, validation the batch number
    (the original validation seeds with it), so both draw the same way.

    Example:
        >>> select_batch_text_type({"input_ids": [1]}, step=0)
        {'input_ids': [1]}
    """
    if "input_ids_by_type" not in batch:
        return batch
    batch = dict(batch)
    batch["input_ids"] = batch.pop("input_ids_by_type")[TEXT_TYPES.index(per_batch_text_type(step))]
    return batch


def check_text_mixing(text_mixing: str) -> str:
    if text_mixing not in TEXT_MIXING:
        raise ValueError(f"text_mixing must be one of {', '.join(TEXT_MIXING)}, got {text_mixing!r}")
    return text_mixing


__all__ = [
    "LAYOUTS",
    "OFFICIAL",
    "OURS",
    "PER_BATCH_ORDER",
    "TAXON_FIELD",
    "TEXT_MIXING",
    "TEXT_TYPES",
    "CaptionLayout",
    "check_text_mixing",
    "detect_layout",
    "official_taxon",
    "per_batch_text_type",
    "select_batch_text_type",
]
