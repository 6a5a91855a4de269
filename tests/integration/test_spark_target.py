"""The Spark target for real: the same raw events built by dbt-spark (session method, PySpark
in local mode on Java 17) from the raw layer exported as Parquet, and by dbt-duckdb, each
fully on a first night and incrementally on a second. Spark's tables, served to DuckDB, equal
DuckDB's own row for row (doubles compared rounded to
SPARK_DOUBLE_DECIMALS: Spark sums floats in another order); segments and audience exports then
run on either warehouse and write the same."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from microseg.config import Settings
from microseg.export import export_audiences
from microseg.ingest import ingest_paths
from microseg.segments import run_segments
from microseg.transform import transform
from tests.helpers import query, warehouse_differences

pytestmark = pytest.mark.slow

SPARK_DOUBLE_DECIMALS = 6
NIGHT = date(2026, 10, 6)  # the night after small_dataset's last day


def test_spark_builds_what_duckdb_builds_and_the_steps_after_it_act_alike(
    small_dataset: Path, tmp_path: Path
) -> None:
    homes = {engine: tmp_path / engine for engine in ("duckdb", "spark")}
    duckdb, spark = (
        Settings.from_env({"MICROSEG_HOME": str(home), "MICROSEG_ENGINE": engine})
        for engine, home in homes.items()
    )
    dumps = sorted(small_dataset.glob("events_*.jsonl.gz"))
    counts = {}
    for night in (dumps[:-1], dumps[-1:]):  # a full build, then an incremental one
        for settings in (duckdb, spark):
            ingest_paths(settings, night)
            counts[settings.engine] = transform(settings)
    assert counts["spark"] == counts["duckdb"] and counts["duckdb"]["sessions"] > 500
    # the second night's Spark build was incremental: it rewrote some events, not all
    batches = "select batch, count(*) from intermediate.int_events_stitched group by 1 order by 1"
    assert [batch for batch, _ in query(spark, batches)] == [1, 2]
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
