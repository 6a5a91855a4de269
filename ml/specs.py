"""Model specs (ml/specs/<name>.yaml): label, horizon, features, LightGBM search, gates.

A spec is data, so adding a model is a YAML file; everything here checks the file and turns
mistakes into one-line errors naming the spec and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from microseg.config import dbt_project_vars, load_yaml
from microseg.errors import ConfigError
from microseg.segments import mart_columns
from ml.calibration import METHODS, POLICIES, ActivationPolicy
from ml.monitoring import Thresholds

# Each label kind: (task, dbt view, column, the var feature_windows family that gives its
# horizons). The views (models/marts/person_outcomes.sql, person_category_outcomes.sql) hold per
# person, as-of date D and horizon h what happened in [D, D + h), for the feature windows that
# count it.
LABEL_KINDS = {
    "purchase_within": ("binary", "person_outcomes", "purchased", "purchases"),
    "no_session_within": ("binary", "person_outcomes", "no_session", "sessions"),
    "top_category_within": ("multiclass", "person_category_outcomes", "top_category", "sessions"),
}
RECOMMENDATION = "recommendation"  # the task of recommender specs (ml/recommend)
ELIGIBLE = {"everyone": "true", "active_28d": "features.sessions_28d > 0"}
KEY_COLUMNS = ("person_id", "as_of_date")
# what the fairness audit groups by: columns of fct_user_features_daily as known on the
# as-of date, never model inputs
FAIRNESS_GROUPS = ("device_type", "country", "visitor_type")


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    task: str  # binary | multiclass
    label_relation: str  # SQL: person_id, as_of_date, label
    horizon_days: int
    eligible_sql: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    train_dates: int  # the newest labelled dates before validation's, one embargo earlier
    valid_dates: int
    test_dates: int
    min_positives: int  # binary
    min_negatives: int  # binary
    min_rows_per_class: int  # multiclass
    params: dict[str, Any]
    num_boost_round: int
    early_stopping_rounds: int
    search_trials: int
    search_seed: int
    search_space: dict[str, list[Any]]
    calibration: str  # platt | none (ml/calibration.py)
    activation: ActivationPolicy  # how training chooses the activation threshold
    decay_half_life_days: float | None  # scores fade with days since the last session
    monitoring: Thresholds  # PSI levels that warn and that stop scoring (ml/monitoring.py)
    promotion: dict[str, Any]
    fairness: dict[str, Any]
    raw: dict[str, Any]


def spec_field(raw: dict[str, Any], path: str, kind: type | tuple[type, ...], spec: str) -> Any:
    value: Any = raw
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"model spec '{spec}': {path}: is required")
        value = value[part]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"model spec '{spec}': {path}: {value!r} has the wrong type")
    return value


def _activation(raw: dict[str, Any], name: str, task: str) -> ActivationPolicy:
    if "activation_threshold" in raw:  # specs written before the threshold policies
        raise ConfigError(
            f"model spec '{name}': activation_threshold: replaced by activation: "
            f"{{policy: fixed, value: {raw['activation_threshold']}}} (or another policy: "
            "top_fraction, precision, cost_ratio)"
        )
    policy = spec_field(raw, "activation.policy", str, name)
    value = float(spec_field(raw, "activation.value", (int, float), name))
    allowed = POLICIES if task == "binary" else ("fixed",)  # one score per class: no labels
    if policy not in allowed:
        raise ConfigError(
            f"model spec '{name}': activation.policy: {policy!r} is not one of {list(allowed)}"
        )
    within = {"cost_ratio": value > 0}.get(policy, 0 < value < 1)
    if not within:
        limits = "a positive number" if policy == "cost_ratio" else "between 0 and 1"
        raise ConfigError(f"model spec '{name}': activation.value: must be {limits}")
    return ActivationPolicy(policy, value)


def learner_fields(raw: dict[str, Any], name: str, task: str) -> dict[str, Any]:
    """The Spec fields of how a model learns and decides: LightGBM and its search, calibration
    and the activation policy (shared by warehouse specs and own-table specs)."""
    calibration = raw.get("calibration", "none")
    if calibration not in METHODS or (task != "binary" and calibration != "none"):
        allowed = list(METHODS) if task == "binary" else ["none"]
        raise ConfigError(
            f"model spec '{name}': calibration: {calibration!r} is not one of {allowed}"
        )
    return {
        "params": dict(spec_field(raw, "lightgbm.params", dict, name)),
        "num_boost_round": spec_field(raw, "lightgbm.num_boost_round", int, name),
        "early_stopping_rounds": spec_field(raw, "lightgbm.early_stopping_rounds", int, name),
        "search_trials": spec_field(raw, "lightgbm.search.trials", int, name),
        "search_seed": spec_field(raw, "lightgbm.search.seed", int, name),
        "search_space": dict(spec_field(raw, "lightgbm.search.space", dict, name)),
        "calibration": calibration,
        "activation": _activation(raw, name, task),
    }


def fairness_limits(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """The spec's fairness mapping with `significance` (ml/fairness.py: a disparity fails the
    audit only at a two-proportion p below it) checked, 0.05 unless set."""
    limits = dict(spec_field(raw, "fairness", dict, name))
    significance = limits.setdefault("significance", 0.05)
    numeric = isinstance(significance, int | float) and not isinstance(significance, bool)
    if not numeric or not 0 < significance <= 1:
        raise ConfigError(
            f"model spec '{name}': fairness.significance: a p-value above 0, at most 1"
        )
    return limits


def _split_sizes(raw: dict[str, Any], name: str) -> dict[str, int]:
    """How many as-of dates train, validation and test take (ml/training_sets.split_dates)."""
    if "as_of_dates" in (raw.get("training") or {}):  # specs written before the embargo
        raise ConfigError(
            f"model spec '{name}': training.as_of_dates: replaced by training.train_dates (the "
            "dates trained on, a label horizon before the validation dates)"
        )
    sizes = {
        f"{split}_dates": spec_field(raw, f"training.{split}_dates", int, name)
        for split in ("train", "valid", "test")
    }
    for field, size in sizes.items():
        if size < 1:
            raise ConfigError(f"model spec '{name}': training.{field}: must be at least 1")
    return sizes


def load_spec(name: str, specs_dir: Path) -> Spec:
    """Read and check <specs_dir>/<name>.yaml (settings.ml_specs_dir: ml/specs by default)."""
    path = specs_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(spec_names(specs_dir)) or "none"
        raise ConfigError(f"no model spec {name!r} in {specs_dir} (known: {known})")
    try:
        raw = load_yaml(path.read_text("utf-8"))
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict) or raw.get("name") != name:
        raise ConfigError(f"model spec '{name}': name must be {name!r} (the file name)")
    task = spec_field(raw, "task", str, name)
    if task == RECOMMENDATION:
        raise ConfigError(f"model spec '{name}' is a recommender: `microseg recommend` uses it")
    kind = spec_field(raw, "label.kind", str, name)
    horizon = spec_field(raw, "label.horizon_days", int, name)
    if kind not in LABEL_KINDS:
        raise ConfigError(
            f"model spec '{name}': label.kind: {kind!r} is not one of {list(LABEL_KINDS)}"
        )
    label_task, label_view, label_column, windows = LABEL_KINDS[kind]
    horizons = dbt_project_vars()["feature_windows"][windows]
    if task != label_task:
        raise ConfigError(f"model spec '{name}': task: label {kind!r} makes a {label_task} model")
    if horizon not in horizons:
        raise ConfigError(
            f"model spec '{name}': label.horizon_days: {kind} knows {', '.join(map(str, horizons))}"
        )
    eligible = spec_field(raw, "eligible", str, name)
    if eligible not in ELIGIBLE:
        raise ConfigError(
            f"model spec '{name}': eligible: {eligible!r} is not one of {list(ELIGIBLE)}"
        )
    columns = mart_columns("fct_user_features_daily")
    never_inputs = set(KEY_COLUMNS) | set(FAIRNESS_GROUPS)
    excluded = set(spec_field(raw, "features.exclude", list, name)) | never_inputs
    for column in excluded - never_inputs:
        if column not in columns:
            raise ConfigError(f"model spec '{name}': features.exclude: unknown column {column!r}")
    categorical = tuple(spec_field(raw, "categorical", list, name))
    for column in categorical:
        if column not in columns or column in excluded:
            raise ConfigError(f"model spec '{name}': categorical: {column!r} is not a feature")
    features = tuple(c for c in columns if c not in excluded)
    levels = raw.get("monitoring") or {}
    known = {"warn_psi", "fail_psi", "retrain_psi"}
    if not isinstance(levels, dict) or set(levels) - known:
        raise ConfigError(
            f"model spec '{name}': monitoring: expected {{warn_psi, fail_psi, retrain_psi}}"
        )
    monitoring = Thresholds(
        levels.get("warn_psi", Thresholds.warn), levels.get("fail_psi"), levels.get("retrain_psi")
    )
    warn, fail, retrain = monitoring.warn, monitoring.fail, monitoring.retrain
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for v in (warn, fail, retrain)
        if v is not None
    ):
        raise ConfigError(
            f"model spec '{name}': monitoring: warn_psi, fail_psi and retrain_psi must be "
            "positive numbers"
        )
    order = [  # a drift stopping the scores must also have asked for a retraining
        ("fail_psi must be above warn_psi", fail is not None and fail <= warn),
        ("retrain_psi must be above warn_psi", retrain is not None and retrain <= warn),
        (
            "retrain_psi must be below fail_psi",
            None not in (retrain, fail) and retrain >= fail,
        ),
    ]
    for message, broken in order:
        if broken:
            raise ConfigError(f"model spec '{name}': monitoring: {message}")
    decay = raw.get("decay_half_life_days")
    if decay is not None and (
        isinstance(decay, bool) or not isinstance(decay, int | float) or decay <= 0
    ):
        raise ConfigError(
            f"model spec '{name}': decay_half_life_days: must be a positive number of days"
        )
    groups = spec_field(raw, "fairness.groups", list, name)
    for group in groups:
        if group not in FAIRNESS_GROUPS:
            raise ConfigError(f"model spec '{name}': fairness.groups: unknown group {group!r}")
    return Spec(
        name=name,
        description=spec_field(raw, "description", str, name),
        task=task,
        label_relation=(
            f"select person_id, as_of_date, {label_column} as label from marts.{label_view} "
            f"where horizon_days = {horizon}"
        ),
        horizon_days=horizon,
        eligible_sql=ELIGIBLE[eligible],
        features=features,
        categorical=categorical,
        **_split_sizes(raw, name),
        min_positives=spec_field(raw, "training.min_positives", int, name)
        if task == "binary"
        else 0,
        min_negatives=spec_field(raw, "training.min_negatives", int, name)
        if task == "binary"
        else 0,
        min_rows_per_class=(
            spec_field(raw, "training.min_rows_per_class", int, name) if task == "multiclass" else 0
        ),
        **learner_fields(raw, name, task),
        decay_half_life_days=None if decay is None else float(decay),
        monitoring=monitoring,
        promotion=dict(spec_field(raw, "promotion", dict, name)),
        fairness=fairness_limits(raw, name),
        raw=raw,
    )


def spec_names(specs_dir: Path, task: str = "scoring") -> list[str]:
    """The specs of one family: scoring models (LightGBM: binary, multiclass) or recommenders
    (task: recommendation, trained by `microseg recommend`). A file that does not parse counts
    as a scoring spec, whose loading then says what is wrong with it."""

    def family(path: Path) -> str:
        try:
            raw = load_yaml(path.read_text("utf-8"))
        except yaml.YAMLError:
            return "scoring"
        is_recommender = isinstance(raw, dict) and raw.get("task") == RECOMMENDATION
        return RECOMMENDATION if is_recommender else "scoring"

    return sorted(p.stem for p in specs_dir.glob("*.yaml") if family(p) == task)
