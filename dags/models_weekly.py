"""
### models_weekly — train, then promote through the gate

Sundays at 05:00 UTC (`MICROSEG_WEEKLY_SCHEDULE`), and as soon as behavior_nightly's
`request_retraining` updates the `model_drift` asset (a champion's drift against its training
set reached its spec's `retrain_psi`).

**Reads** `marts.fct_user_features_daily` (point-in-time training sets: features as of D, label
from [D, D + horizon)), `marts.fct_person_item_interactions` (the recommenders: ALS or BPR,
evaluated on the last days against popularity) and the specs in `ml/specs/`. **Writes**
MLflow runs and registered model versions (`$MICROSEG_HOME/mlflow.db`, artifacts in
`$MICROSEG_HOME/mlartifacts`; `make mlflow-ui`), and `marts.model_fairness_audit`.

Per model: `train_<model>` registers a new version as `challenger`; `promote_<model>` moves the
`champion` alias only if the challenger beats the champion on the same holdout by the spec's
margin and passes the fairness audit, or for a recommender beats the champion's and
popularity's NDCG@K by the spec's margins (the decision and reasons are logged on the run).
behavior_nightly scores and recommends with `@champion`.

A model without enough labelled data (the spec's minimum positives and negatives) fails its
train task at once with the counts, without retries; the other models still train.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from microseg.config import Settings
from microseg.orchestration import WRITER_POOL, model_drift_asset, run_step, undated
from ml.specs import RECOMMENDATION, spec_names

SETTINGS = Settings.from_env()
MODELS = spec_names(SETTINGS.ml_specs_dir) + spec_names(SETTINGS.ml_specs_dir, RECOMMENDATION)


DRIFT = model_drift_asset()


@dag(
    schedule=(
        AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(SETTINGS.weekly_schedule, timezone="UTC"),
            assets=[DRIFT],
        )
        if SETTINGS.weekly_schedule
        else [DRIFT]
    ),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["microseg", "models", "weekly"],
    doc_md=__doc__,
    default_args={"owner": "data-team", "retries": 1, "pool": WRITER_POOL},
)
def models_weekly():
    for model in MODELS:

        @task(task_id=f"train_{model}")
        def train_model(model=model, params=None, data_interval_end=None):
            from microseg.pipeline import train_step

            return run_step(train_step, params, data_interval_end, moment=undated, model=model)

        @task(task_id=f"promote_{model}")
        def promote_model(model=model, params=None, data_interval_end=None):
            from microseg.pipeline import promote_step

            return run_step(promote_step, params, data_interval_end, moment=undated, model=model)

        train_model() >> promote_model()


models_weekly()
