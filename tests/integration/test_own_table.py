"""Models on the user's own file (`microseg train --spec FILE`): a planted relationship, split by
time or cross-validated, tracked and registered in a real MLflow registry; one-line errors for
specs and files that cannot be learned from. (A warehouse table: tests/integration/
test_models.py, beside the built warehouse it reads.)"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from microseg.config import Settings
from ml import registry
from ml.own_table import train_own
from tests.helpers import run_cli

SPEC = {
    "name": "planted_buyers",
    "description": "Will the account buy? Planted: x and plan a move the odds.",
    "task": "binary",
    "source": {"file": "accounts.csv", "id": "account", "label": "bought", "time": "seen_at"},
    "features": ["x", "noise", "plan"],
    "categorical": ["plan"],
    "training": {"valid_fraction": 0.2, "test_fraction": 0.2, "folds": 4},
    "lightgbm": {
        "params": {"objective": "binary", "learning_rate": 0.1, "num_leaves": 7},
        "num_boost_round": 200,
        "early_stopping_rounds": 20,
        "search": {"trials": 2, "seed": 5, "space": {"min_child_samples": [10, 20]}},
    },
    "calibration": "platt",
    "activation": {"policy": "top_fraction", "value": 0.25},
    "fairness": {
        "groups": ["region"],
        "min_group_size": 50,
        "min_disparate_impact": 0.5,
        "max_equal_opportunity_gap": 0.3,
    },
}


def _accounts(rows: int = 2400, seed: int = 1) -> pd.DataFrame:
    """P(bought) = sigmoid(2x + 1.5 [plan = pro] - 1): the label follows x and the plan, not
    noise or region."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    plan = rng.choice(["free", "pro", "team"], size=rows)
    odds = 2 * x + 1.5 * (plan == "pro") - 1
    return pd.DataFrame(
        {
            "account": [f"acc_{i:05d}" for i in range(rows)],
            "seen_at": (
                pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.uniform(0, 90, rows), "D")
            ).floor("s"),
            "x": x,
            "noise": rng.normal(size=rows),
            "plan": plan,
            "region": rng.choice(["north", "south"], size=rows),
            "bought": (rng.uniform(size=rows) < 1 / (1 + np.exp(-odds))).astype(int),
            "p_true": 1 / (1 + np.exp(-odds)),
        }
    )


def _write(folder: Path, spec: dict, frame: pd.DataFrame, file: str = "accounts.csv") -> Path:
    data = folder / file
    if file.endswith(".parquet"):
        frame.to_parquet(data)
    else:
        frame.to_csv(data, index=False)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "source": {**spec["source"], "file": file}}))
    return path


def test_a_file_split_by_time_learns_the_planted_odds_and_is_registered(tmp_path) -> None:
    from sklearn.metrics import roc_auc_score

    frame = _accounts()
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    result = train_own(settings, _write(tmp_path, SPEC, frame))
    trained = result.trained
    # the newest fifth is the test set; the oracle (the planted probability) bounds the AUC
    test = frame.sort_values(["seen_at", "account"]).tail(trained.rows["test"])
    oracle = roc_auc_score(test.bought, test.p_true)
    assert trained.rows == {"train": 1440, "valid": 480, "test": 480}
    assert trained.metrics["roc_auc"] >= 0.95 * oracle, (trained.metrics["roc_auc"], oracle)
    assert trained.baseline_metrics["roc_auc"] > 0.5  # compared with the logistic baseline
    client = registry.client(settings)
    version = registry.version_by_alias(client, "planted_buyers", registry.CHALLENGER)
    assert version is not None and str(version.version) == trained.version
    run = client.get_run(trained.run_id)
    assert run.data.params["split"] == "time"
    assert run.data.params["test_from"] == str(test.seen_at.min())
    assert "test_roc_auc" in run.data.metrics and "baseline_test_roc_auc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(trained.run_id, "fairness")}
    assert artifacts == {"fairness/audit.csv"}
    assert set(result.audit.groups.group) == {"north", "south"} and result.audit.passed
    # an erasure of someone active in those 90 days asks for a retraining; one after, not
    assert registry.flag_for_retraining(settings, (date(2027, 1, 1), date(2027, 1, 2)), "r1") == []
    assert registry.flag_for_retraining(settings, (date(2026, 2, 1), date(2026, 2, 2)), "r2") == [
        f"planted_buyers v{trained.version}"
    ]
    assert "rows: not filtered by consent: a file" in result.summary()
    # the planted inputs carry the model; noise does not
    importance = pd.read_csv(
        client.download_artifacts(trained.run_id, "explanations/importance.csv", str(tmp_path))
    ).set_index("feature")
    assert importance.gain["x"] > importance.gain["plan"] > importance.gain["noise"]


def test_without_a_time_column_parquet_is_cross_validated(tmp_path) -> None:
    frame = _accounts(rows=1600, seed=2).drop(columns="seen_at")
    spec = {**SPEC, "source": {k: v for k, v in SPEC["source"].items() if k != "time"}}
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    result = train_own(settings, _write(tmp_path, spec, frame, "accounts.parquet"))
    cv = result.cross_validation
    assert cv["cv_roc_auc_mean"] > 0.75
    assert 0 < cv["cv_roc_auc_sd"] < 0.05
    assert cv["cv_baseline_roc_auc_mean"] > 0.7
    # each fold tested a quarter of the rows, each label spread evenly
    assert abs(result.trained.rows["test"] - 400) <= 2
    metrics = registry.client(settings).get_run(result.trained.run_id).data.metrics
    assert metrics["cv_roc_auc_mean"] == pytest.approx(cv["cv_roc_auc_mean"])
    assert "4-fold cross-validation: ROC AUC" in result.summary()
    # rows of no known time: any erasure may concern them
    assert registry.flag_for_retraining(settings, (date(2020, 1, 1), date(2020, 1, 2)), "r") == [
        "planted_buyers v1"
    ]


@pytest.mark.parametrize(
    ("spec_change", "columns", "message"),
    [
        (lambda s: s["source"].update(label="region"), {}, "label region must be 0/1 or true/"),
        (None, {"bought": 1}, "label bought has one class (1 on every row)"),
        (lambda s: s.update(categorical=[]), {}, "feature plan is not numeric; declare it"),
        (lambda s: s["features"].append("age"), {}, "has no column age"),
        (None, {"account": "same"}, "299 rows repeat an account"),
        (lambda s: s.update(name="purchase_propensity"), {}, "the name of a built-in model"),
        (lambda s: s["source"].update(table="marts.x"), {}, "name a table or a file"),
        (None, {"seen_at": "soon"}, "time seen_at is not a date or timestamp"),
        (lambda s: s["fairness"].update(groups=["plan"]), {}, "fairness.groups: columns of the"),
        (lambda s: s["fairness"].pop("min_disparate_impact"), {}, "min_disparate_impact: is req"),
        (lambda s: s["training"].update(min_positives="many"), {}, "a positive whole number"),
    ],
)
def test_what_cannot_be_learned_from_is_one_line(tmp_path, spec_change, columns, message) -> None:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    if spec_change:
        spec_change(spec)
    frame = _accounts(rows=300).assign(**columns)
    path = _write(tmp_path, spec, frame)
    result = run_cli("train", "--spec", str(path), home=tmp_path / "home")
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
