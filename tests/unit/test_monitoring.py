"""Drift arithmetic (ml/monitoring.py) on hand-computed values, and the spec's levels."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from microseg.config import PROJECT_ROOT
from microseg.errors import ConfigError
from ml.monitoring import Thresholds, compare, psi, reference, shares
from ml.specs import load_spec


def test_psi_by_hand() -> None:
    # (0.5 - 0.25) ln(0.5/0.25) + (0.5 - 0.75) ln(0.5/0.75)
    expected = 0.25 * math.log(2) - 0.25 * math.log(2 / 3)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert psi(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == 0.0
    # an empty bin counts as 1e-4, not as infinity
    assert psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(
        0.5 * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    )


def test_bins_keep_missing_values_and_unseen_categories_apart() -> None:
    numbers = {"edges": [1.0, 2.0]}  # bins: < 1, [1, 2), >= 2, missing
    values = pd.Series([0.5, 1.0, 1.5, 2.0, 7.0, None, None, 0.0])
    assert shares(values, numbers).tolist() == [2 / 8, 2 / 8, 2 / 8, 2 / 8]
    categories = {"categories": ["news", "tech"]}  # bins: news, tech, other or missing
    labels = pd.Series(["tech", "tech", "sport", None], dtype="string")
    assert shares(labels, categories).tolist() == [0, 0.5, 0.5]


def test_the_same_population_does_not_drift_and_a_moved_one_does() -> None:
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    ref = reference(train, rng.random(5000), categorical=("c",))
    same = train.sample(frac=1, random_state=2).assign(score=rng.random(5000))
    moved = same.assign(x=same.x + 2)
    levels = Thresholds(warn=0.1, fail=0.25)
    calm = compare(ref, same, None, levels).set_index("subject")
    assert calm.psi.max() < 0.01 and set(calm.status) == {"ok"}
    assert set(calm.baseline) == {"training"}  # no previous night given
    drifted = compare(ref, moved, same, levels).set_index(["subject", "baseline"])
    assert drifted.loc[("x", "training"), "status"] == "fail"
    assert drifted.loc[("x", "previous_night"), "psi"] > 1
    assert drifted.loc[("c", "previous_night"), "psi"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "levels, message",
    [
        ({"warn_psi": 0.3, "fail_psi": 0.2}, "fail_psi must be above warn_psi"),
        ({"retrain_psi": 0.05}, "retrain_psi must be above warn_psi"),
        ({"fail_psi": 0.3, "retrain_psi": 0.3}, "retrain_psi must be below fail_psi"),
        ({"warn_psi": -1}, "positive numbers"),
        ({"fail_psi": "high"}, "positive numbers"),
        ({"retrain_psi": True}, "positive numbers"),
        ({"stop": 1}, "expected {warn_psi, fail_psi, retrain_psi}"),
    ],
)
def test_bad_monitoring_levels_are_one_line_errors(tmp_path, levels, message) -> None:
    shutil.copy(PROJECT_ROOT / "ml/specs/purchase_propensity.yaml", tmp_path)
    path = tmp_path / "purchase_propensity.yaml"
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, "monitoring": levels}))
    with pytest.raises(ConfigError) as bad:
        load_spec("purchase_propensity", tmp_path)
    assert message in str(bad.value) and "\n" not in str(bad.value)
    shipped = load_spec("purchase_propensity", PROJECT_ROOT / "ml/specs").monitoring
    assert shipped == Thresholds(warn=0.1, fail=None, retrain=0.25)
