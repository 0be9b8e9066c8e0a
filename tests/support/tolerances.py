"""Float tolerances for outputs of the same model computed under other float kernels (other processes, CPUs,
thread counts or batch layouts), derived from float32 rounding; see `FEATURE_ATOL`."""

from __future__ import annotations

# Float tolerance for records computed in different processes, CPUs or batch layouts. oneDNN/MKL choose their GEMM
# blocking by CPU model, cache sizes and threads, which reassociates float32 sums: each of the D = 16 components of
# a unit-length feature can move by a few ulps (2^-24 relative), so ||df|| <= FEATURE_ATOL = 1e-6 (4 ulps of 1.0 in
# each component). Logits z = s * f.t with unit text features t move by |dz| <= s * ||df||, and a softmax
# probability by |dp / p| = |dz_i - sum_j p_j dz_j| <= 2 max |dz|; summing species into a higher rank keeps that
# relative bound. The observed cross-CPU difference is one float32 ulp of a score (1.1e-7 relative).
FEATURE_ATOL = 1e-6


def score_rtol(logit_scale: float) -> float:
    """The relative tolerance of probabilities (scores) computed by the same model under other float kernels."""
    return 2 * logit_scale * FEATURE_ATOL


def assert_same_records(expected, actual, rtol: float) -> None:
    """Same records in the same order: every key, label and other non-float value exactly, floats to `rtol`."""
    import math

    assert len(actual) == len(expected)
    for position, (want, got) in enumerate(zip(expected, actual)):
        assert list(got) == list(want), position
        exact = {key: value for key, value in want.items() if not isinstance(value, float)}
        assert {key: got[key] for key in exact} == exact, position
        for key in want.keys() - exact.keys():
            assert isinstance(got[key], float) and math.isclose(got[key], want[key], rel_tol=rtol), (position, key)
