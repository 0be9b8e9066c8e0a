"""Zero-shot classification as BioCLIP 2 evaluates its species tasks.

Follows Imageomics/bioclip-2 `src/evaluation/classification.py` (`zero_shot_classifier`, `accuracy`,
`evaluate_zero_shot`), `src/evaluation/data.py` (`DatasetFromFile`: class strings and label order),
`src/imageomics/naming_eval.py` (`Taxon`, `to_classes`: the text types) and
`src/training/imagenet_zeroshot_data.py` (`openai_imagenet_template`).

Deviations:
- The class count caps k as the original does (`min(C, 3)`, `min(C, 5)`), but the keys keep the asked k
  (`zero_shot_top5` with 4 classes is top-4), so every task reports the same keys.
- `sci` / `sci_com` of a row without genus: the original makes the class `None`; here it is a ValueError.
- Cells pandas would read as missing (`NA`, `nan`, ...) count as empty, like `read_csv(...).fillna('')`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, OPENAI_TEMPLATES

# `a photo of {}.` then CLIP's 80 ImageNet templates, in bioclip-2's order (the package's one copy of CLIP's list).
OPENAI_IMAGENET_TEMPLATES: list[str] = [DEFAULT_TEMPLATE, *OPENAI_TEMPLATES]

TEXT_TYPES = ("asis", "sci", "taxon", "com", "sci_com", "taxon_com")
_RANKS = ("kingdom", "phylum", "cls", "order", "family", "genus")
# Strings pandas.read_csv reads as NaN by default (then `.fillna('')` makes them empty).
_PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column, "")
    value = "" if value is None else str(value)
    return "" if value in _PANDAS_NA else value


def _scientific(row: Mapping[str, Any]) -> str | None:
    genus, species, subspecies = _cell(row, "genus"), _cell(row, "species"), _cell(row, "subspecies")
    if subspecies:
        return f"{genus.capitalize()} {species.lower()} {subspecies.lower()}"
    if species:
        return f"{genus.capitalize()} {species.lower()}"
    return genus.capitalize() if genus else None


def _taxonomic(row: Mapping[str, Any]) -> str:
    subspecies = _cell(row, "subspecies")
    tail = [_cell(row, "species").lower()] + ([subspecies.lower()] if subspecies else [])
    if not _cell(row, "kingdom"):
        return " ".join([_cell(row, "genus").capitalize(), *tail])
    return " ".join([*(_cell(row, rank).capitalize() for rank in _RANKS), *tail])


def class_text(row: Mapping[str, str], text_type: str) -> str:
    """The class string of one annotation row for a bioclip-2 text type (`naming_eval.to_classes`).

    Args:
        row: annotation row; `class` for `asis`, else lineage columns `kingdom, phylum, cls, order, family, genus,
            species` (and optional `subspecies`, `common_name`); a missing column counts as empty.
        text_type: `asis` (the `class` column), `sci` (genus species), `taxon` (the seven ranks, or genus species
            without a kingdom), `com` (common name), `sci_com` / `taxon_com` (... `with common name` ...).

    Example:
        >>> row = {"kingdom": "Animalia", "phylum": "Chordata", "cls": "Aves", "order": "Passeriformes",
        ...        "family": "Corvidae", "genus": "Corvus", "species": "corax", "common_name": "common raven"}
        >>> class_text(row, "taxon_com")
        'Animalia Chordata Aves Passeriformes Corvidae Corvus corax with common name common raven'
    """
    if text_type == "asis":
        if "class" not in row:
            raise ValueError("annotation column 'class' is missing (text type asis)")
        return _cell(row, "class")
    if text_type not in TEXT_TYPES:
        raise ValueError(f"unknown text type {text_type!r}; expected one of {', '.join(TEXT_TYPES)}")
    common = _cell(row, "common_name")
    if text_type == "com":
        return common
    if text_type.startswith("taxon"):
        name = _taxonomic(row)
    else:
        name = _scientific(row)
        if name is None:
            raise ValueError(f"text type {text_type}: row has no genus (columns genus/species are empty or missing)")
    if text_type.endswith("_com") and common:
        return f"{name} with common name {common}"
    return name


def class_labels(rows: Sequence[Mapping[str, str]], text_type: str = "asis") -> tuple[list[str], np.ndarray]:
    """Class names and per-row labels as `DatasetFromFile` builds them.

    Labels number the class strings in order of first appearance, unless the rows carry a `class_idx` column,
    which then gives them (it must number the classes 0..C-1 consistently).

    Args:
        rows: annotation rows (metadata.csv order).
        text_type: see `class_text`.

    Returns:
        (class names in label order, int64 labels `[N]`).

    Example:
        >>> class_labels([{"class": "b"}, {"class": "a"}, {"class": "b"}])
        (['b', 'a'], array([0, 1, 0]))
    """
    if not rows:
        raise ValueError("no annotation rows")
    names = [class_text(row, text_type) for row in rows]
    if "class_idx" not in rows[0]:
        index: dict[str, int] = {}
        labels = np.array([index.setdefault(name, len(index)) for name in names], dtype=np.int64)
        return list(index), labels
    try:
        labels = np.array([int(float(row["class_idx"])) for row in rows], dtype=np.int64)
    except (KeyError, ValueError):
        raise ValueError("annotation column 'class_idx' must hold an integer in every row") from None
    mapping = dict(zip(names, labels.tolist()))
    classnames = [""] * len(mapping)
    for name, idx in mapping.items():
        if not 0 <= idx < len(mapping) or classnames[idx]:
            raise ValueError("annotation column 'class_idx' must number the classes 0..C-1, one index per class")
        classnames[idx] = name
    if any(mapping[name] != label for name, label in zip(names, labels.tolist())):
        raise ValueError("annotation column 'class_idx' gives one class two indices")
    return classnames, labels


def text_classifier(
    model: Any,
    processor: Any,
    texts: Sequence[str],
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    batch_size: int = 256,
) -> np.ndarray:
    """Zero-shot weights `[C, D]`: per class, every template embedded, L2-normalised, averaged, L2-normalised.

    Full context length, as open_clip tokenises (no truncation), so the arithmetic is the original's.

    Args:
        model: a `BioCLIPModel` (on its device).
        processor: its `BioCLIPProcessor` (tokenizer).
        texts: class strings (`class_labels(...)[0]`).
        templates: format strings with one `{}`.
        batch_size: texts per forward pass.

    Example:
        >>> weights = text_classifier(model, processor, ["Corvus corax"])  # doctest: +SKIP
    """
    from bioclip_hf.treeoflife.text_embedding import encode_prompts

    texts = list(texts)
    if not texts:
        raise ValueError("text_classifier needs at least one class text")
    weights = encode_prompts(model, processor, texts, list(templates), batch_size=batch_size, truncate=False)
    return weights.numpy().astype(np.float32, copy=False)


def zero_shot_metrics(
    features: np.ndarray, labels: np.ndarray, classifier: np.ndarray, logit_scale: float, ks: Sequence[int] = (1, 3, 5)
) -> dict[str, float]:
    """Top-k accuracies of `logit_scale * features @ classifier.T`, counted as the original's `accuracy`.

    Args:
        features: `[N, D]` L2-normalised image features.
        labels: `[N]` int labels indexing rows of `classifier`.
        classifier: `[C, D]` from `text_classifier`.
        logit_scale: the multiplier, `model.logit_scale.exp().item()`.
        ks: the k of each top-k (capped at C).

    Returns:
        `{"zero_shot_top{k}": fraction correct}` for each k.

    Example:
        >>> import numpy as np
        >>> zero_shot_metrics(np.eye(2, dtype=np.float32), np.array([0, 1]), np.eye(2, dtype=np.float32), 100.0, (1,))
        {'zero_shot_top1': 1.0}
    """
    features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    weights = torch.from_numpy(np.ascontiguousarray(classifier, dtype=np.float32)).T
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if features.ndim != 2 or weights.ndim != 2 or features.shape[1] != weights.shape[0]:
        raise ValueError(
            f"zero-shot: features {tuple(features.shape)} and classifier {tuple(weights.T.shape)} differ in D"
        )
    if len(target) != len(features) or len(target) == 0:
        raise ValueError(f"zero-shot: {len(target)} labels for {len(features)} images")
    n_classes = weights.shape[1]
    if int(target.min()) < 0 or int(target.max()) >= n_classes:
        raise ValueError(f"zero-shot: labels must lie in 0..{n_classes - 1}")
    capped = {k: min(n_classes, int(k)) for k in ks}
    with torch.no_grad():
        logits = logit_scale * features @ weights
        pred = logits.topk(max(capped.values()), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
    return {
        f"zero_shot_top{k}": float(correct[:kk].reshape(-1).float().sum()) / len(target) for k, kk in capped.items()
    }
