"""Per-rank taxonomic accuracy: a prediction is right at rank R when its lineage matches the reference's down to R."""

import datasets
import evaluate

_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

_DESCRIPTION = """
Hierarchical accuracy over the Linnaean ranks (kingdom, phylum, class, order, family, genus, species).
Predictions and references are lineages: lists of names from kingdom downwards ("" where unknown). A
prediction is right at rank R when every rank from kingdom down to R equals the reference's, so a wrong
genus under the right family still counts at the family rank. A rank is scored only over examples whose
reference names it; ranks no reference names are left out of the result.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): predicted lineage per example, kingdom first.
    references (`list` of `list` of `str`): true lineage per example, kingdom first.
    ranks (`list` of `str`, optional): rank names, one per lineage position (default: the seven Linnaean ranks).

Returns:
    `dict`: `{rank}_accuracy` for each scored rank, in [0, 1].

Example:
    >>> import evaluate
    >>> metric = evaluate.load("evals/metrics/taxonomic_accuracy")
    >>> metric.compute(predictions=[["Animalia", "Chordata", "Aves"]], references=[["Animalia", "Chordata", "Mammalia"]],
    ...                ranks=["kingdom", "phylum", "class"])
    {'kingdom_accuracy': 1.0, 'phylum_accuracy': 1.0, 'class_accuracy': 0.0}
"""

_CITATION = """
@inproceedings{stevens2024bioclip,
  title = {{B}io{CLIP}: A Vision Foundation Model for the Tree of Life},
  author = {Samuel Stevens and Jiaman Wu and Matthew J Thompson and Elizabeth G Campolongo and Chan Hee Song and
            David Edward Carlyn and Li Dong and Wasila M Dahdul and Charles Stewart and Tanya Berger-Wolf and
            Wei-Lun Chao and Yu Su},
  booktitle = {CVPR},
  year = {2024}
}
"""


def _norm(name):
    return "" if name is None else str(name).strip().lower()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TaxonomicAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, ranks=_RANKS):
        ranks = list(ranks)
        if not references:
            raise ValueError("taxonomic_accuracy: no examples to score")
        results = {}
        for depth, rank in enumerate(ranks):
            scored = right = 0
            for predicted, reference in zip(predictions, references):
                if depth >= len(reference) or not _norm(reference[depth]):
                    continue  # the reference does not name this rank: nothing to score
                scored += 1
                prefix = [_norm(name) for name in reference[: depth + 1]]
                right += [_norm(name) for name in list(predicted[: depth + 1])] == prefix
            if scored:
                results[f"{rank}_accuracy"] = right / scored
        return results
