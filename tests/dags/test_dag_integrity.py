"""The DAG files as Airflow's DagBag parses them: no import errors, docs, owners, retries, the
writer pool, the step order, and parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from microseg.config import PROJECT_ROOT

PARSE_SECONDS_MAX = 10  # per file, on this 2-core machine


def _parse(tmp_path_factory: pytest.TempPathFactory, engine: str) -> dict:
    """The DAGs as they parse before anything was ever loaded (a fresh MICROSEG_HOME)."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow_home")),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MICROSEG_HOME": str(tmp_path_factory.mktemp("empty_home")),
        "MICROSEG_ENGINE": engine,
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("inspect_dags.py")),
            str(PROJECT_ROOT / "dags"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _parse(tmp_path_factory, "duckdb")


def test_dags_import_without_errors(report: dict) -> None:
    assert report["import_errors"] == {}
    assert set(report["dags"]) == {"activation", "behavior_nightly", "models_weekly"}


def test_dags_parse_fast(report: dict) -> None:
    assert set(report["parse_seconds"]) == {
        "activation.py",
        "behavior_nightly.py",
        "models_weekly.py",
    }
    for name, seconds in report["parse_seconds"].items():
        assert seconds < PARSE_SECONDS_MAX, (name, seconds)


def test_every_task_has_an_owner_retries_and_the_writer_pool(report: dict) -> None:
    """Every task retries (data-quality failures raise AirflowFailException, which skips
    the retries) and writes through the one-slot pool; runs go one at a time."""
    for dag_id, dag in report["dags"].items():
        assert "microseg" in dag["tags"], dag_id
        assert "Reads" in dag["doc_md"] and "Writes" in dag["doc_md"], dag_id
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
        for task_id, task in dag["tasks"].items():
            assert task["owner"] == "data-team", task_id
            assert task["retries"] >= 1, task_id
            assert task["pool"] == "warehouse_writer", task_id


def test_nightly_is_a_daily_0300_utc_cron_trigger(report: dict) -> None:
    """A cron trigger: the run's logical date is its trigger time, so a backfill window and
    the as-of dates line up (the e2e test backfills it)."""
    timetable = report["dags"]["behavior_nightly"]["timetable"]
    assert timetable == {
        "kind": "CronTriggerTimetable",
        "expression": "0 3 * * *",
        "timezone": "UTC",
        "assets": [],
    }


def test_nightly_runs_the_steps_in_order_with_one_dbt_build_per_layer(report: dict) -> None:
    dag = report["dags"]["behavior_nightly"]
    dbt_tasks = sorted(t for t in dag["tasks"] if t.startswith("dbt_build."))
    assert dbt_tasks == ["dbt_build.events", "dbt_build.person_days", "dbt_build.sessions"]
    for task_id in dbt_tasks:  # segments are built by their own step, for one as-of date
        assert dag["tasks"][task_id]["command"].startswith(
            f"build --selector {task_id.split('.')[1]} "
        )
        assert dag["tasks"][task_id]["dbt_target"] == "duckdb"
    assert not {"export_raw", "serve_spark_build"} & set(dag["tasks"])
    edges = {tuple(e) for e in dag["edges"]}
    for step, following in [
        ("ingest", "validate_raw"),
        ("validate_raw", "dbt_build.events"),
        ("dbt_build.events", "dbt_build.sessions"),
        ("dbt_build.sessions", "dbt_build.person_days"),
        ("dbt_build.person_days", "validate_features"),
        ("validate_features", "score"),
        ("score", "cluster"),
        ("cluster", "recommend"),
        ("recommend", "segments"),
        ("segments", "activate"),
        ("activate", "experiments"),
        ("experiments", "export_audiences"),
        ("export_audiences", "expire"),
        ("expire", "publish"),
    ]:
        assert (step, following) in edges
    assert "backfill create" in dag["doc_md"]
    # beside the night, not in its way: nothing waits for request_retraining
    assert ("score", "request_retraining") in edges
    assert not [e for e in edges if e[0] == "request_retraining"]


def test_on_spark_the_layers_build_there_between_the_raw_export_and_serving(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dag = _parse(tmp_path_factory, "spark")["dags"]["behavior_nightly"]
    edges = {tuple(e) for e in dag["edges"]}
    for step, following in [
        ("validate_raw", "export_raw"),
        ("export_raw", "dbt_build.events"),
        ("dbt_build.person_days", "serve_spark_build"),
        ("serve_spark_build", "validate_features"),
    ]:
        assert (step, following) in edges
    assert ("validate_raw", "dbt_build.events") not in edges
    layers = [task for task_id, task in dag["tasks"].items() if task_id.startswith("dbt_build.")]
    assert [task["dbt_target"] for task in layers] == ["spark"] * 3


def test_drift_past_retrain_psi_starts_the_weekly_training(report: dict) -> None:
    """The nightly's request_retraining updates the model-drift asset; models_weekly runs on
    its Sunday cron or on that asset, whichever comes first."""
    nightly, weekly = report["dags"]["behavior_nightly"], report["dags"]["models_weekly"]
    drift = "microseg://model-drift/"  # as Airflow normalizes it
    assert nightly["tasks"]["request_retraining"]["outlets"] == [drift]
    assert nightly["tasks"]["request_retraining"]["trigger_rule"] == "all_done"
    assert [t for t, task in nightly["tasks"].items() if task["outlets"]] == ["request_retraining"]
    assert weekly["timetable"] == {
        "kind": "AssetOrTimeSchedule",
        "expression": "0 5 * * 0",
        "timezone": "UTC",
        "assets": [drift],
    }


def test_activation_runs_every_15_minutes_and_fires_even_when_nothing_landed(report) -> None:
    dag = report["dags"]["activation"]
    assert dag["timetable"] == {
        "kind": "CronTriggerTimetable",
        "expression": "*/15 * * * *",
        "timezone": "UTC",
        "assets": [],
    }
    assert dag["edges"] == [["ingest_landed", "transform"], ["transform", "activate"]]
    # a skipped ingest (nothing new) skips the model update, not the triggers
    assert dag["tasks"]["activate"]["trigger_rule"] == "none_failed"
    assert dag["tasks"]["transform"]["trigger_rule"] == "all_success"


def test_weekly_trains_then_promotes_each_spec(report: dict) -> None:
    dag = report["dags"]["models_weekly"]
    specs = sorted(p.stem for p in (PROJECT_ROOT / "ml/specs").glob("*.yaml"))
    for spec in specs:
        assert [f"train_{spec}", f"promote_{spec}"] in dag["edges"]
