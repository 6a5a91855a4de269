"""
### behavior_nightly — events in; segments, scores and audiences out

Daily at 03:00 UTC (`MICROSEG_NIGHTLY_SCHEDULE`).

**Reads** new event files in `$MICROSEG_HOME/landing` (jsonl, jsonl.gz, csv, parquet, Segment
JSON). **Writes** `$MICROSEG_HOME/warehouse.duckdb` (raw, staging, intermediate, marts),
`marts.user_scores`, `marts.person_clusters`, `marts.segment_memberships` (+ history,
summary), trigger firings and messages (`marts.trigger_firings`, `marts.activation_outbox`,
files under `$MICROSEG_HOME/activation/`, webhooks of triggers.yml), audience CSVs in
`$MICROSEG_HOME/exports/<as_of>/`, and the analysts' snapshot `analytics.duckdb`.

Steps: ingest → raw Great Expectations checkpoint → dbt through Cosmos, one `dbt build` task
per layer (events → sessions → person_days, `dbt_project/selectors.yml`; a model's data
tests run right after it, so a failing test stops what is built on it; under
`MICROSEG_ENGINE=spark` they build on Spark, between `export_raw`, which writes raw as
Parquet, and `serve_spark_build`, which copies Spark's tables into DuckDB) → feature Great
Expectations checkpoint → score with each champion model (beside it, `request_retraining`:
skipped unless a champion drifted past its spec's `retrain_psi`, when it updates the
`model_drift` asset that starts models_weekly) → behavioral clusters →
recommendations of each recommender champion (`marts.user_recommendations`) → segments (its
dbt build also makes the firings of the day before) → triggers decided and delivered
(`microseg activate`, on those firings) → experiments analyzed
(`marts.experiment_results`, `marts.experiment_decisions`) → audience exports → retention
(`microseg privacy expire`: MICROSEG_RAW_RETENTION_DAYS, MICROSEG_QUARANTINE_RETENTION_DAYS) →
publish.

**Date.** Every task works on `as_of` = the day of the run's 03:00 trigger (the run of
2026-10-15 03:00 builds features, scores and segments as of 2026-10-15, i.e. behavior before
that day). A manual run takes `as_of` from its params. The ingest task loads the landing files
due by that date: a file named with a date D (`events_2026-10-14.jsonl.gz`) waits for the night
of D + 1; undated files load on any night. Re-running a run or clearing a task gives the same
tables.

**Backfill** as-of dates 2026-10-02 … 2026-10-15: *Trigger Dag → Backfill* in the UI, from
2026-10-02 00:00 to 2026-10-15 23:59 (the window is inclusive and compares the 03:00 run
times), or `airflow backfill create --dag-id behavior_nightly --from-date 2026-10-02
--to-date 2026-10-15T23:59` (on SQLite metadata the CLI can meet `database is locked` while the
scheduler runs; the UI cannot). Keep max active runs at 1 (the default): the runs then go in
date order and each night loads only its own deliveries, so the backfill writes what the
nightly runs would have, even when every file is already in the landing folder. Dates that
already have a run are skipped unless you choose *reprocess* (`--reprocess-behavior
completed`).

**Failures.** A failed expectation, dbt data test or rejected file fails the task at once (no
retries; the log names the expectation or test and example rows, Data Docs are in
`$MICROSEG_HOME/gx`). Other failures retry twice, a minute apart. Every task uses the
one-slot `warehouse_writer` pool: DuckDB allows one process on the warehouse at a time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, TaskGroup, chain, dag, task
from cosmos import ProfileConfig
from cosmos.constants import InvocationMode
from cosmos.operators.local import DbtBuildLocalOperator

from microseg.config import Settings
from microseg.orchestration import (
    WRITER_POOL,
    fail_on_failed_dbt_tests,
    model_drift_asset,
    run_step,
)

SETTINGS = Settings.from_env()
ON_SPARK = SETTINGS.engine == "spark"  # MICROSEG_ENGINE where the DAGs are parsed and run
# dbt_project/selectors.yml, in build order; models/segments: the segments step
DBT_LAYERS = ("events", "sessions", "person_days")


@dag(
    schedule=(
        CronTriggerTimetable(SETTINGS.nightly_schedule, timezone="UTC")
        if SETTINGS.nightly_schedule
        else None
    ),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["microseg", "behavior", "nightly"],
    doc_md=__doc__,
    default_args={
        "owner": "data-team",
        "retries": 2,
        "retry_delay": pendulum.duration(minutes=1),
        "pool": WRITER_POOL,
    },
    params={
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date",
            description="As-of date (default: the day of the run's 03:00 trigger)",
        ),
        "full_refresh": Param(False, type="boolean", description="Rebuild incremental models"),
        "audiences": Param(
            None,
            type=["null", "array"],
            description="Segments to export (default: MICROSEG_EXPORT_AUDIENCES)",
        ),
    },
)
def behavior_nightly():
    @task
    def ingest(params=None, data_interval_end=None):
        from microseg.pipeline import ingest_step

        return run_step(ingest_step, params, data_interval_end)

    @task
    def validate_raw(params=None, data_interval_end=None):
        from microseg.pipeline import validate_step

        return run_step(validate_step, params, data_interval_end)

    # dbt through Cosmos, one `dbt build` per layer: each model's data tests run right after
    # it, so a failed test stops the models built on it (and fails the task without retries)
    with TaskGroup("dbt_build", tooltip="dbt build: events, sessions, person_days") as dbt_build:
        layers = [
            DbtBuildLocalOperator(
                task_id=layer,
                doc_md=f"`dbt build --selector {layer}` (dbt_project/selectors.yml)",
                project_dir=SETTINGS.dbt_project_dir,
                profile_config=ProfileConfig(
                    profile_name="microseg",
                    target_name=SETTINGS.engine,  # profiles.yml's output: duckdb or spark
                    profiles_yml_filepath=SETTINGS.dbt_project_dir / "profiles.yml",
                ),
                dbt_executable_path=str(Path(sys.executable).with_name("dbt")),
                invocation_mode=InvocationMode.SUBPROCESS,
                selector=layer,
                dbt_cmd_flags=["--exclude-resource-type", "unit_test"],  # development tests
                full_refresh="{{ params.full_refresh }}",
                vars=SETTINGS.dbt_vars,
                env=SETTINGS.dbt_env,  # the warehouse, memory limit, threads and spill folder
                append_env=True,
                install_deps=False,
                # dbt's partial parse kept between tasks and nights: a full parse costs seconds
                cache_dir=SETTINGS.home / "dbt" / "cosmos",
                emit_datasets=False,
                callback=fail_on_failed_dbt_tests,
            )
            for layer in DBT_LAYERS
        ]
        chain(*layers)

    @task
    def export_raw(params=None, data_interval_end=None):
        from microseg.pipeline import export_raw_step

        return run_step(export_raw_step, params, data_interval_end)

    @task
    def serve_spark_build(params=None, data_interval_end=None):
        from microseg.pipeline import serve_spark_step

        return run_step(serve_spark_step, params, data_interval_end)

    @task
    def validate_features(params=None, data_interval_end=None):
        from microseg.pipeline import validate_features_step

        return run_step(validate_features_step, params, data_interval_end)

    @task
    def score(params=None, data_interval_end=None):
        from microseg.pipeline import score_step

        return run_step(score_step, params, data_interval_end)

    # all_done: a night whose scores were refused for drift (fail_psi) still asks
    @task(outlets=[model_drift_asset()], trigger_rule="all_done")
    def request_retraining(params=None, data_interval_end=None):
        """Succeeds, updating the asset that starts models_weekly, only when a champion's
        drift reached its spec's retrain_psi tonight (once per champion version); skipped
        otherwise."""
        from microseg.pipeline import request_retraining_step

        return run_step(request_retraining_step, params, data_interval_end)

    @task
    def cluster(params=None, data_interval_end=None):
        from microseg.pipeline import cluster_step

        return run_step(cluster_step, params, data_interval_end)

    @task
    def recommend(params=None, data_interval_end=None):
        from microseg.pipeline import recommend_step

        return run_step(recommend_step, params, data_interval_end)

    @task
    def segments(params=None, data_interval_end=None):
        from microseg.pipeline import segments_step

        return run_step(segments_step, params, data_interval_end)

    @task
    def activate(params=None, data_interval_end=None):
        from microseg.pipeline import activate_step

        return run_step(activate_step, params, data_interval_end)

    @task
    def experiments(params=None, data_interval_end=None):
        from microseg.pipeline import experiments_step

        return run_step(experiments_step, params, data_interval_end)

    @task
    def export_audiences(params=None, data_interval_end=None):
        from microseg.pipeline import export_step

        return run_step(export_step, params, data_interval_end, audiences=params.get("audiences"))

    @task
    def expire(params=None, data_interval_end=None):
        from microseg.pipeline import expire_step

        return run_step(expire_step, params, data_interval_end)

    @task
    def publish(params=None, data_interval_end=None):
        from microseg.pipeline import publish_step

        return run_step(publish_step, params, data_interval_end)

    scored = score()
    scored >> request_retraining()  # a side branch: the night goes on either way
    # on Spark the layers read raw as Parquet, and DuckDB serves what they built
    build = [export_raw(), dbt_build, serve_spark_build()] if ON_SPARK else [dbt_build]
    chain(
        ingest(),
        validate_raw(),
        *build,
        validate_features(),
        scored,
        cluster(),
        recommend(),
        segments(),
        activate(),
        experiments(),
        export_audiences(),
        expire(),
        publish(),
    )


behavior_nightly()
