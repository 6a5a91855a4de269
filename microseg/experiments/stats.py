"""The statistics of an A/B test, from per-arm summaries (n, mean, variance).

Every function works on NumPy arrays element-wise, so one call analyzes thousands of
experiments (the tests simulate A/A and planted effects that way) as well as one. Sources:
  - two-proportion z test and Welch's t test: any statistics text; checked against statsmodels
    and scipy in the tests;
  - relative lift interval: the delta method for a ratio of independent means;
  - CUPED: Deng, Xu, Kohavi, Walker (2013), "Improving the sensitivity of online controlled
    experiments by utilizing pre-experiment data", WSDM;
  - always-valid confidence sequences: Waudby-Smith, Arnold, Wu, Howard, Ramdas (2024),
    "Time-uniform central limit theory and asymptotic confidence sequences", Annals of
    Statistics (the normal-mixture boundary, eq. 13, tuned for a planned sample size);
  - sample ratio mismatch: a chi-square goodness-of-fit test on the arm counts, flagged at
    p < 0.001 (Fabijan et al. 2019, "Diagnosing sample ratio mismatch in online controlled
    experiments", KDD);
  - sample size: the normal approximation for two proportions (Fleiss), CUPED shrinking the
    variance by 1 - r^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

SRM_ALPHA = 0.001


@dataclass(frozen=True)
class Comparison:
    """Treatment versus control, element-wise over arrays."""

    difference: np.ndarray  # treatment mean - control mean
    standard_error: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray  # two-sided
    low: np.ndarray  # confidence interval of the difference
    high: np.ndarray


def srm_p_value(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Chi-square goodness of fit of the arm counts (last axis) to the planned weights."""
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum(axis=-1, keepdims=True) * np.asarray(weights, dtype=float)
    statistic = ((counts - expected) ** 2 / expected).sum(axis=-1)
    return stats.chi2.sf(statistic, counts.shape[-1] - 1)


def proportion_z_test(x_t, n_t, x_c, n_c, alpha: float = 0.05) -> Comparison:
    """Two-proportion z test (pooled standard error for the test, unpooled for the interval)."""
    x_t, n_t, x_c, n_c = (np.asarray(v, dtype=float) for v in (x_t, n_t, x_c, n_c))
    p_t, p_c = x_t / n_t, x_c / n_c
    pooled = (x_t + x_c) / (n_t + n_c)
    se_test = np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    statistic = (p_t - p_c) / se_test
    se = np.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    z = stats.norm.ppf(1 - alpha / 2)
    diff = p_t - p_c
    return Comparison(diff, se, statistic, 2 * stats.norm.sf(np.abs(statistic)), diff - z * se,
                      diff + z * se)  # fmt: skip


def welch_t_test(mean_t, var_t, n_t, mean_c, var_c, n_c, alpha: float = 0.05) -> Comparison:
    """Welch's t test on sample means and (n - 1) variances, with Welch-Satterthwaite df."""
    mean_t, var_t, n_t, mean_c, var_c, n_c = (
        np.asarray(v, dtype=float) for v in (mean_t, var_t, n_t, mean_c, var_c, n_c)
    )
    a, b = var_t / n_t, var_c / n_c
    se = np.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (n_t - 1) + b**2 / (n_c - 1))
    diff = mean_t - mean_c
    statistic = diff / se
    t = stats.t.ppf(1 - alpha / 2, df)
    return Comparison(diff, se, statistic, 2 * stats.t.sf(np.abs(statistic), df), diff - t * se,
                      diff + t * se)  # fmt: skip


def relative_lift(mean_t, var_t, n_t, mean_c, var_c, n_c, alpha: float = 0.05):
    """(lift, low, high) of mean_t / mean_c - 1, by the delta method:
    Var(r) ~ var_t / (n_t mean_c^2) + mean_t^2 var_c / (n_c mean_c^4)."""
    mean_t, var_t, n_t, mean_c, var_c, n_c = (
        np.asarray(v, dtype=float) for v in (mean_t, var_t, n_t, mean_c, var_c, n_c)
    )
    lift = mean_t / mean_c - 1
    se = np.sqrt(var_t / (n_t * mean_c**2) + mean_t**2 * var_c / (n_c * mean_c**4))
    z = stats.norm.ppf(1 - alpha / 2)
    return lift, lift - z * se, lift + z * se


def cuped(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(adjusted y, theta, variance reduction): y - theta (x - mean x) with theta =
    cov(y, x) / var(x) over all arms pooled (Deng et al. 2013); the reduction is
    1 - var(adjusted) / var(y), about corr(y, x)^2."""
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    variance = x.var(ddof=1)
    theta = float(np.cov(y, x, ddof=1)[0, 1] / variance) if variance > 0 else 0.0
    adjusted = y - theta * (x - x.mean())
    reduction = 1 - adjusted.var(ddof=1) / y.var(ddof=1) if y.var(ddof=1) > 0 else 0.0
    return adjusted, theta, float(reduction)


def confidence_sequence_halfwidth(standard_error, n_total, planned_n, alpha: float = 0.05):
    """Half-width of the asymptotic confidence sequence for a difference whose fixed-horizon
    standard error is `standard_error` after `n_total` people: valid at every look at once, so
    a report read every night keeps its error rate (Waudby-Smith et al., normal mixture). The
    mixture is tuned to be tightest at `planned_n`, which must be fixed in advance (re-tuning
    it to each look's n would make it a fixed interval again)."""
    se, n = np.asarray(standard_error, dtype=float), np.asarray(n_total, dtype=float)
    log_term = -2 * np.log(alpha)
    rho2 = (log_term + np.log(log_term + 1)) / np.asarray(planned_n, dtype=float)
    sigma = se * np.sqrt(n)  # the per-person standard deviation the boundary is written in
    return sigma * np.sqrt(
        2 * (n * rho2 + 1) / (n**2 * rho2) * np.log(np.sqrt(n * rho2 + 1) / alpha)
    )


def chance_to_beat_control(difference, standard_error) -> tuple[np.ndarray, np.ndarray]:
    """(P(treatment better), expected loss if shipped), under a flat Gaussian prior: the
    posterior of the difference is Normal(difference, standard_error^2)."""
    d, s = np.asarray(difference, dtype=float), np.asarray(standard_error, dtype=float)
    z = d / s
    return stats.norm.cdf(z), s * stats.norm.pdf(z) - d * stats.norm.sf(z)


def people_per_arm(baseline: float, relative_mde: float, alpha: float = 0.05,
                   power: float = 0.8, cuped_r2: float = 0.0) -> int:  # fmt: skip
    """People each arm needs to detect a relative change `relative_mde` of a conversion rate
    `baseline` (two-sided alpha, normal approximation); CUPED with a covariate explaining
    `cuped_r2` of the variance needs 1 - r^2 as many."""
    p1, p2 = baseline, baseline * (1 + relative_mde)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = z**2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2
    return int(np.ceil(n * (1 - cuped_r2)))


def adjusted_p_values(p_values, method: str = "holm") -> np.ndarray:
    """Across arms and metrics: Holm (family-wise error, the default) or Benjamini-Hochberg
    ("bh": false discovery rate)."""
    from statsmodels.stats.multitest import multipletests

    return multipletests(
        np.asarray(p_values, dtype=float), method={"holm": "holm", "bh": "fdr_bh"}[method]
    )[1]
