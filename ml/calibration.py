"""Calibrated probabilities and the activation threshold of a binary model.

Both are fitted on the validation dates, which neither the trees (early stopping aside) nor the
test metrics use. Platt scaling maps the model's log-odds through a logistic line, so a
calibrated score's log-odds is still a sum of the features' contributions (each times the
slope): the explanations stay exact. The threshold then follows a declared policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microseg.errors import DataQualityError

POLICIES = ("fixed", "top_fraction", "precision", "cost_ratio")
METHODS = ("platt", "none")


@dataclass(frozen=True)
class Platt:
    """score = sigmoid(slope * log-odds + intercept); (1, 0) leaves scores as they are."""

    slope: float = 1.0
    intercept: float = 0.0

    @classmethod
    def fit(cls, log_odds: np.ndarray, labels: np.ndarray) -> Platt:
        """Maximum likelihood, unregularized (two parameters on thousands of rows). Labels of
        one class, or a model that ranks the rows backwards, cannot be calibrated."""
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(labels)) < 2:
            raise DataQualityError(
                "cannot calibrate: the validation dates hold only one label value"
            )
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(np.asarray(log_odds).reshape(-1, 1), labels)
        platt = cls(float(model.coef_[0, 0]), float(model.intercept_[0]))
        if platt.slope <= 0:
            raise DataQualityError(
                f"cannot calibrate: on the validation dates the model's scores fall as the "
                f"outcome rises (Platt slope {platt.slope:.3f}); it is not fit to score"
            )
        return platt

    def log_odds(self, raw_log_odds: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(raw_log_odds) + self.intercept

    def __call__(self, raw_log_odds: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-self.log_odds(raw_log_odds)))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |mean score - observed rate| over equal-count score bins, weighted by their rows."""
    order = np.argsort(scores, kind="stable")
    parts = np.array_split(order, min(bins, len(order)))
    return float(
        sum(len(p) * abs(scores[p].mean() - labels[p].mean()) for p in parts if len(p))
        / max(len(scores), 1)
    )


@dataclass(frozen=True)
class ActivationPolicy:
    """How the activation threshold is chosen on validation scores (labels 0/1):
    fixed: `value` is the threshold; top_fraction: the share of people to activate (more
    when people tie at the threshold's score);
    precision: the lowest threshold whose precision reaches `value`;
    cost_ratio: the threshold with the least value * false positives + false negatives
    (a false positive costs `value` times a false negative; when activating no one costs
    least, the threshold is above every score)."""

    policy: str
    value: float

    def threshold(self, labels: np.ndarray, scores: np.ndarray) -> float:
        if self.policy == "fixed":
            return self.value
        order = np.argsort(-scores, kind="stable")
        ranked, hits = scores[order], np.cumsum(labels[order])
        # candidate thresholds: each distinct score; activating its rows and all above
        last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
        activated, true_positives = last + 1, hits[last]
        if self.policy == "top_fraction":
            wanted = max(int(np.ceil(round(self.value * len(scores), 9))), 1)
            return float(ranked[min(wanted, len(ranked)) - 1])
        if self.policy == "precision":
            reaching = np.flatnonzero(true_positives / activated >= self.value)
            if not len(reaching):
                best = float((true_positives / activated).max())
                raise DataQualityError(
                    f"no threshold reaches a precision of {self.value:g} on the validation "
                    f"dates (the best is {best:.3f}): lower the spec's activation.value"
                )
            return float(ranked[last[reaching[-1]]])
        false_positives = activated - true_positives
        false_negatives = hits[-1] - true_positives
        cost = self.value * false_positives + false_negatives
        # activating no one costs every positive; a threshold above every score does that
        if hits[-1] <= cost.min():
            return float(np.nextafter(ranked[0], np.inf))
        return float(ranked[last[int(np.argmin(cost))]])
