"""
### behavior_nightly — events in; segments, scores and audiences out

Daily at 03:00 UTC (`MICROSEG_NIGHTLY_SCHEDULE`).

**Reads** new event files in `$MICROSEG_HOME/landing` (jsonl, jsonl.gz, csv, parquet, Segment
JSON). **Writes** `$MICROSEG_HOME/warehouse.duckdb` (raw, staging, intermediate, marts),
`marts.user_scores`, `marts.person_clusters`, `marts.segment_memberships` (+ history,
summary), audience CSVs in `$MICROSEG_HOME/exports/<as_of>/`, and the analysts' snapshot
`analytics.duckdb`.

Steps: ingest → raw Great Expectations checkpoint → dbt (one task per model, then one task
running every data test) → feature Great Expectations checkpoint → score with each champion
model → behavioral clusters → segments → audience exports → publish.

**Date.** Every task works on `as_of` = the end of the run's data interval (the scheduled run
of 2026-10-15 03:00 builds features, scores and segments as of 2026-10-15, i.e. behavior before
that day). A manual run takes `as_of` from its params; re-running a run or clearing a task
gives the same tables.

**Backfill** a range: `airflow backfill create --dag-id behavior_nightly --from-date 2026-10-02
--to-date 2026-10-15` (or *Trigger DAG → Backfill* in the UI). Runs execute one at a time.

**Failures.** A failed expectation, dbt data test or rejected file fails the task at once (no
retries; the log names the expectation or test and example rows, Data Docs are in
`$MICROSEG_HOME/gx`). Other failures retry twice, a minute apart. Every task uses the one-slot
`warehouse_writer` pool: DuckDB allows one
process on the warehouse at a time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior
from cosmos.operators.local import DbtTestLocalOperator

from microseg.config import Settings
from microseg.orchestration import WRITER_POOL, run_step

SETTINGS = Settings.from_env()


@dag(
    schedule=SETTINGS.nightly_schedule,
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
            description="As-of date (default: the end of the data interval)",
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

    dbt_build = DbtTaskGroup(
        group_id="dbt_build",
        project_config=ProjectConfig(
            dbt_project_path=SETTINGS.dbt_project_dir,
            manifest_path=SETTINGS.dbt_target_dir / "manifest.json",
        ),
        profile_config=ProfileConfig(
            profile_name="microseg",
            target_name="local",
            profiles_yml_filepath=SETTINGS.dbt_project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=str(Path(sys.executable).with_name("dbt")),
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            exclude=["path:models/segments"],  # built by the segments task, per as-of date
            # every data test after all models: a relationships test needs both sides rebuilt
            test_behavior=TestBehavior.AFTER_ALL,
            emit_datasets=False,
        ),
        operator_args={
            "full_refresh": "{{ params.full_refresh }}",
            "vars": {"late_arrival_hours": SETTINGS.late_arrival_hours},
            "install_deps": False,
        },
    )

    # failed dbt data tests are data quality: fail at once, like the GX checkpoints
    for dbt_task in dbt_build.children.values():
        if isinstance(dbt_task, DbtTestLocalOperator):
            dbt_task.retries = 0

    @task
    def validate_features(params=None, data_interval_end=None):
        from microseg.pipeline import validate_features_step

        return run_step(validate_features_step, params, data_interval_end)

    @task
    def score(params=None, data_interval_end=None):
        from microseg.pipeline import score_step

        return run_step(score_step, params, data_interval_end)

    @task
    def cluster(params=None, data_interval_end=None):
        from microseg.pipeline import cluster_step

        return run_step(cluster_step, params, data_interval_end)

    @task
    def segments(params=None, data_interval_end=None):
        from microseg.pipeline import segments_step

        return run_step(segments_step, params, data_interval_end)

    @task
    def export_audiences(params=None, data_interval_end=None):
        from microseg.pipeline import export_step

        return run_step(export_step, params, data_interval_end, audiences=params.get("audiences"))

    @task
    def publish(params=None, data_interval_end=None):
        from microseg.pipeline import publish_step

        return run_step(publish_step, params, data_interval_end)

    (
        ingest()
        >> validate_raw()
        >> dbt_build
        >> validate_features()
        >> score()
        >> cluster()
        >> segments()
        >> export_audiences()
        >> publish()
    )


behavior_nightly()
