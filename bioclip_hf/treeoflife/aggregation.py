"""Rank aggregation of Tree-of-Life predictions: clades of a rank (`RankGroups`), their display names, and summing
species probabilities into clades with one `index_add_` (vectorized, on whatever device holds the probabilities).
`TreeOfLifeIndex.groups` builds the groups; `treeoflife.index` re-exports these names (their public import path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bioclip_hf.treeoflife.taxonomy import Taxon

__all__ = ["RankGroups", "aggregate_probs", "clade_label"]


@dataclass
class RankGroups:
    """The clades of one rank: `group_ids[i]` is the clade of taxon `i`; `taxa[g]` describes clade `g` (built on
    access from its first member)."""

    rank: str
    group_ids: torch.Tensor
    taxa: Sequence[Taxon]

    def __len__(self) -> int:
        return len(self.taxa)


def clade_label(taxon: Taxon, rank: str) -> str:
    """Display name of `taxon`'s clade at `rank`; clades with an empty name say so ("Corvidae (genus unknown)")."""
    name = taxon.name_at(rank)
    if name:
        return name
    known = next((value for value in reversed(taxon.lineage(rank)) if value), "")
    return f"{known} ({rank} unknown)".strip()


def aggregate_probs(probs: torch.Tensor, group_ids: torch.Tensor, num_groups: int, min_prob: float = 0.0) -> torch.Tensor:
    """Sum species probabilities `[B, N]` into clade probabilities `[B, G]` (vectorized, device-agnostic).

    Args:
        probs: softmax probabilities over the N taxa, one row per image.
        group_ids: `[N]` long tensor, clade index of each taxon (see `TreeOfLifeIndex.groups`).
        num_groups: G.
        min_prob: species probabilities `<= min_prob` are ignored (pybioclip's semantics).

    Example:
        >>> aggregate_probs(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([0, 1, 0]), 2)
        tensor([[0.7000, 0.3000]])
    """
    if probs.shape[-1] != group_ids.shape[0]:
        raise ValueError(f"probabilities cover {probs.shape[-1]} taxa but the group map has {group_ids.shape[0]}")
    if min_prob > 0:
        probs = probs.masked_fill(probs <= min_prob, 0.0)
    out = probs.new_zeros(probs.shape[0], num_groups)
    return out.index_add_(1, group_ids.to(probs.device), probs)
