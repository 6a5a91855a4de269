"""The DAG files as Airflow's DagBag parses them: no import errors, docs, owners, retries, the
writer pool, the step order, and parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from microseg.config import PROJECT_ROOT, Settings

PARSE_SECONDS_MAX = 10  # per file, on this 2-core machine (Cosmos reads the dbt manifest)


@pytest.fixture(scope="module")
def report(built: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    airflow_home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MICROSEG_HOME": str(built.home),  # its dbt manifest is what Cosmos renders
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


def test_dags_import_without_errors(report: dict) -> None:
    assert report["import_errors"] == {}
    assert set(report["dags"]) == {"behavior_nightly", "models_weekly"}


def test_dags_parse_fast(report: dict) -> None:
    assert set(report["parse_seconds"]) == {"behavior_nightly.py", "models_weekly.py"}
    for name, seconds in report["parse_seconds"].items():
        assert seconds < PARSE_SECONDS_MAX, (name, seconds)


def test_every_task_has_an_owner_retries_and_the_writer_pool(report: dict) -> None:
    """Data-quality tasks (dbt's data tests) fail at once; every other task retries."""
    for dag_id, dag in report["dags"].items():
        assert "microseg" in dag["tags"], dag_id
        assert "Reads" in dag["doc_md"] and "Writes" in dag["doc_md"], dag_id
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
        for task_id, task in dag["tasks"].items():
            assert task["owner"] == "data-team", task_id
            if task_id == "dbt_build.dbt_project_test":
                assert task["retries"] == 0, task_id
            else:
                assert task["retries"] >= 1, task_id
            assert task["pool"] == "warehouse_writer", task_id


def test_nightly_runs_the_steps_in_order_with_one_dbt_task_per_model(report: dict) -> None:
    dag = report["dags"]["behavior_nightly"]
    models = sorted(t for t in dag["tasks"] if t.startswith("dbt_build.") and t.endswith("_run"))
    assert len(models) == 15  # staging, intermediate and marts; segments are their own step
    assert not any("segment" in t for t in models)
    # every data test runs once all models are built (a relationships test needs both sides)
    assert {e[0] for e in dag["edges"] if e[1] == "dbt_build.dbt_project_test"} == {
        "dbt_build.dim_persons_run",
        "dbt_build.fct_person_category_daily_run",
        "dbt_build.fct_user_features_daily_run",
        "dbt_build.int_late_events_run",
    }
    edges = {tuple(e) for e in dag["edges"]}
    assert ("ingest", "validate_raw") in edges
    assert ("validate_raw", "dbt_build.stg_events_run") in edges
    assert ("dbt_build.dbt_project_test", "validate_features") in edges
    for step, following in [
        ("validate_features", "score"),
        ("score", "cluster"),
        ("cluster", "segments"),
        ("segments", "export_audiences"),
        ("export_audiences", "publish"),
    ]:
        assert (step, following) in edges
    assert "backfill create" in dag["doc_md"]


def test_weekly_trains_then_promotes_each_spec(report: dict) -> None:
    dag = report["dags"]["models_weekly"]
    specs = sorted(p.stem for p in (PROJECT_ROOT / "ml/specs").glob("*.yaml"))
    for spec in specs:
        assert [f"train_{spec}", f"promote_{spec}"] in dag["edges"]
