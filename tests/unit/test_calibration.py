"""Platt scaling, calibration error and the activation-threshold policies, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from microseg.config import PROJECT_ROOT
from microseg.errors import ConfigError, DataQualityError
from ml.calibration import ActivationPolicy, Platt, expected_calibration_error
from ml.specs import load_spec

SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
LABELS = np.array([1, 1, 0, 1, 0])
TRAINING = {
    "train_dates": 6,
    "valid_dates": 1,
    "test_dates": 1,
    "min_positives": 100,
    "min_negatives": 100,
}


def test_platt_recovers_the_map_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    log_odds = rng.normal(0, 2, 50_000)
    labels = rng.random(50_000) < 1 / (1 + np.exp(-(0.5 * log_odds - 1.0)))
    platt = Platt.fit(log_odds, labels)
    assert platt.slope == pytest.approx(0.5, abs=0.03)
    assert platt.intercept == pytest.approx(-1.0, abs=0.05)
    assert platt(np.array([2.0])) == pytest.approx(1 / (1 + np.exp(0.0)), abs=0.02)
    assert Platt()(np.array([0.0])) == 0.5  # the identity map leaves log-odds 0 at 0.5


def test_calibration_error_by_hand() -> None:
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    labels = np.array([0, 1, 1, 1])
    # two bins of two: |0.15 - 0.5| and |0.85 - 1.0|, equally weighted
    assert expected_calibration_error(labels, scores, bins=2) == pytest.approx(0.25)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0


@pytest.mark.parametrize(
    "policy, value, threshold",
    [
        ("fixed", 0.65, 0.65),
        ("top_fraction", 0.4, 0.8),  # two of five
        ("top_fraction", 0.5, 0.7),  # ceil(2.5) = three
        ("precision", 0.75, 0.6),  # four activated, three of them positive
        ("precision", 0.99, 0.8),  # only the top two are all positive
        ("cost_ratio", 1.0, 0.8),  # FP + FN: 3, 2, 1, 2, 1, 2 (ties: the higher threshold)
        ("cost_ratio", 0.4, 0.6),  # a false positive costs less: activate four
    ],
)
def test_thresholds_by_hand(policy: str, value: float, threshold: float) -> None:
    assert ActivationPolicy(policy, value).threshold(LABELS, SCORES) == threshold


def test_a_top_fraction_is_not_rounded_up_by_floating_point() -> None:
    """0.07 x 100 is 7.000000000000001 in floating point: still seven people, not eight."""
    scores = np.linspace(1, 0.01, 100)
    threshold = ActivationPolicy("top_fraction", 0.07).threshold(np.zeros(100, int), scores)
    assert threshold == scores[6] and (scores >= threshold).sum() == 7


def test_thresholds_fall_between_tied_scores_never_through_them() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.5])
    labels = np.array([1, 1, 0, 0])
    assert ActivationPolicy("precision", 0.6).threshold(labels, scores) == 0.8
    assert ActivationPolicy("precision", 0.9).threshold(labels, scores) == 0.9


def test_a_costly_false_positive_with_no_positive_activates_no_one() -> None:
    threshold = ActivationPolicy("cost_ratio", 1.0).threshold(np.zeros(5, int), SCORES)
    assert threshold > SCORES.max()


def test_one_label_or_a_backwards_model_cannot_be_calibrated() -> None:
    with pytest.raises(DataQualityError, match="only one label value"):
        Platt.fit(np.array([0.1, 0.5, 0.9]), np.array([1, 1, 1]))
    log_odds = np.linspace(-3, 3, 400)
    with pytest.raises(DataQualityError, match="scores fall as the outcome rises"):
        Platt.fit(log_odds, (log_odds < 0).astype(int))


def test_an_unreachable_precision_is_a_one_line_error() -> None:
    with pytest.raises(DataQualityError, match=r"no threshold reaches a precision of 0\.9") as bad:
        ActivationPolicy("precision", 0.9).threshold(np.zeros(5, int), SCORES)
    assert "\n" not in str(bad.value)


def test_on_calibrated_scores_the_cost_ratio_threshold_is_bayes_optimal() -> None:
    """With calibrated scores, activating costs less than not from ratio / (1 + ratio) on."""
    rng = np.random.default_rng(1)
    scores = rng.random(200_000)
    labels = (rng.random(200_000) < scores).astype(int)
    for ratio in (0.5, 1.0, 3.0):
        threshold = ActivationPolicy("cost_ratio", ratio).threshold(labels, scores)
        assert threshold == pytest.approx(ratio / (1 + ratio), abs=0.02), ratio


@pytest.mark.parametrize(
    "name, changes, message",
    [
        ("purchase_propensity", {"activation": {"policy": "best"}}, "activation.value"),
        (
            "purchase_propensity",
            {"activation": {"policy": "best", "value": 0.5}},
            "activation.policy: 'best' is not one of",
        ),
        (
            "purchase_propensity",
            {"activation": {"policy": "precision", "value": 1.5}},
            "must be between 0 and 1",
        ),
        (
            "purchase_propensity",
            {"activation": {"policy": "cost_ratio", "value": 0}},
            "must be a positive number",
        ),
        ("purchase_propensity", {"calibration": "isotonic"}, "calibration: 'isotonic'"),
        ("content_preference", {"calibration": "platt"}, "is not one of ['none']"),
        (
            "purchase_propensity",
            {"activation_threshold": 0.75},
            "replaced by activation: {policy: fixed, value: 0.75}",
        ),
        (
            "content_preference",
            {"activation": {"policy": "precision", "value": 0.5}},
            "is not one of ['fixed']",
        ),
        (  # no feature window counts purchases over 1 day
            "purchase_propensity",
            {"label": {"kind": "purchase_within", "horizon_days": 1}},
            "label.horizon_days: purchase_within knows 7, 28, 90",
        ),
        (
            "purchase_propensity",
            {"training": {**TRAINING, "as_of_dates": 8}},
            "training.as_of_dates: replaced by training.train_dates",
        ),
        (
            "churn_risk",
            {"training": {**TRAINING, "valid_dates": 0}},
            "training.valid_dates: must be at least 1",
        ),
        (
            "churn_risk",
            {"fairness": {"groups": ["country"], "significance": 0}},
            "fairness.significance: a p-value above 0, at most 1",
        ),
    ],
)
def test_a_bad_spec_is_a_one_line_error(tmp_path, name, changes, message):
    spec = yaml.safe_load((PROJECT_ROOT / "ml/specs" / f"{name}.yaml").read_text())
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**spec, **changes}))
    with pytest.raises(ConfigError) as bad:
        load_spec(name, tmp_path)
    assert message in str(bad.value) and "\n" not in str(bad.value)


def test_the_shipped_specs_declare_their_policies() -> None:
    specs = PROJECT_ROOT / "ml/specs"
    assert load_spec("purchase_propensity", specs).activation == ActivationPolicy("precision", 0.8)
    assert load_spec("churn_risk", specs).calibration == "platt"
    assert load_spec("content_preference", specs).activation.policy == "fixed"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (0.4, "activates 80.0% of the test rows, precision"),
        (9.0, "activates 0.0% of the test rows (no one"),
    ],
)
def test_the_training_report_says_whom_the_threshold_activates(value, said) -> None:
    """A cost ratio can make activating anyone cost more than it saves: the report says so."""
    from ml.train import TrainResult, binary_metrics, describe

    labels, scores = np.array([0, 1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    threshold = ActivationPolicy("cost_ratio", value).threshold(labels, scores)
    metrics = binary_metrics(labels, scores, threshold)
    metrics |= {"uncalibrated_brier": 0.2, "uncalibrated_calibration_error": 0.1}
    result = TrainResult(
        "m", "1", "run", metrics, metrics, {"train": 5}, "", "activation threshold"
    )
    assert said in describe(result)
