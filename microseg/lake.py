"""The warehouse as Parquet files, for the Spark target (MICROSEG_ENGINE=spark).

Ingest keeps loading DuckDB's raw layer, where the contract checks, the load manifest and
erasure live. Before each build on Spark, every raw table is written to
$MICROSEG_HOME/spark/raw/<table>/ (events sorted by event time, so Parquet's row-group
statistics prune by date) and replaces the previous export whole: Spark reads exactly what raw
holds now, erasures included. Spark writes its tables as Parquet under spark/warehouse.

Spark builds; DuckDB serves. After the build, serve_spark_build copies the tables Spark wrote
into the DuckDB warehouse in place of DuckDB's own, so the steps after dbt (segments, scores,
clusters, triggers, experiments, exports, erasure, publish) act on the last build whichever
engine made it. They work at the grain of people and days, which one machine carries long
after the events it takes Spark to turn into them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from microseg.config import DBT_PROJECT_DIR, Settings, load_yaml
from microseg.errors import ConfigError
from microseg.ingest.sqltext import quote
from microseg.warehouse import connect

EXPORT_FILE_BYTES = "256MB"  # one Parquet file per this much data: Spark reads them in parallel


def raw_sources() -> list[str]:
    """The raw tables dbt reads (source `raw` in models/staging/_sources.yml, which the Spark
    build declares over the export); the quarantine's raw lines stay in DuckDB."""
    sources = load_yaml((DBT_PROJECT_DIR / "models" / "staging" / "_sources.yml").read_text())
    [raw] = [source for source in sources["sources"] if source["name"] == "raw"]
    return [table["name"] for table in raw["tables"]]


def raw_dir(settings: Settings) -> Path:
    """Where the raw export goes (lake.sql's register_raw_tables reads it there)."""
    return settings.spark_dir / "raw"


def require_java() -> None:
    """PySpark starts a JVM: say what is missing instead of dbt's Java gateway traceback."""
    if shutil.which("java") is None:
        raise ConfigError(
            "MICROSEG_ENGINE=spark needs Java 17 for PySpark (Debian: apt-get install "
            "openjdk-17-jre-headless; `make demo` and `make test` install it)"
        )


def export_raw(settings: Settings) -> dict[str, int]:
    """Write every raw table to Parquet; returns the rows written per table."""
    written = {}
    root = raw_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with connect(settings, read_only=True) as con:
        tables = con.execute(
            "select table_name, list(column_name) from information_schema.columns "
            "where table_schema = 'raw' and list_contains(?, table_name) group by all order by 1",
            [raw_sources()],
        ).fetchall()
        for table, columns in tables:
            staged, final = root / f".{table}.new", root / table
            shutil.rmtree(staged, ignore_errors=True)
            order = " order by event_at, event_id" if "event_at" in columns else ""
            con.execute(
                f"copy (select * from raw.{table}{order}) to {quote(str(staged))} "
                f"(format parquet, file_size_bytes '{EXPORT_FILE_BYTES}')"
            )
            written[table] = con.execute(f"select count(*) from raw.{table}").fetchone()[0]
            shutil.rmtree(final, ignore_errors=True)
            staged.rename(final)
    return written


def forget_spark_copies(settings: Settings) -> int:
    """Delete the Spark target's files (the raw export, its tables and catalog): copies of raw
    that the next Spark build makes whole again. Erasure and retention call this so that no
    copy outlives what they delete; returns how many files went."""
    if not settings.spark_dir.exists():
        return 0
    files = sum(1 for path in settings.spark_dir.rglob("*") if path.is_file())
    shutil.rmtree(settings.spark_dir)
    return files


BUILT_SCHEMAS = ("staging", "intermediate", "marts")  # what transform builds (not raw)


def spark_tables(settings: Settings) -> dict[str, Path]:
    """The tables the Spark build wrote (schema.table -> folder). A model's table always has a
    Parquet file, an empty one included; a folder without one is a table a hook declared and
    nothing wrote (marts.person_merges: DuckDB keeps its own, see serve_spark_build)."""
    root = settings.spark_dir / "warehouse"
    return {
        f"{schema}.{folder.name}": folder
        for schema in BUILT_SCHEMAS
        for folder in sorted((root / f"{schema}.db").glob("*"))
        if any(folder.glob("*.parquet"))
    }


def serve_spark_build(settings: Settings) -> None:
    """Replace DuckDB's staging, intermediate and marts tables by the ones Spark built, in one
    transaction. Spark's Parquet holds timestamps as UTC instants, DuckDB's
    models naive UTC: those columns are converted, nothing else is."""
    tables = spark_tables(settings)
    with connect(settings) as con:
        con.execute("begin")
        for table, folder in tables.items():
            files = f"read_parquet({quote(str(folder / '*.parquet'))})"
            columns = ", ".join(
                f'timezone(\'UTC\', "{name}") as "{name}"'
                if data_type == "TIMESTAMP WITH TIME ZONE"
                else f'"{name}"'
                for name, data_type, *_ in con.execute(f"describe select * from {files}").fetchall()
            )
            con.execute(f"create schema if not exists {table.split('.')[0]}")
            con.execute(f"create or replace table {table} as select {columns} from {files}")
        con.execute("commit")
