"""Top-k accuracy: a prediction is a ranked list of class ids, right when the reference is among its first k."""

import datasets
import evaluate

_DESCRIPTION = """
Top-k accuracy for classification. Each prediction is a list of class ids ranked best first (at least
max(k) long); it counts as correct at k when the reference id is among its first k entries.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): ranked class ids per example, best first.
    references (`list` of `int`): true class id per example.
    k (`int` or `list` of `int`, defaults to `[1, 5]`): the cut-offs to report.

Returns:
    `dict`: `top{k}_accuracy` for each k, in [0, 1].

Example:
    >>> import evaluate
    >>> metric = evaluate.load("evals/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[2, 0, 1], [0, 1, 2]], references=[0, 2], k=[1, 2])
    {'top1_accuracy': 0.0, 'top2_accuracy': 0.5}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        cutoffs = [k] if isinstance(k, int) else list(k)
        if not references:
            raise ValueError("top_k_accuracy: no examples to score")
        if any(c < 1 for c in cutoffs):
            raise ValueError(f"top_k_accuracy: k must be >= 1, got {cutoffs}")
        shortest = min(len(ranked) for ranked in predictions)
        if shortest < max(cutoffs):
            raise ValueError(f"top_k_accuracy: a prediction ranks only {shortest} classes but k={max(cutoffs)}")
        return {
            f"top{c}_accuracy": sum(ref in ranked[:c] for ranked, ref in zip(predictions, references)) / len(references)
            for c in cutoffs
        }
