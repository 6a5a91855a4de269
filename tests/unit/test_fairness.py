"""The fairness audit's verdicts: a disparity past the spec's limit fails a binary model only
when chance would rarely show it (two-proportion z-test), worked by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from microseg.config import PROJECT_ROOT
from ml.fairness import audit, chance_of
from ml.specs import load_spec

SPEC = load_spec("purchase_propensity", PROJECT_ROOT / "ml/specs")
LIMITS = {"groups": ["device_type"], "min_group_size": 10, "significance": 0.05}


def _holdout(groups: dict[str, tuple[int, int, int, int]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Per group (activated positives, positives, activated negatives, negatives): rows with
    a label and a score above the 0.5 threshold for the activated ones."""
    rows = []
    for group, (hit, positives, false_alarms, negatives) in groups.items():
        for label, activated, count in ((1, hit, positives), (0, false_alarms, negatives)):
            rows += [(group, label, 0.9 if i < activated else 0.1) for i in range(count)]
    frame = pd.DataFrame(rows, columns=["device_type", "label", "score"])
    return frame, frame.score.to_numpy()


def _verdict(groups, **limits) -> list[str]:
    spec = replace(SPEC, fairness={**LIMITS, **limits})
    holdout, scores = _holdout(groups)
    return audit(holdout, scores, spec, threshold=0.5).failures


def test_the_z_test_by_hand() -> None:
    # 5 of 60 against 12 of 60: pooled 17/120, z = (12 - 5) / 60 / sqrt(p (1 - p) 2 / 60) = 1.83
    pooled = 17 / 120
    z = (12 - 5) / 60 / np.sqrt(pooled * (1 - pooled) * 2 / 60)
    assert z == pytest.approx(1.833, abs=0.001)
    assert chance_of((5, 12), (60, 60)) == pytest.approx(0.0668, abs=0.0005)
    assert chance_of((0, 0), (60, 60)) == chance_of((3, 3), (0, 60)) == 1.0


def test_a_disparate_impact_chance_could_show_is_reported_not_failed() -> None:
    no_eo = {"max_equal_opportunity_gap": 1.0, "min_disparate_impact": 0.5}
    # activated 5 of 60 vs 12 of 60 (ratio 0.42): p 0.067, a small sample's noise
    small = {"tablet": (5, 5, 0, 55), "desktop": (12, 12, 0, 48)}
    assert _verdict(small, **no_eo) == []
    # the same rates on ten times the people: p < 0.001, a real disparity
    large = {"tablet": (50, 50, 0, 550), "desktop": (120, 120, 0, 480)}
    [failure] = _verdict(large, **no_eo)
    assert failure.startswith("device_type: disparate impact 0.42 is below 0.5")
    assert "tablet 0.08 vs desktop 0.20, p 0.000 over 1 pairs" in failure
    # and a spec may judge on the point estimate alone
    assert len(_verdict(small, **no_eo, significance=1.0)) == 1


def test_an_equal_opportunity_gap_chance_could_show_is_reported_not_failed() -> None:
    no_di = {"max_equal_opportunity_gap": 0.25, "min_disparate_impact": 0.0}
    # true-positive rates 5/10 vs 8/10 (gap 0.3): p 0.16
    assert _verdict({"tablet": (5, 10, 0, 40), "desktop": (8, 10, 0, 40)}, **no_di) == []
    # 20/40 vs 32/40: p 0.005
    [failure] = _verdict({"tablet": (20, 40, 0, 40), "desktop": (32, 40, 0, 40)}, **no_di)
    assert failure.startswith("device_type: equal-opportunity gap 0.30 exceeds 0.25")
    assert failure.endswith("tablet 0.50 vs desktop 0.80, p 0.005 over 1 pairs)")


def test_the_extremes_of_many_groups_are_judged_as_picked_from_all_their_pairs() -> None:
    """Five countries of one true rate: the lowest and highest differ more than two would.
    Their p (0.012, as in the demo's first churn_risk audit: 9 of 134 against 29 of 180)
    fails two groups but not the extremes of five (10 pairs: 0.12)."""
    no_eo = {"max_equal_opportunity_gap": 1.0, "min_disparate_impact": 0.5}
    two = {"FR": (9, 9, 0, 125), "GB": (29, 29, 0, 151)}
    [failure] = _verdict(two, **no_eo)
    assert failure.endswith("p 0.012 over 1 pairs)")
    five = {**two, "DE": (20, 20, 0, 184), "US": (45, 45, 0, 348), "ES": (12, 12, 0, 99)}
    assert _verdict(five, **no_eo) == []
