"""`microseg train`: LightGBM with early stopping and a small search, a logistic baseline on
the same time-based split, metrics, explanations and plots, all logged to MLflow; the model
is registered and becomes `challenger` (promotion is a separate, gated step)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from microseg.config import Settings
from microseg.errors import DataQualityError
from ml import monitoring, registry
from ml.calibration import Platt, expected_calibration_error
from ml.scorer import SCORING_TAG, Scorer, contributions, model_inputs, scoring_tag
from ml.specs import Spec, load_spec
from ml.training_sets import training_set


@dataclass(frozen=True)
class TrainResult:
    model: str
    version: str
    run_id: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    rows: dict[str, int]
    period: str  # which dates or rows each split took, for the report
    activation: str  # the spec's policy and the threshold it chose, for the report


def deciles(scores: np.ndarray) -> np.ndarray:
    """1 = the highest-scoring tenth; ties broken by position (rows arrive sorted by person)."""
    ranks = pd.Series(-scores).rank(method="first").to_numpy()
    return np.ceil(ranks * 10 / max(len(scores), 1)).astype(int)


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC/PR AUC, log loss, Brier, calibration error, precision/recall/F1 at the threshold,
    lift by decile."""
    from sklearn import metrics

    predicted = scores >= threshold
    out = {
        "roc_auc": metrics.roc_auc_score(labels, scores),
        "pr_auc": metrics.average_precision_score(labels, scores),
        "log_loss": metrics.log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7)),
        "brier": metrics.brier_score_loss(labels, scores),
        "calibration_error": expected_calibration_error(labels, scores),
        "precision_at_threshold": metrics.precision_score(labels, predicted, zero_division=0),
        "recall_at_threshold": metrics.recall_score(labels, predicted, zero_division=0),
        "f1_at_threshold": metrics.f1_score(labels, predicted, zero_division=0),
        "positive_rate_at_threshold": float(predicted.mean()),
    }
    order = np.argsort(-scores, kind="stable")
    base = labels.mean()
    for decile, rows in enumerate(np.array_split(order, 10), start=1):
        out[f"lift_decile_{decile}"] = float(labels[rows].mean() / base) if base else 0.0
    return {k: float(v) for k, v in out.items()}


def multiclass_metrics(
    truth: np.ndarray, proba: np.ndarray, classes: list[str]
) -> dict[str, float]:
    """Accuracy, macro F1, top-2 accuracy and log loss of class probabilities (columns in the
    order of `classes`) against true class names; a true class the model does not know counts
    as a miss (and is left out of the log loss)."""
    from sklearn import metrics

    names = np.asarray(classes)
    ranked = np.argsort(-proba, axis=1)
    predicted = names[ranked[:, 0]]
    known = np.isin(truth, names)
    index = {c: i for i, c in enumerate(classes)}
    out = {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": metrics.f1_score(truth, predicted, average="macro", zero_division=0),
        "top2_accuracy": float((names[ranked[:, :2]] == truth[:, None]).any(axis=1).mean()),
        "log_loss": metrics.log_loss(
            [index[t] for t in truth[known]], proba[known], labels=list(range(len(classes)))
        ),
    }
    return {k: float(v) for k, v in out.items()}


def model_metrics(
    truth: np.ndarray, scores: np.ndarray, classes: list[str] | None, threshold: float
) -> dict[str, float]:
    """A binary model's metrics (precision, recall, F1 at its activation threshold), or a
    multiclass model's (classes: its categories)."""
    if classes is None:
        return binary_metrics(truth, scores, threshold)
    return multiclass_metrics(truth, scores, classes)


def labelled_targets(spec: Spec, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str] | None]:
    """Rows and integer targets to learn; stops below the spec's minimum data.

    Multiclass: categories with fewer than min_rows_per_class training rows are left out of
    the model (their rows too); fewer than two categories left stops training."""
    train_rows = frame[frame.split == "train"]
    if spec.task == "binary":
        positives = int(train_rows.label.sum())
        negatives = len(train_rows) - positives
        if positives < spec.min_positives or negatives < spec.min_negatives:
            raise DataQualityError(
                f"{spec.name}: not enough training data: {positives} positives and "
                f"{negatives} negatives (the spec asks for at least {spec.min_positives} and "
                f"{spec.min_negatives}); no model was trained"
            )
        return frame.assign(target=frame.label.astype(int)), None
    counts = train_rows.label.value_counts()
    classes = sorted(counts[counts >= spec.min_rows_per_class].index)
    if len(classes) < 2:
        raise DataQualityError(
            f"{spec.name}: not enough training data: {len(classes)} categories have at least "
            f"{spec.min_rows_per_class} training rows (two are needed); no model was trained"
        )
    kept = frame[frame.label.isin(classes)]
    return kept.assign(target=kept.label.map({c: i for i, c in enumerate(classes)})), classes


def _search(
    spec: Spec, train: lgb.Dataset, valid: lgb.Dataset, classes: list[str] | None
) -> tuple[lgb.Booster, dict]:
    """Random search over spec.search_space; the lowest validation log loss wins."""
    rng = np.random.default_rng(spec.search_seed)
    metric = "binary_logloss" if classes is None else "multi_logloss"
    task = {} if classes is None else {"num_class": len(classes)}
    base = {
        **task,
        **spec.params,
        "metric": metric,
        "verbosity": -1,
        "seed": spec.search_seed,
        "deterministic": True,
        "num_threads": 2,
    }
    candidates = [base] + [
        {
            **base,
            **{k: values[rng.integers(len(values))] for k, values in spec.search_space.items()},
        }
        for _ in range(max(spec.search_trials - 1, 0))
    ]
    best: tuple[float, lgb.Booster, dict] | None = None
    for params in candidates:
        booster = lgb.train(
            params,
            train,
            num_boost_round=spec.num_boost_round,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)],
        )
        loss = booster.best_score["valid_0"][metric]
        if best is None or loss < best[0]:
            best = (loss, booster, {**params, "best_iteration": booster.best_iteration})
    assert best is not None
    return best[1], best[2]


def _calibrate(spec: Spec, booster: lgb.Booster, valid: pd.DataFrame, classes: list | None):
    """The model as it will score: Platt map and activation threshold fitted on the
    validation dates (a multiclass model: its probabilities, the spec's fixed threshold)."""
    if classes is not None:
        return Scorer(booster, "", classes, Platt(), spec.activation.value)
    inputs = model_inputs(valid, list(spec.features), spec.categorical)
    labels = valid.label.to_numpy().astype(int)
    platt = Platt()
    if spec.calibration == "platt":
        platt = Platt.fit(booster.predict(inputs, raw_score=True), labels)
    scores = platt(booster.predict(inputs, raw_score=True))
    return Scorer(booster, "", None, platt, spec.activation.threshold(labels, scores))


def _baseline(spec: Spec, frame: pd.DataFrame) -> np.ndarray:
    """Logistic regression on the same split: standardized numbers, one-hot categories."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in spec.features if c not in spec.categorical]
    columns = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore"),
                list(spec.categorical),
            ),
        ]
    )
    model = make_pipeline(columns, LogisticRegression(max_iter=2000))
    train = frame[frame.split == "train"]
    inputs = frame[list(spec.features)].copy()
    for column in spec.categorical:
        inputs[column] = inputs[column].fillna("none").astype(object)
    model.fit(inputs.loc[train.index], train.target)
    proba = model.predict_proba(inputs.loc[frame.split == "test"])
    return proba[:, 1] if spec.task == "binary" else proba


def evaluation_curves(labels: np.ndarray, scores: np.ndarray) -> dict[str, pd.DataFrame]:
    """The points of the test set's ROC, precision-recall and calibration curves (no person:
    thresholds are left out), logged as evaluation/<name>.csv for the run's pictures and the
    model-evaluation notebook."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    return {
        "roc": pd.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr}),
        "pr": pd.DataFrame({"recall": recall, "precision": precision}),
        "calibration": pd.DataFrame({"mean_score": predicted, "observed_rate": observed}),
    }


def _plots(
    spec: Spec, curves: dict[str, pd.DataFrame], labels, scores, classes, importance, folder: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(name: str, draw) -> None:
        fig, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=80)
        plt.close(fig)

    top = importance.head(20).iloc[::-1]
    save("importance", lambda ax: (ax.barh(top.feature, top.gain), ax.set_title("Gain")))
    if spec.task == "multiclass":
        from sklearn.metrics import ConfusionMatrixDisplay

        predicted = np.asarray(classes)[scores.argmax(axis=1)]
        fig, ax = plt.subplots(figsize=(7, 6))
        ConfusionMatrixDisplay.from_predictions(labels, predicted, ax=ax, xticks_rotation=45)
        fig.tight_layout()
        fig.savefig(folder / "confusion.png", dpi=80)
        plt.close(fig)
        return
    roc, pr, calibration = (curves[name] for name in ("roc", "pr", "calibration"))
    diagonal = ([0, 1], [0, 1], "--")
    save(
        "roc",
        lambda ax: (
            ax.plot(roc.false_positive_rate, roc.true_positive_rate),
            ax.plot(*diagonal),
            ax.set_title("ROC"),
        ),
    )
    save("pr", lambda ax: (ax.plot(pr.recall, pr.precision), ax.set_title("Precision-recall")))
    save(
        "calibration",
        lambda ax: (
            ax.plot(calibration.mean_score, calibration.observed_rate, "o-"),
            ax.plot(*diagonal),
            ax.set_title("Calibration"),
        ),
    )


def train(settings: Settings, name: str) -> TrainResult:
    """Train one model from its spec; register it as the challenger."""
    spec = load_spec(name, settings.ml_specs_dir)
    frame, classes = labelled_targets(spec, training_set(settings, spec))
    dates = {
        split: sorted(frame[frame.split == split].as_of_date.dt.date.unique())
        for split in ("train", "valid", "test")
    }
    data = {
        "as_of_first": dates["train"][0].isoformat(),
        "as_of_last": dates["test"][-1].isoformat(),
        **{f"{s}_dates": json.dumps([d.isoformat() for d in ds]) for s, ds in dates.items()},
        "horizon_days": spec.horizon_days,
    }
    spans = ", ".join(
        f"{s} {ds[0]}" + (f"..{ds[-1]}" if len(ds) > 1 else "") for s, ds in dates.items()
    )
    period = f"as of {spans} (a {spec.horizon_days}-day embargo between)"
    return fit_and_register(settings, spec, frame, classes, period, data)


@dataclass(frozen=True)
class Fitted:
    """A model searched on the train rows, calibrated on the valid rows, measured with the
    logistic baseline on the test rows."""

    parts: dict[str, pd.DataFrame]
    booster: lgb.Booster
    chosen: dict
    scorer: Scorer
    test_inputs: pd.DataFrame
    scores: np.ndarray
    labels: np.ndarray
    metrics: dict[str, float]
    baseline: dict[str, float]


def fit(spec: Spec, frame: pd.DataFrame, classes: list[str] | None) -> Fitted:
    """`frame`: rows with `split` (train, valid, test), `label`, `target` (labelled_targets) and the
    spec's features."""
    features = list(spec.features)
    parts = {s: frame[frame.split == s] for s in ("train", "valid", "test")}
    data = {
        # feature_pre_filter off: the search varies min_child_samples on the same Dataset
        s: lgb.Dataset(
            model_inputs(part, features, spec.categorical),
            part.target,
            free_raw_data=False,
            params={"feature_pre_filter": False},
        )
        for s, part in parts.items()
    }
    booster, chosen = _search(spec, data["train"], data["valid"].construct(), classes)
    scorer = _calibrate(spec, booster, parts["valid"], classes)
    test_inputs = model_inputs(parts["test"], features, spec.categorical)
    scores = scorer.predict(test_inputs)
    labels = parts["test"].label.to_numpy()
    metrics = model_metrics(labels, scores, classes, scorer.threshold)
    if classes is None:  # what calibration changed, on the same test rows
        uncalibrated = booster.predict(test_inputs)
        metrics["uncalibrated_brier"] = float(np.mean((uncalibrated - labels) ** 2))
        metrics["uncalibrated_calibration_error"] = expected_calibration_error(labels, uncalibrated)
    baseline = model_metrics(labels, _baseline(spec, frame), classes, scorer.threshold)
    return Fitted(parts, booster, chosen, scorer, test_inputs, scores, labels, metrics, baseline)


def fit_and_register(
    settings: Settings,
    spec: Spec,
    frame: pd.DataFrame,
    classes: list[str] | None,
    period: str,
    data: dict[str, object],
) -> TrainResult:
    """fit(), then log everything to MLflow and register the model as the challenger. `period`
    names the run, `data` (MLflow params) says which rows it learned from."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    name = spec.name
    features = list(spec.features)
    fitted = fit(spec, frame, classes)
    parts, booster, chosen, scorer = fitted.parts, fitted.booster, fitted.chosen, fitted.scorer
    test, test_inputs, scores, labels = (
        parts["test"],
        fitted.test_inputs,
        fitted.scores,
        fitted.labels,
    )
    metrics, baseline = fitted.metrics, fitted.baseline
    test_contributions = contributions(booster, test_inputs, scores, classes)
    if classes is None:
        test_contributions = test_contributions * scorer.platt.slope
    importance = pd.DataFrame(
        {
            "feature": features,
            "gain": booster.feature_importance("gain"),
            "mean_abs_contribution": np.abs(test_contributions).mean(axis=0),
        }
    ).sort_values("gain", ascending=False)

    mlflow_client = registry.client(settings)
    rows = {s: len(part) for s, part in parts.items()}
    with (
        mlflow.start_run(
            experiment_id=registry.experiment_id(settings, mlflow_client, name),
            run_name=f"{name} {period}",
        ) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        mlflow.log_params({k: v for k, v in chosen.items() if k not in ("verbosity",)})
        mlflow.log_params(
            {
                **data,
                "calibration": spec.calibration,
                "calibration_slope": scorer.platt.slope,
                "calibration_intercept": scorer.platt.intercept,
                "activation_policy": f"{spec.activation.policy} {spec.activation.value:g}",
                "activation_threshold": scorer.threshold,
                **{f"rows_{s}": n for s, n in rows.items()},
                "rows_train_by_label": json.dumps(
                    {str(k): int(v) for k, v in parts["train"].label.value_counts().items()}
                ),
            }
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"baseline_test_{k}": v for k, v in baseline.items()})
        mlflow.log_dict(spec.raw, "spec.yaml")
        mlflow.log_dict(
            {"features": features, "categorical": list(spec.categorical), "classes": classes},
            "features.json",
        )
        folder = Path(tmp)
        importance.to_csv(folder / "importance.csv", index=False)
        # explanations without people (MLflow holds no per-person rows: docs/privacy.md): the
        # mean contribution of each feature in each score decile of the test set
        top = scores if classes is None else scores.max(axis=1)
        pd.DataFrame(test_contributions, columns=features).groupby(deciles(top)).mean().rename_axis(
            "score_decile"
        ).reset_index().to_csv(folder / "contributions_by_score_decile.csv", index=False)
        curves = evaluation_curves(labels, scores) if classes is None else {}
        _plots(spec, curves, labels, scores, classes, importance, folder)
        train_rows = parts["train"]
        train_scores = scorer.predict(model_inputs(train_rows, features, spec.categorical))
        mlflow.log_dict(
            monitoring.reference(
                train_rows[features],
                train_scores if classes is None else train_scores.max(axis=1),
                spec.categorical,
            ),
            monitoring.REFERENCE_ARTIFACT,
        )
        mlflow.log_artifacts(tmp, "explanations")
        for curve, points in curves.items():
            mlflow.log_text(points.to_csv(index=False), f"evaluation/{curve}.csv")
        tags = registry.lineage_tags(settings)
        mlflow.set_tags(tags)
        inputs = model_inputs(test.head(50), features, spec.categorical)
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(inputs, booster.predict(inputs)),
            registered_model_name=name,
            pip_requirements=[f"lightgbm=={lgb.__version__}", f"pandas=={pd.__version__}"],
        )
        version = str(info.registered_model_version)
    tags[SCORING_TAG] = scoring_tag(scorer.platt, scorer.threshold)
    if classes is not None:  # scoring and the gate name the predicted category with these
        tags = {**tags, "classes": json.dumps(classes)}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.set_registered_model_alias(name, registry.CHALLENGER, version)
    activation = f"activation threshold {scorer.threshold:.3f} ({spec.activation.policy} "
    activation += f"{spec.activation.value:g} on the validation rows)"
    return TrainResult(name, version, run.info.run_id, metrics, baseline, rows, period, activation)


def describe(result: TrainResult) -> str:
    m, b = result.metrics, result.baseline_metrics
    rows = ", ".join(f"{k} {v:,}" for k, v in result.rows.items())
    if "macro_f1" in m:
        return (
            f"{result.model} v{result.version} (challenger): test macro F1 {m['macro_f1']:.3f} "
            f"(logistic baseline {b['macro_f1']:.3f}), accuracy {m['accuracy']:.3f}, top-2 "
            f"accuracy {m['top2_accuracy']:.3f}, log loss {m['log_loss']:.3f}; rows {rows} "
            f"{result.period}"
        )
    return (
        f"{result.model} v{result.version} (challenger): test ROC AUC {m['roc_auc']:.3f} "
        f"(logistic baseline {b['roc_auc']:.3f}), PR AUC {m['pr_auc']:.3f}, log loss "
        f"{m['log_loss']:.3f}, lift in top decile {m['lift_decile_1']:.2f}, Brier "
        f"{m['brier']:.3f} and calibration error {m['calibration_error']:.3f} (uncalibrated "
        f"{m['uncalibrated_brier']:.3f}, {m['uncalibrated_calibration_error']:.3f}); "
        f"{result.activation}: activates {m['positive_rate_at_threshold']:.1%} of the test "
        f"rows{NO_ONE if m['positive_rate_at_threshold'] == 0 else ''}, precision "
        f"{m['precision_at_threshold']:.3f}, recall {m['recall_at_threshold']:.3f}, F1 "
        f"{m['f1_at_threshold']:.3f}; rows {rows} {result.period}"
    )


# a policy may choose to activate no one (cost_ratio: when every activation costs more than it
# saves); said, not left to be found in an empty audience
NO_ONE = " (no one: is_above_threshold will be false for everyone; see the spec's activation)"
