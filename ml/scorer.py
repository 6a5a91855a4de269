"""A registered scoring model as promotion and the night use it: LightGBM's trees, the Platt map
fitted beside them on the validation dates, and the activation threshold its spec's policy
chose there. Training stores the last two on the model version (tag `scoring`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from microseg.errors import MicrosegError
from ml.calibration import Platt

SCORING_TAG = "scoring"


def model_inputs(frame: pd.DataFrame, features: list[str], categorical: tuple[str, ...]):
    """The feature matrix LightGBM sees: numbers as float, categorical columns as category."""
    inputs = frame[features].copy()
    for column in features:
        if column in categorical:
            inputs[column] = inputs[column].astype("category")
    return inputs


def scoring_inputs(booster: lgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    """The feature matrix a trained booster expects, from the columns it was trained on."""
    features = booster.feature_name()
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise MicrosegError(f"the model needs features that no longer exist: {missing[:3]}")
    categorical = tuple(c for c in features if frame[c].dtype.name in ("string", "category"))
    return model_inputs(frame, features, categorical)


def contributions(
    booster: lgb.Booster, inputs: pd.DataFrame, scores: np.ndarray, classes: list | None
) -> np.ndarray:
    """Per row and feature, its additive contribution to the raw score (LightGBM's tree SHAP
    values, log-odds for a binary model); for a multiclass model, toward the predicted class."""
    raw = booster.predict(inputs, pred_contrib=True)
    if classes is None:
        return raw[:, :-1]
    per_class = raw.reshape(len(inputs), len(classes), inputs.shape[1] + 1)[:, :, :-1]
    return per_class[np.arange(len(inputs)), scores.argmax(axis=1)]


def explanations(contribution: np.ndarray, inputs: pd.DataFrame, top: int = 3) -> list[str]:
    """Per row, the `top` features that moved its score most (contribution: rows x features),
    as a JSON list of {feature, value, contribution} (largest absolute contribution first):
    why a person scored as they did, for marketing."""
    order = np.argsort(-np.abs(contribution), axis=1, kind="stable")[:, :top]
    names = inputs.columns.to_numpy()
    rows = []
    for row, features in enumerate(order):
        items = []
        for column in features:
            value = inputs.iat[row, column]
            if pd.isna(value):
                value = None
            elif isinstance(value, int | float | np.number):
                value = round(float(value), 6)
            else:
                value = str(value)
            items.append(
                {
                    "feature": str(names[column]),
                    "value": value,
                    "contribution": round(float(contribution[row, column]), 6),
                }
            )
        rows.append(json.dumps(items))
    return rows


def scoring_tag(platt: Platt, threshold: float) -> str:
    return json.dumps({"slope": platt.slope, "intercept": platt.intercept, "threshold": threshold})


@dataclass(frozen=True)
class Scorer:
    booster: lgb.Booster
    version: str
    classes: list[str] | None  # a multiclass model's categories, else None
    platt: Platt
    threshold: float

    @classmethod
    def from_tags(cls, booster: lgb.Booster, version: str, tags: dict[str, str]) -> Scorer:
        classes = json.loads(tags["classes"]) if tags.get("classes") else None
        scoring = json.loads(tags[SCORING_TAG])
        platt = Platt(scoring["slope"], scoring["intercept"])
        return cls(booster, version, classes, platt, scoring["threshold"])

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        return scoring_inputs(self.booster, frame)

    def predict(self, inputs: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities (binary) or the categories' probabilities (multiclass)."""
        if self.classes is not None:
            return self.booster.predict(inputs)
        return self.platt(self.booster.predict(inputs, raw_score=True))

    def explain(self, inputs: pd.DataFrame, scores: np.ndarray) -> list[str]:
        """The three features that moved each score most; a binary model's contributions
        are on the calibrated log-odds (the trees' times the Platt slope)."""
        contribution = contributions(self.booster, inputs, scores, self.classes)
        if self.classes is None:
            contribution = contribution * self.platt.slope
        return explanations(contribution, inputs)
