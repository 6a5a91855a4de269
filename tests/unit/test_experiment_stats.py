"""The experiment statistics: reference agreement on fixed inputs, and their error rates,
coverage and power over thousands of simulated experiments (vectorized: sufficient statistics
are drawn directly, so each simulation takes milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportions_ztest

from microseg.experiments.assignment import arm_index, bucket, fnv1a32
from microseg.experiments.stats import (
    adjusted_p_values,
    chance_to_beat_control,
    confidence_sequence_halfwidth,
    cuped,
    people_per_arm,
    proportion_z_test,
    relative_lift,
    srm_p_value,
    welch_t_test,
)
from tests.helpers import run_cli

RNG_SEED = 20261201


# ------------------------------------------------------------------------------ assignment


@pytest.mark.parametrize(
    ("salt", "key", "expected"),
    [  # GrowthBook's hash v2 test cases (its SDKs' cases.json)
        ("seed", "a", 0.0505),
        ("seed", "b", 0.2696),
        ("foo", "ab", 0.2575),
        ("foo", "def", 0.2019),
        ("89123klj", "8952klfjas09ujkasdf", 0.124),
        ("()**(%$##$%#$#", '___)((*":&', 0.0128),
    ],
)
def test_buckets_are_growthbooks_hash_v2(salt: str, key: str, expected: float) -> None:
    assert bucket(salt, key) == expected


def test_fnv1a32_reference_values() -> None:
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C  # the FNV reference test vector
    assert fnv1a32("foobar") == 0xBF9CF968


def test_arms_follow_the_weights_and_a_person_keeps_the_arm() -> None:
    weights = [0.5, 0.3, 0.2]
    keys = [f"per_{i:06d}" for i in range(40_000)]
    arms = np.array([arm_index(bucket("exp_salt", k), weights) for k in keys])
    shares = np.bincount(arms, minlength=3) / len(keys)
    assert np.allclose(shares, weights, atol=0.01)
    assert srm_p_value(np.bincount(arms), weights) > SRM_FLOOR
    again = [arm_index(bucket("exp_salt", k), weights) for k in keys[:1000]]
    assert again == arms[:1000].tolist()
    other = np.array([arm_index(bucket("other_salt", k), weights) for k in keys[:5000]])
    assert 0.3 < (other == arms[:5000]).mean() < 0.45  # salts make experiments independent


SRM_FLOOR = 0.001


# ----------------------------------------------------------------------- reference agreement


def test_z_test_matches_statsmodels() -> None:
    for x_t, n_t, x_c, n_c in [
        (530, 10_000, 480, 10_000),
        (12, 150, 20, 160),
        (999, 1000, 990, 1000),
    ]:
        ours = proportion_z_test(x_t, n_t, x_c, n_c)
        statistic, p_value = proportions_ztest([x_t, x_c], [n_t, n_c])
        assert abs(ours.statistic - statistic) < 1e-9 and abs(ours.p_value - p_value) < 1e-9


def test_welch_matches_scipy() -> None:
    cases = [(10.2, 4.1, 500, 9.8, 3.7, 480), (1.0, 0.2, 12, 1.4, 2.5, 30)]
    for mean_t, var_t, n_t, mean_c, var_c, n_c in cases:
        ours = welch_t_test(mean_t, var_t, n_t, mean_c, var_c, n_c)
        ref = scipy_stats.ttest_ind_from_stats(
            mean_t, np.sqrt(var_t), n_t, mean_c, np.sqrt(var_c), n_c, equal_var=False
        )
        assert abs(ours.statistic - ref.statistic) < 1e-9 and abs(ours.p_value - ref.pvalue) < 1e-9


def test_srm_matches_scipy_and_catches_a_planted_mismatch() -> None:
    counts, weights = np.array([5_210, 4_790]), np.array([0.5, 0.5])
    assert abs(srm_p_value(counts, weights) - scipy_stats.chisquare(counts).pvalue) < 1e-12
    assert srm_p_value(counts, weights) < SRM_FLOOR  # 52/48 on 10,000 people is broken
    assert srm_p_value(np.array([5_040, 4_960]), weights) > 0.1


def test_cuped_theta_is_the_regression_slope_and_removes_the_explained_variance() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.gamma(2.0, 3.0, 20_000)  # pre-period engagement
    y = 0.7 * x + rng.normal(0, 3.0, x.size)  # in-experiment metric, correlated with it
    adjusted, theta, reduction = cuped(y, x)
    slope = scipy_stats.linregress(x, y).slope
    assert abs(theta - slope) < 1e-9
    assert abs(adjusted.mean() - y.mean()) < 1e-9  # unbiased: only the noise is removed
    assert abs(reduction - np.corrcoef(x, y)[0, 1] ** 2) < 1e-9
    assert reduction > 0.3
    _, _, none = cuped(y, rng.normal(size=x.size))  # an unrelated covariate removes ~nothing
    assert none < 0.01


def test_holm_and_bh_are_statsmodels() -> None:
    p = np.array([0.001, 0.01, 0.02, 0.04, 0.3])
    assert np.allclose(adjusted_p_values(p), [0.005, 0.04, 0.06, 0.08, 0.3])
    assert np.allclose(adjusted_p_values(p, "bh"), [0.005, 0.025, 0.03333333, 0.05, 0.3])


def test_relative_lift_and_chance_to_beat_control_on_a_known_case() -> None:
    lift, low, high = relative_lift(0.11, 0.11 * 0.89, 10_000, 0.10, 0.10 * 0.90, 10_000)
    assert abs(lift - 0.1) < 1e-12 and low < 0.1 < high and high - low < 0.2
    chance, loss = chance_to_beat_control(0.0, 1.0)
    assert chance == 0.5 and abs(loss - scipy_stats.norm.pdf(0)) < 1e-12


# ------------------------------------------------------------ error rates, coverage, power


def _binomial_experiments(rng, n: int, p_t: float, p_c: float, count: int):
    return rng.binomial(n, p_t, count), rng.binomial(n, p_c, count)


def test_aa_false_positive_rate_is_at_most_six_percent() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x_t, x_c = _binomial_experiments(rng, 5_000, 0.08, 0.08, 4_000)
    z = proportion_z_test(x_t, 5_000, x_c, 5_000)
    assert (z.p_value < 0.05).mean() <= 0.06
    # revenue-like metric: Welch on sample means and variances drawn from their distributions
    n, sigma = 800, 25.0
    means = rng.normal(40.0, sigma / np.sqrt(n), (2, 4_000))
    variances = sigma**2 * rng.chisquare(n - 1, (2, 4_000)) / (n - 1)
    t = welch_t_test(means[0], variances[0], n, means[1], variances[1], n)
    assert (t.p_value < 0.05).mean() <= 0.06


def test_intervals_cover_the_true_difference_95_percent() -> None:
    rng = np.random.default_rng(RNG_SEED + 1)
    x_t, x_c = _binomial_experiments(rng, 4_000, 0.12, 0.10, 5_000)
    z = proportion_z_test(x_t, 4_000, x_c, 4_000)
    coverage = ((z.low <= 0.02) & (z.high >= 0.02)).mean()
    assert abs(coverage - 0.95) <= 0.02


def test_power_matches_the_calculator_within_five_points() -> None:
    n = people_per_arm(0.05, 0.10)  # 80% power at alpha 0.05
    rng = np.random.default_rng(RNG_SEED + 2)
    x_t, x_c = _binomial_experiments(rng, n, 0.055, 0.05, 3_000)
    power = (proportion_z_test(x_t, n, x_c, n).p_value < 0.05).mean()
    assert abs(power - 0.8) <= 0.05
    assert abs(people_per_arm(0.05, 0.10, cuped_r2=0.3) - n * 0.7) <= 1  # 1 - r^2 as many


def test_daily_peeks_inflate_fixed_tests_but_not_the_confidence_sequence() -> None:
    """500 A/A experiments looked at every day for 28 days: stopping at the first p < 0.05 of
    a fixed-horizon test fails far more often than 5%; the confidence sequence does not."""
    rng = np.random.default_rng(RNG_SEED + 3)
    experiments, days, per_day, p = 500, 28, 300, 0.1
    daily = rng.binomial(per_day, p, (2, experiments, days))
    x_t, x_c = daily.cumsum(axis=2)
    n = per_day * np.arange(1, days + 1)
    fixed = proportion_z_test(x_t, n, x_c, n)
    halfwidth = confidence_sequence_halfwidth(fixed.standard_error, 2 * n, planned_n=2 * n[-1])
    sequential = np.abs(fixed.difference) > halfwidth
    peeking_fixed = (fixed.p_value < 0.05).any(axis=1).mean()
    peeking_sequential = sequential.any(axis=1).mean()
    assert peeking_fixed > 0.15
    assert peeking_sequential <= 0.05
    # ... and with a real effect the sequence does reach a decision
    lifted = rng.binomial(per_day, (0.13, 0.1), (experiments, days, 2)).cumsum(axis=1)
    effect = proportion_z_test(lifted[..., 0], n, lifted[..., 1], n)
    found = np.abs(effect.difference) > confidence_sequence_halfwidth(
        effect.standard_error, 2 * n, planned_n=2 * n[-1]
    )
    assert found[:, -1].mean() > 0.8


def test_power_command_prints_people_per_arm_and_days(tmp_path) -> None:
    args = ("experiment", "power", "--baseline", "0.05", "--mde", "0.10", "--daily", "1000")
    result = run_cli(*args, home=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].strip() == "31,231 people per arm, 62,462 in all (2 arms)"
    assert lines[2].strip().startswith("63 days at 1,000 eligible people a day")
    without = run_cli(*args[:-2], home=tmp_path)  # no warehouse, no --daily: says so
    assert "give --daily PEOPLE" in without.stdout
    bad = run_cli("experiment", "power", "--baseline", "0.5", "--mde", "1.5", home=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --baseline 0.5 with --mde 1.5 would exceed a rate of 1"
