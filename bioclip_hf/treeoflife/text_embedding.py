"""Template-averaged text embeddings (custom labels, Tree-of-Life indexes, evals) and the index recipes.

Speed: CLIP's text tower is causal and pools at the end-of-text token, so positions after the longest end-of-text of
a batch cannot change its embeddings. Each token batch is cut there (a 77-token pass becomes ~15-25 tokens for taxa
names), and names are sorted by token length first so every batch is cut short, then put back in their order.

Recipes (`RECIPES`) name the text put into the templates for each taxon. `release` is how the released
TreeOfLife-200M BioCLIP 2 index was made (TreeOfLife-toolbox `processing/scripts/make_txt_embedding.py`, June 2025):
`" ".join(seven ranks) + " " + common_name` through the 80 OpenAI templates; the text types of `taxonomy.TEXT_TYPES`
(e.g. `taxonomic+common`: "... with common name ...") are the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, TEXT_TYPES, Taxon, apply_template

RELEASE_RECIPE = "release"
RECIPES: dict[str, str] = {
    RELEASE_RECIPE: "TreeOfLife release: ' '.join(kingdom..species epithet) + ' ' + common name, 80 OpenAI templates",
    **{text_type: f"BioCLIP text type {text_type!r}, 80 OpenAI templates" for text_type in TEXT_TYPES},
}


def check_recipe(recipe: str) -> str:
    """Return `recipe` if it is one of `RECIPES`, else raise a clear ValueError."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown index recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    return recipe


def recipe_text(taxon: Taxon, recipe: str = RELEASE_RECIPE) -> str:
    """The text a recipe embeds for `taxon` (before templates).

    `release` joins all seven stored rank values (empty ones included, as the release script did; the tokenizer
    folds the extra spaces) and the common name.

    Example:
        >>> raven = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven")
        >>> recipe_text(raven)
        'Animalia Chordata Aves Passeriformes Corvidae Corvus corax common raven'
    """
    if check_recipe(recipe) == RELEASE_RECIPE:
        return " ".join(taxon.ranks()) + " " + taxon.common_name
    return taxon.text(recipe)


def token_lengths(processor: Any, texts: Sequence[str], chunk: int = 4096) -> np.ndarray:
    """Tokens up to and including end-of-text for each text (as `processor.tokenize` would give them)."""
    lengths = np.zeros(len(texts), np.int64)
    for start in range(0, len(texts), chunk):
        ids = processor.tokenize(list(texts[start : start + chunk]))["input_ids"]
        lengths[start : start + chunk] = eot_positions(ids).numpy() + 1
    return lengths


def eot_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """Position of the end-of-text token per row: the largest id, where open_clip and transformers' CLIP pool."""
    return input_ids.argmax(dim=-1)


def truncate_batch(input_ids: torch.Tensor) -> torch.Tensor:
    """`input_ids[:, :L]` with L = longest end-of-text position + 1 (exact under CLIP's causal text mask)."""
    return input_ids[:, : int(eot_positions(input_ids).max()) + 1]


@torch.no_grad()
def encode_prompts(
    model: Any, processor: Any, names: Sequence[str], templates: Sequence[str | Callable[[str], str]] = (DEFAULT_TEMPLATE,),
    batch_size: int = 256, progress: bool = False, desc: str = "embedding text", truncate: bool = True,
) -> torch.Tensor:
    """Template-averaged, L2-normalised text embeddings `[len(names), D]` (float32, CPU).

    Each name is put in every template, embedded, normalised, averaged and normalised again (CLIP's zero-shot
    recipe, also how BioCLIP's Tree-of-Life indexes were made).

    Args:
        model, processor: a `BioCLIPModel` (on its device) and its `BioCLIPProcessor`.
        names: the texts to embed.
        templates: format strings ("a photo of {}.") or callables.
        batch_size: texts per forward pass (names x templates).
        progress: show a progress bar.
        desc: progress bar label.
        truncate: cut each batch at its longest end-of-text token and sort names by length (same result, faster);
            False runs the full context length as open_clip does.

    Example:
        >>> encode_prompts(model, processor, ["Corvus corax"], OPENAI_TEMPLATES)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if not templates:
        raise ValueError("at least one template is needed")
    names = list(names)
    if not names:
        raise ValueError("no names to embed")
    device = next(model.parameters()).device
    per_batch = max(1, batch_size // len(templates))
    order = np.argsort(token_lengths(processor, names), kind="stable") if truncate else np.arange(len(names))
    out: torch.Tensor | None = None
    bar = tqdm(total=len(names), desc=desc, unit="name", disable=not progress)
    for start in range(0, len(names), per_batch):
        rows = order[start : start + per_batch]
        texts = [apply_template(template, names[i]) for i in rows for template in templates]
        input_ids = processor.tokenize(texts)["input_ids"]
        input_ids = truncate_batch(input_ids) if truncate else input_ids
        features = model.encode_text(input_ids.to(device), normalize=True).float()
        features = features.reshape(len(rows), len(templates), -1).mean(dim=1)
        features = torch.nn.functional.normalize(features, dim=-1).cpu()
        if out is None:
            out = torch.empty(len(names), features.shape[1])
        out[torch.from_numpy(rows)] = features
        bar.update(len(rows))
    bar.close()
    return out

