"""The Spark target for real: the same raw events built by dbt-spark (session method, PySpark
in local mode on Java 17) from the raw layer exported as Parquet, and by dbt-duckdb, each
fully on a first night and incrementally on a second. Spark's tables, served to DuckDB, equal
DuckDB's own row for row (doubles compared rounded to
SPARK_DOUBLE_DECIMALS: Spark sums floats in another order); segments and audience exports then
run on either warehouse and write the same."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from microseg.config import PROJECT_ROOT, Settings
from microseg.export import export_audiences
from microseg.ingest import ingest_paths
from microseg.orchestration import WRITER_POOL
from microseg.pipeline import ingest_step
from microseg.segments import run_segments
from microseg.transform import run_dbt, transform
from tests.helpers import query, warehouse_differences

pytestmark = pytest.mark.slow

SPARK_DOUBLE_DECIMALS = 6
NIGHT = date(2026, 10, 6)  # the night after small_dataset's last day
# the nightly DAG's tasks up to the Spark build and its serving; the test runs what follows
# itself on both warehouses, and every other task is marked successful without running
THROUGH_THE_BUILD = r"ingest|validate_raw|export_raw|dbt_build\..+|serve_spark_build"


def test_spark_builds_what_duckdb_builds_and_the_steps_after_it_act_alike(
    small_dataset: Path, tmp_path: Path
) -> None:
    homes = {engine: tmp_path / engine for engine in ("duckdb", "spark")}
    duckdb, spark = (
        Settings.from_env({"MICROSEG_HOME": str(home), "MICROSEG_ENGINE": engine})
        for engine, home in homes.items()
    )
    *first_nights, last_night = sorted(small_dataset.glob("events_*.jsonl.gz"))
    counts = {}
    for settings in (duckdb, spark):  # a full build
        ingest_paths(settings, first_nights)
        counts[settings.engine] = transform(settings)
    assert counts["spark"] == counts["duckdb"] and counts["duckdb"]["sessions"] > 400
    # then an incremental one, from the landing folder: DuckDB's by the night's steps called
    # here, Spark's by the nightly DAG's tasks
    for settings in (duckdb, spark):
        settings.landing_dir.mkdir()
        shutil.copy(last_night, settings.landing_dir)
    ingest_step(duckdb, NIGHT)
    transform(duckdb)
    _airflow_night(spark, tmp_path / "airflow", NIGHT)
    # it rewrote some events, not all: the night is batch 1, the full build numbered its rows
    # by day (0 for the latest, below 0 the days before it)
    batches = "select distinct batch from intermediate.int_events_stitched order by 1"
    numbers = [batch for (batch,) in query(spark, batches)]
    assert numbers[0] < 0 and numbers[-2:] == [0, 1]
    wrote = {path.name for path in (spark.spark_dir / "warehouse" / "marts.db").iterdir()}
    assert {"dim_persons", "fct_sessions", "fct_user_features_daily", "consent_periods"} <= wrote
    assert warehouse_differences(spark, duckdb, doubles=SPARK_DOUBLE_DECIMALS) == {}
    # served as DuckDB's models have them: naive UTC, whatever the reader's time zone
    served_types = (
        "select distinct data_type from information_schema.columns "
        "where table_schema in ('staging', 'intermediate', 'marts') and data_type like 'TIME%'"
    )
    assert query(spark, served_types) == [("TIMESTAMP",)]

    exports = {}
    for settings in (duckdb, spark):
        run_segments(settings, NIGHT)
        written = export_audiences(settings, NIGHT)
        exports[settings.engine] = {result.path.name: result.path.read_text() for result in written}
    assert exports["spark"] == exports["duckdb"]
    assert sum(len(text.splitlines()) - 1 for text in exports["duckdb"].values()) > 10
    assert warehouse_differences(spark, duckdb, doubles=SPARK_DOUBLE_DECIMALS) == {}

    # back to DuckDB on the warehouse Spark built: a full build (DuckDB's incremental models
    # would refuse the column types of Spark's tables), the same as a full refresh of DuckDB's
    back = Settings.from_env({"MICROSEG_HOME": str(spark.home), "MICROSEG_ENGINE": "duckdb"})
    assert transform(back) == transform(duckdb, full_refresh=True)
    numbers = [batch for (batch,) in query(back, batches)]
    assert numbers[0] < 0 and numbers[-1] == 0
    assert warehouse_differences(back, duckdb, doubles=SPARK_DOUBLE_DECIMALS) == {}


def test_a_day_range_ending_before_it_starts_has_no_days_on_either_engine(tmp_path: Path) -> None:
    """each_day (macros/cross_db.sql) on both: an incremental night may ask for the days from
    a person's restart to the last as-of date when there are none (Spark's sequence fails)."""
    ranges = (
        "select date '2026-10-01' as first_day, date '2026-10-02' as last_day "
        "union all select date '2026-10-02', date '2026-10-01'"
    )
    sql = (
        f"select count(*) as days from ({ranges}) as bounds "
        "{{ each_day('bounds.first_day', 'bounds.last_day', 'day') }}"
    )
    for engine in ("duckdb", "spark"):
        settings = Settings.from_env(
            {"MICROSEG_HOME": str(tmp_path / engine), "MICROSEG_ENGINE": engine}
        )
        lines = run_dbt(settings, "show", "--inline", sql, "--output", "json", engine=engine)
        start = next(i for i, line in enumerate(lines) if line.strip() == '"show": [') - 1
        shown, _ = json.JSONDecoder().raw_decode("\n".join(lines[start:]))
        assert shown["show"] == [{"days": 2}], engine


def _airflow_night(settings: Settings, airflow_home: Path, as_of: date) -> None:
    """Run behavior_nightly for `as_of` with `airflow dags test` on a SQLite metadata database
    (ingest, the raw checkpoint, the raw export, the dbt layers through Cosmos, serving) and
    check that the run succeeded."""
    env = {
        **os.environ,
        "MICROSEG_HOME": str(settings.home),
        "MICROSEG_ENGINE": settings.engine,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DO_NOT_TRACK": "1",
    }
    airflow = str(Path(sys.executable).with_name("airflow"))

    def run(*command: str) -> str:
        done = subprocess.run(
            [airflow, *command], env=env, capture_output=True, text=True, timeout=1200
        )
        output = airflow_home / "airflow_output.log"  # whole: a failed task's log is long
        output.write_text(done.stdout + done.stderr, "utf-8")
        assert done.returncode == 0, f"{(done.stdout + done.stderr)[-3000:]} (whole: {output})"
        return done.stdout

    run("db", "migrate")
    run("pools", "set", WRITER_POOL, "1", "the warehouse")
    log = run(
        "dags",
        "test",
        "behavior_nightly",
        "--conf",
        json.dumps({"as_of": as_of.isoformat()}),
        "--mark-success-pattern",
        f"^(?!({THROUGH_THE_BUILD})$).*",
    )
    runs = run("dags", "list-runs", "behavior_nightly", "--output", "json")
    [night] = json.loads(runs.strip().splitlines()[-1])
    assert night["state"] == "success", log[-3000:]
