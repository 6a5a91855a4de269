"""Fairness audit of a model's scores on a holdout, per group of each configured attribute.

Per group: size, positives, AUC, positive rate at the activation threshold, true-positive
rate and calibration gap (mean score - observed rate). Per attribute, over the groups large
enough to judge: the disparate-impact ratio (lowest / highest positive rate) and the
equal-opportunity gap (highest - lowest true-positive rate), against the spec's limits. A
binary model fails only on a disparity chance would rarely show: the two groups' rates differ
in a two-proportion z-test at p below the spec's `significance`, p multiplied by the number
of group pairs the extremes were picked from (Bonferroni). A group of 130 rows with 16
churners moves its true-positive rate six points per person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.specs import Spec


@dataclass(frozen=True)
class Audit:
    groups: pd.DataFrame  # one row per attribute and group
    failures: list[str]  # one line each, naming the attribute, groups and metric

    @property
    def passed(self) -> bool:
        return not self.failures


def _group_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import roc_auc_score

    active = scores >= threshold
    positives = int(labels.sum())
    return {
        "rows": len(labels),
        "positives": positives,
        "roc_auc": roc_auc_score(labels, scores) if 0 < positives < len(labels) else np.nan,
        "positive_rate": float(active.mean()),
        "true_positive_rate": float(active[labels == 1].mean()) if positives else np.nan,
        "calibration_gap": float(scores.mean() - labels.mean()),
    }


def chance_of(hits: tuple[float, float], trials: tuple[float, float]) -> float:
    """Two-sided p of a two-proportion z-test: how often two groups with one true rate would
    show rates this far apart (1 where they cannot differ)."""
    from statsmodels.stats.proportion import proportions_ztest

    counts = np.round(hits)
    if min(trials) == 0 or counts.sum() in (0, sum(trials)):
        return 1.0
    return float(proportions_ztest(counts, np.asarray(trials))[1])


def _rarely_by_chance(
    hits: tuple[float, float], trials: tuple[float, float], pairs: int, significance: float
) -> str:
    """The reason to fail ("p P over N pairs") when chance shows such a gap less often than
    `significance` (the pair's p times the pairs it was picked from as the extremes), else
    the empty string."""
    p = min(1.0, pairs * chance_of(hits, trials))
    return "" if p >= significance else f"p {p:.3f} over {pairs} pairs"


def audit(
    holdout: pd.DataFrame,
    scores: np.ndarray,
    spec: Spec,
    threshold: float,
    classes: list[str] | None = None,
) -> Audit:
    """Audit `scores` (aligned with holdout rows, which carry label and group columns) of a
    model activating people from `threshold` on."""
    if classes is not None:
        return _audit_multiclass(holdout, scores, spec, classes)
    limits = spec.fairness
    minimum = int(limits.get("min_group_size", 50))
    significance = limits["significance"]  # specs.fairness_limits
    rows, failures = [], []
    labels = holdout.label.to_numpy()
    for attribute in limits["groups"]:
        values = holdout[attribute].astype(str).to_numpy()
        table = []
        for group in sorted(set(values)):
            mask = values == group
            metrics = _group_metrics(labels[mask], scores[mask], threshold)
            table.append(
                {
                    "attribute": attribute,
                    "group": group,
                    **metrics,
                    "judged": metrics["rows"] >= minimum and metrics["positives"] > 0,
                }
            )
        frame = pd.DataFrame(table)
        judged = frame[frame.judged]
        if len(judged) >= 2:
            pairs = len(judged) * (len(judged) - 1) // 2  # the extremes of how many pairs
            low, high = (
                judged.loc[judged.positive_rate.idxmin()],
                judged.loc[judged.positive_rate.idxmax()],
            )
            ratio = low.positive_rate / high.positive_rate if high.positive_rate > 0 else 1.0
            rare = _rarely_by_chance(
                (low.positive_rate * low.rows, high.positive_rate * high.rows),
                (low.rows, high.rows),
                pairs,
                significance,
            )
            if ratio < limits["min_disparate_impact"] and rare:
                failures.append(
                    f"{attribute}: disparate impact {ratio:.2f} is below "
                    f"{limits['min_disparate_impact']} (positive rate {low.group} "
                    f"{low.positive_rate:.2f} vs {high.group} {high.positive_rate:.2f}, {rare})"
                )
            worst, best = (
                judged.loc[judged.true_positive_rate.idxmin()],
                judged.loc[judged.true_positive_rate.idxmax()],
            )
            gap = best.true_positive_rate - worst.true_positive_rate
            rare = _rarely_by_chance(
                (
                    worst.true_positive_rate * worst.positives,
                    best.true_positive_rate * best.positives,
                ),
                (worst.positives, best.positives),
                pairs,
                significance,
            )
            if gap > limits["max_equal_opportunity_gap"] and rare:
                failures.append(
                    f"{attribute}: equal-opportunity gap {gap:.2f} exceeds "
                    f"{limits['max_equal_opportunity_gap']} (true-positive rate {worst.group} "
                    f"{worst.true_positive_rate:.2f} vs {best.group} "
                    f"{best.true_positive_rate:.2f}, {rare})"
                )
        rows.append(frame)
    return Audit(pd.concat(rows, ignore_index=True), failures)


def _audit_multiclass(
    holdout: pd.DataFrame, proba: np.ndarray, spec: Spec, classes: list[str]
) -> Audit:
    """Multiclass: per group, top-1 accuracy; the gap between the best and worst judged group
    of each attribute must stay within max_accuracy_gap."""
    limits = spec.fairness
    minimum = int(limits.get("min_group_size", 50))
    correct = np.asarray(classes)[proba.argmax(axis=1)] == holdout.label.to_numpy()
    rows, failures = [], []
    for attribute in limits["groups"]:
        values = holdout[attribute].astype(str).to_numpy()
        table = pd.DataFrame(
            [
                {
                    "attribute": attribute,
                    "group": group,
                    "rows": int((values == group).sum()),
                    "accuracy": float(correct[values == group].mean()),
                }
                for group in sorted(set(values))
            ]
        )
        table["judged"] = table.rows >= minimum
        judged = table[table.judged]
        if len(judged) >= 2:
            worst = judged.loc[judged.accuracy.idxmin()]
            best = judged.loc[judged.accuracy.idxmax()]
            gap = best.accuracy - worst.accuracy
            if gap > limits["max_accuracy_gap"]:
                failures.append(
                    f"{attribute}: accuracy gap {gap:.2f} exceeds {limits['max_accuracy_gap']} "
                    f"({worst.group} {worst.accuracy:.2f} vs {best.group} {best.accuracy:.2f})"
                )
        rows.append(table)
    return Audit(pd.concat(rows, ignore_index=True), failures)
