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


# A float16 copy of an index (`TreeOfLifeIndex.set_precision("float16")`) rounds each component t_i of a unit text
# embedding to nearest: |dt_i| <= 2^-11 |t_i| (unit roundoff of float16's 11-bit significand; unit vectors' components
# are far above its subnormal range). Then |d(f.t)| <= 2^-11 sum |f_i t_i| <= 2^-11 for unit f, a logit
# z = s * f.t moves by at most s * 2^-11 (plus the float32 kernel noise above), and a probability by a factor of at
# most exp(+-2 max |dz|) (softmax: dp / p = dz_i - sum_j p_j dz_j), which summing into higher ranks keeps.
HALF_UNIT_ROUNDOFF = 2.0**-11


def half_index_logit_atol(logit_scale: float) -> float:
    """The absolute tolerance of logits scored from a float16 copy of the index against the float32 index."""
    return logit_scale * (HALF_UNIT_ROUNDOFF + FEATURE_ATOL)


def half_index_score_rtol(logit_scale: float) -> float:
    """The relative tolerance of probabilities scored from a float16 copy of the index against the float32 index."""
    import math

    return math.expm1(2 * half_index_logit_atol(logit_scale))
