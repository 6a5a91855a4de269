"""MLflow wiring: the tracking store, one experiment per model, registry aliases, lineage tags.

Embedded by default (SQLite at $MICROSEG_HOME/mlflow.db, artifacts beside it); a shared
server through MICROSEG_MLFLOW_TRACKING_URI. Models move by aliases, not stages: training
makes a version `challenger`, the gate in ml/promote.py moves `champion`.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from microseg.config import PROJECT_ROOT, Settings, dbt_project_vars
from microseg.errors import MicrosegError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"


def client(settings: Settings) -> MlflowClient:
    """An MlflowClient on the configured store (and mlflow's global URI set to it)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri)


def experiment_id(settings: Settings, mlflow_client: MlflowClient, model: str) -> str:
    """The model's experiment, created with an explicit artifact location under home."""
    experiment = mlflow_client.get_experiment_by_name(model)
    if experiment is not None:
        return experiment.experiment_id
    location = (settings.mlflow_artifacts_dir / model).resolve()
    location.mkdir(parents=True, exist_ok=True)
    return mlflow_client.create_experiment(model, artifact_location=location.as_uri())


def version_by_alias(mlflow_client: MlflowClient, model: str, alias: str) -> ModelVersion | None:
    """The version the alias points at; None only when the registry says there is no such
    model or alias. Any other failure (the registry unreachable, its database broken) is an
    error, so a step fails and is retried instead of going on as if there were no champion."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        # MLflow's stores say "no such model" with RESOURCE_DOES_NOT_EXIST and "no such
        # alias" with INVALID_PARAMETER_VALUE and this message
        missing_alias = f"alias {alias} not found" in exc.message
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or missing_alias:
            return None
        reason = exc.message
    except Exception as exc:  # e.g. the SQL store's driver errors
        reason = f"{type(exc).__name__}: {exc}"
    first_line = reason.strip().splitlines()[0] if reason.strip() else "no message"
    raise MicrosegError(
        f"the MLflow registry failed looking up {model}@{alias}: {first_line}"
    ) from None


def load_scorer(settings: Settings, model: str, alias: str | None = None, version: str = ""):
    """A version of a model (by alias, or by number) as an ml.scorer.Scorer: its LightGBM
    booster (the pyfunc flavor mishandles categories), calibration and threshold (a version
    trained before calibration: uncalibrated, at the threshold its run logged)."""
    import mlflow.lightgbm

    from ml.calibration import Platt
    from ml.scorer import SCORING_TAG, Scorer, scoring_tag

    mlflow_client = client(settings)
    if alias is not None:
        found = version_by_alias(mlflow_client, model, alias)
        if found is None:
            raise MicrosegError(f"no {model}@{alias} in the MLflow registry: run `microseg train`")
        version = str(found.version)
    found = mlflow_client.get_model_version(model, version)
    tags = dict(found.tags)
    if SCORING_TAG not in tags:  # trained before calibration: its scores as they were
        threshold = float(mlflow_client.get_run(found.run_id).data.params["activation_threshold"])
        tags[SCORING_TAG] = scoring_tag(Platt(), threshold)
    booster = mlflow.lightgbm.load_model(f"models:/{model}/{version}")
    return Scorer.from_tags(booster, version, tags)


def lineage_tags(settings: Settings) -> dict[str, str]:
    """git commit of the code and hash of the dbt manifest that built the features."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    manifest = settings.dbt_target_dir / "manifest.json"
    manifest_hash = (
        hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "unknown"
    )
    return {"git_commit": commit, "dbt_manifest_sha256": manifest_hash}


RETRAIN_TAG = "retrain_after_erasure"  # value: the erasure request that asked for it
RETRAIN_REQUEST_TAG = "retraining_requested"  # value: the night its drift asked for it
# as_of_first of a model trained on rows without a time (an own table, k-fold): any erasure
# may concern them
UNKNOWN_PERIOD = "unknown"
# the longest feature window (var feature_windows): events this old still shape a row
FEATURE_LOOKBACK_DAYS = max(max(w) for w in dbt_project_vars()["feature_windows"].values())


def flag_for_retraining(
    settings: Settings, active: tuple[date, date], request_id: str
) -> list[str]:
    """Tag every model version whose training data could hold people erased by `request_id`
    (active from active[0] to active[1]): its features (90 days back from its first as-of
    date) or labels (horizon days after its last) overlap that time. Returns "model vN"."""
    if (
        settings.mlflow_tracking_uri.startswith("sqlite:///")
        and not Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).exists()
    ):
        return []  # nothing was ever trained here
    mlflow_client = client(settings)
    flagged = []
    for model in mlflow_client.search_registered_models():
        for version in mlflow_client.search_model_versions(f"name = '{model.name}'"):
            params = mlflow_client.get_run(version.run_id).data.params
            if "as_of_first" not in params:
                continue
            if params["as_of_first"] == UNKNOWN_PERIOD:  # rows of no known time: any of them
                overlaps = True
            else:
                start = date.fromisoformat(params["as_of_first"]) - timedelta(FEATURE_LOOKBACK_DAYS)
                end = date.fromisoformat(params["as_of_last"]) + timedelta(
                    int(params.get("horizon_days", 0))
                )
                overlaps = active[0] <= end and start <= active[1]
            if overlaps:
                mlflow_client.set_model_version_tag(
                    model.name, version.version, RETRAIN_TAG, request_id
                )
                flagged.append(f"{model.name} v{version.version}")
    return sorted(flagged)


def record_decision(client: MlflowClient, model: str, challenger, decision: dict, summary: str):
    """The gate's verdict: on the challenger's run (promotion/decision.json) and version (tag
    `promotion`); a promotion moves the champion alias."""
    client.log_dict(challenger.run_id, decision, "promotion/decision.json")
    client.set_model_version_tag(model, challenger.version, "promotion", summary)
    if decision["promoted"]:
        client.set_registered_model_alias(model, CHAMPION, challenger.version)
