"""`microseg train --spec FILE`: a model trained on the user's own table - a warehouse table or a
CSV/Parquet file with an id, a label, feature columns and optionally a time - searched,
calibrated, compared with the logistic baseline, tracked and registered exactly as the built-in
models are (ml/train.py), and audited for fairness on the spec's group columns.

With a time column the newest rows are the test rows and the ones before them the validation
rows (no row is scored on a past it was trained after); without one, stratified k-fold cross-
validation: every fold is the test rows once, the folds' metrics are logged as mean and standard
deviation, and the model of the last fold is the one registered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import yaml

from microseg.config import Settings, load_yaml
from microseg.errors import ConfigError, DataQualityError
from microseg.privacy import consent_policy
from microseg.warehouse import connect
from ml import registry
from ml.fairness import Audit, audit
from ml.monitoring import Thresholds
from ml.promote import save_audit
from ml.specs import Spec, fairness_limits, learner_fields, spec_field, spec_names
from ml.train import TrainResult, describe, fit, fit_and_register, labelled_targets

TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")
FILE_READERS = {".csv": "read_csv", ".parquet": "read_parquet"}


@dataclass(frozen=True)
class Source:
    """Where the rows are and what their columns mean."""

    table: str | None  # schema.table in the warehouse
    file: Path | None  # CSV or Parquet
    id: str
    label: str
    time: str | None
    groups: tuple[str, ...]  # fairness audit columns, never model inputs
    valid_fraction: float
    test_fraction: float
    folds: int

    @property
    def name(self) -> str:
        return self.table or str(self.file)


def _fraction(raw: dict[str, Any], field: str, name: str) -> float:
    value = (raw.get("training") or {}).get(field, 0.2)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
        raise ConfigError(f"model spec '{name}': training.{field}: must be between 0 and 0.5")
    return float(value)


def load_own_spec(path: Path, settings: Settings) -> tuple[Spec, Source]:
    """Read and check an own-table spec (docs/examples/session_purchase.yaml shows one)."""
    if not path.is_file():
        raise ConfigError(f"no model spec at {path}")
    try:
        raw = load_yaml(path.read_text("utf-8"))
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{path}: a model spec needs a name")
    name = raw["name"]
    if name in spec_names(settings.ml_specs_dir, "scoring") + spec_names(
        settings.ml_specs_dir, "recommendation"
    ):
        raise ConfigError(f"model spec '{name}': the name of a built-in model; choose another")
    if spec_field(raw, "task", str, name) != "binary":
        raise ConfigError(f"model spec '{name}': task: own tables train binary models")
    source = spec_field(raw, "source", dict, name)
    if ("table" in source) == ("file" in source):
        raise ConfigError(f"model spec '{name}': source: name a table or a file (one of them)")
    table = source.get("table")
    if table is not None and not (isinstance(table, str) and TABLE_NAME.fullmatch(table)):
        raise ConfigError(f"model spec '{name}': source.table: {table!r} is not schema.table")
    file = None
    if "file" in source:
        file = (path.parent / spec_field(raw, "source.file", str, name)).resolve()
        if file.suffix.lower() not in FILE_READERS:
            raise ConfigError(f"model spec '{name}': source.file: a .csv or .parquet file")
    time = source.get("time")
    if time is not None and not isinstance(time, str):
        raise ConfigError(f"model spec '{name}': source.time: a column name")
    features = tuple(spec_field(raw, "features", list, name))
    categorical = tuple(raw.get("categorical") or ())
    groups = tuple(spec_field(raw, "fairness.groups", list, name))
    keys = {spec_field(raw, "source.id", str, name), spec_field(raw, "source.label", str, name)}
    if not features:
        raise ConfigError(f"model spec '{name}': features: name at least one column")
    for column in features:
        if not isinstance(column, str) or column in keys or column == time:
            raise ConfigError(f"model spec '{name}': features: {column!r} cannot be a feature")
    if not isinstance(raw.get("categorical") or [], list):
        raise ConfigError(f"model spec '{name}': categorical: a list of features")
    for column in categorical:
        if column not in features:
            raise ConfigError(f"model spec '{name}': categorical: {column!r} is not a feature")
    if not groups or not all(isinstance(g, str) and g not in features for g in groups):
        raise ConfigError(
            f"model spec '{name}': fairness.groups: columns of the table that are not features "
            "(the audit's groups are never model inputs)"
        )
    for limit in ("min_group_size", "min_disparate_impact", "max_equal_opportunity_gap"):
        value = spec_field(raw, f"fairness.{limit}", (int, float), name)
        if value < 0:
            raise ConfigError(f"model spec '{name}': fairness.{limit}: must not be negative")
    training = raw.get("training") or {}
    if not isinstance(training, dict):
        raise ConfigError(f"model spec '{name}': training: expected a mapping")
    folds = training.get("folds", 5)
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= 20:
        raise ConfigError(f"model spec '{name}': training.folds: between 2 and 20")
    for minimum in ("min_positives", "min_negatives"):
        value = training.get(minimum, 20)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model spec '{name}': training.{minimum}: a positive whole number")
    spec = Spec(
        name=name,
        description=spec_field(raw, "description", str, name),
        task="binary",
        label_relation="",
        horizon_days=0,
        eligible_sql="true",
        features=features,
        categorical=categorical,
        train_dates=0,
        valid_dates=0,
        test_dates=0,
        min_positives=int(training.get("min_positives", 20)),
        min_negatives=int(training.get("min_negatives", 20)),
        min_rows_per_class=0,
        **learner_fields(raw, name, "binary"),
        decay_half_life_days=None,
        monitoring=Thresholds(),
        promotion={},
        fairness=fairness_limits(raw, name),
        raw=raw,
    )
    return spec, Source(
        table=table,
        file=file,
        id=source["id"],
        label=source["label"],
        time=time,
        groups=groups,
        valid_fraction=_fraction(raw, "valid_fraction", name),
        test_fraction=_fraction(raw, "test_fraction", name),
        folds=folds,
    )


NOT_FILTERED = "not filtered by consent: the rows name no person_id"


def _read(settings: Settings, spec: Spec, source: Source) -> tuple[pd.DataFrame, str]:
    """The source's rows and what consent did to them: from a warehouse table that names
    person_id, only the people who consent to being scored (as scores do)."""
    if source.file is not None:
        if not source.file.is_file():
            raise ConfigError(f"model spec '{spec.name}': source.file: no file {source.file}")
        reader = FILE_READERS[source.file.suffix.lower()]
        try:
            frame = duckdb.execute(f"select * from {reader}(?)", [str(source.file)]).df()
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            raise ConfigError(f"{source.file.name}: unreadable ({message})") from None
        return frame, "not filtered by consent: a file (microseg cannot tell whose rows)"
    with connect(settings, read_only=True) as con:
        try:
            columns = [r[0] for r in con.execute(f"describe {source.table}").fetchall()]
        except duckdb.CatalogException:
            raise ConfigError(
                f"model spec '{spec.name}': source.table: no table {source.table}"
            ) from None
        consent = ""
        if "person_id" in columns:
            moment = f"{source.time}::date" if source.time in columns else "current_date"
            consent = f"where marts.has_consent(person_id, ?, {moment})"
        purpose = consent_policy().purpose_of["scores"]
        frame = con.execute(
            f"select * from {source.table} {consent}", [purpose] if consent else []
        ).df()
    return frame, f"people who consent to {purpose}" if consent else NOT_FILTERED


def _checked(frame: pd.DataFrame, spec: Spec, source: Source) -> pd.DataFrame:
    """The columns the spec names, typed; one-line errors for what cannot be learned from."""
    where = f"model spec '{spec.name}': {source.name}"
    wanted = [source.id, source.label, *spec.features, *source.groups]
    wanted += [source.time] if source.time else []
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise ConfigError(f"{where} has no column {', '.join(missing)}")
    repeated = int(frame[source.id].duplicated().sum())
    if repeated:
        raise DataQualityError(f"{where}: {repeated} rows repeat an {source.id} (one row per id)")
    label = frame[source.label]
    values = set(label.dropna().map(lambda v: str(v).lower()).unique())
    if not values <= {"0", "1", "true", "false", "0.0", "1.0"} or label.isna().any():
        shown = sorted(values - {"0", "1", "true", "false", "0.0", "1.0"})[:3] or ["null"]
        raise DataQualityError(
            f"{where}: label {source.label} must be 0/1 or true/false (found {', '.join(shown)})"
        )
    out = pd.DataFrame({"row_id": frame[source.id].astype(str)})
    out["label"] = label.map(lambda v: str(v).lower() in ("1", "true", "1.0")).astype(int)
    if out.label.nunique() < 2:
        raise DataQualityError(
            f"{where}: label {source.label} has one class ({out.label.iloc[0]} on every row)"
        )
    for column in spec.features:
        values = frame[column]
        if column in spec.categorical:
            out[column] = values.astype("string")
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[column] = values.astype("float64")
        else:
            raise ConfigError(
                f"{where}: feature {column} is not numeric; declare it under categorical"
            )
    for column in source.groups:
        out[column] = frame[column].astype("string").fillna("unknown")
    if source.time:
        times = frame[source.time]
        if not pd.api.types.is_datetime64_any_dtype(times):
            times = pd.to_datetime(times, errors="coerce")
        if times.isna().any():
            raise DataQualityError(f"{where}: time {source.time} is not a date or timestamp")
        out["as_of_date"] = times
    return out


def _time_split(frame: pd.DataFrame, source: Source) -> pd.Series:
    """The newest test_fraction of the rows test, the valid_fraction before them valid."""
    order = frame.sort_values(["as_of_date", "row_id"]).index
    test_from = int(len(order) * (1 - source.test_fraction))
    valid_from = int(len(order) * (1 - source.test_fraction - source.valid_fraction))
    split = pd.Series("train", index=frame.index)
    split.loc[order[valid_from:test_from]] = "valid"
    split.loc[order[test_from:]] = "test"
    return split


def _stratified(labels: np.ndarray, parts: int, seed: int) -> np.ndarray:
    """A part number per row, each label spread evenly over the parts (seeded)."""
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), dtype=int)
    for value in (0, 1):
        rows = np.flatnonzero(labels == value)
        part[rng.permutation(rows)] = np.arange(len(rows)) % parts
    return part


def _fold_splits(frame: pd.DataFrame, spec: Spec, source: Source) -> list[pd.Series]:
    """Per fold: its rows test, a stratified valid_fraction of the others valid, the rest
    train."""
    labels = frame.label.to_numpy()
    fold = _stratified(labels, source.folds, spec.search_seed)
    valid_parts = round(1 / source.valid_fraction)
    inner = _stratified(labels, valid_parts, spec.search_seed + 1)
    splits = []
    for k in range(source.folds):
        # the valid rows rotate with the fold, so no fold validates on one fixed slice
        split = np.where(inner == k % valid_parts, "valid", "train")
        splits.append(pd.Series(np.where(fold == k, "test", split), index=frame.index))
    return splits


@dataclass(frozen=True)
class OwnResult:
    trained: TrainResult
    audit: Audit
    source: Source
    cross_validation: dict[str, float]  # cv_<metric>_mean / _sd (no time column)
    consent: str  # whose rows were read

    def summary(self) -> str:
        lines = [describe(self.trained)]
        cv = self.cross_validation
        if cv:
            lines.append(
                f"  {self.source.folds}-fold cross-validation: ROC AUC "
                f"{cv['cv_roc_auc_mean']:.3f} +- {cv['cv_roc_auc_sd']:.3f} (logistic baseline "
                f"{cv['cv_baseline_roc_auc_mean']:.3f} +- {cv['cv_baseline_roc_auc_sd']:.3f})"
            )
        verdict = "passed" if self.audit.passed else "failed: " + "; ".join(self.audit.failures)
        groups = ", ".join(self.source.groups)
        lines.append(f"  fairness audit on the test rows by {groups}: {verdict}")
        lines.append(f"  rows: {self.consent}")
        return "\n".join(lines)


def train_own(settings: Settings, path: Path) -> OwnResult:
    """Train, register as challenger and audit the model of the own-table spec at `path`."""
    spec, source = load_own_spec(path, settings)
    rows, consent = _read(settings, spec, source)
    frame = _checked(rows, spec, source)
    data: dict[str, object] = {"source": source.name, "rows": len(frame), "consent": consent}
    cross_validation: dict[str, float] = {}
    if source.time:
        frame["split"] = _time_split(frame, source)
        test = frame[frame.split == "test"].as_of_date
        data |= {
            "split": "time",
            "test_from": str(test.min()),
            "test_to": str(test.max()),
            # what an erasure checks (registry.flag_for_retraining)
            "as_of_first": f"{frame.as_of_date.min():%Y-%m-%d}",
            "as_of_last": f"{frame.as_of_date.max():%Y-%m-%d}",
        }
        period = f"on {source.name} to {frame.as_of_date.max():%Y-%m-%d}"
    else:
        splits = _fold_splits(frame, spec, source)
        folds = []
        for split in splits[:-1]:
            fitted = fit(spec, *labelled_targets(spec, frame.assign(split=split)))
            folds.append((fitted.metrics, fitted.baseline))
        frame["split"] = splits[-1]
        data |= {
            "split": f"{source.folds}-fold stratified",
            "registered_fold": source.folds,
            "as_of_first": registry.UNKNOWN_PERIOD,  # any erasure may concern these rows
        }
        period = f"on {source.name}, {source.folds}-fold"
    targets, classes = labelled_targets(spec, frame)
    trained = fit_and_register(settings, spec, targets, classes, period, data)
    client = registry.client(settings)
    scorer = registry.load_scorer(settings, spec.name, version=trained.version)
    test = targets[targets.split == "test"]
    scores = scorer.predict(scorer.inputs(test))
    result = audit(test, scores, spec, scorer.threshold)
    client.log_text(trained.run_id, result.groups.to_csv(index=False), "fairness/audit.csv")
    if settings.warehouse_path.exists():
        save_audit(settings, spec.name, trained.version, result)
    if not source.time:
        folds.append((trained.metrics, trained.baseline_metrics))
        for metric in ("roc_auc", "pr_auc", "brier", "log_loss"):
            for prefix, index in (("", 0), ("baseline_", 1)):
                values = [f[index][metric] for f in folds]
                cross_validation[f"cv_{prefix}{metric}_mean"] = float(np.mean(values))
                cross_validation[f"cv_{prefix}{metric}_sd"] = float(np.std(values, ddof=1))
        for key, value in cross_validation.items():
            client.log_metric(trained.run_id, key, value)
    return OwnResult(trained, result, source, cross_validation, consent)
