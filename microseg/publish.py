"""`microseg publish`: the analysts' read-only snapshot, replaced atomically.

DuckDB lets one process write a file and nobody read it meanwhile, so analysts never open the
working warehouse. They open analytics.duckdb, which this step writes aside (a new file next to
it), checkpoints, makes read-only and then renames over the old one: a reader holding the old
file keeps reading the old snapshot, the next connection gets the new one, and nobody ever sees
half of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from microseg.config import Settings
from microseg.errors import MicrosegError, UsageError
from microseg.warehouse import apply_limits, in_use_error, require_warehouse

# What analysts get: every mart, and what happened to the input files.
PUBLISHED_RAW_TABLES = ("load_manifest", "events_quarantine")
# Columns analysts never get: a quarantined line's raw text can hold anything a tracker sent
# (emails, IPs); the file, line and reason say what went wrong without it.
UNPUBLISHED_COLUMNS = {"raw.events_quarantine": ("raw_text",)}
# Views left out: the models' labels, recomputed on each read (a horizon per feature window,
# the longest a 90-day range join per person and date); the snapshot's features and category
# days hold what they derive.
UNPUBLISHED_VIEWS = ("person_outcomes", "person_category_outcomes")


def _published_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    marts = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_catalog = 'warehouse' and table_schema = 'marts' "
        "and table_type in ('BASE TABLE', 'VIEW') and table_name not in ? order by table_name",
        [list(UNPUBLISHED_VIEWS)],
    ).fetchall()
    return [*marts, *(("raw", name) for name in PUBLISHED_RAW_TABLES)]


def publish(settings: Settings) -> dict[str, int]:
    """Write a fresh snapshot of the marts beside analytics.duckdb, then swap it in."""
    warehouse = require_warehouse(settings)
    target: Path = settings.analytics_path
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    try:
        with duckdb.connect(str(staging)) as con:
            con.execute("set TimeZone = 'UTC'")
            apply_limits(con, settings)
            # the snapshot file is the writable database; the warehouse is only read
            try:
                # as `warehouse`: the name dbt's views use for it (a view is published as the
                # table it reads as at the moment of the snapshot)
                con.execute(f"attach '{warehouse}' as warehouse (read_only)")
            except duckdb.IOException as exc:
                error = in_use_error(warehouse, exc)
                if error:
                    raise error from None
                raise
            tables = _published_tables(con)
            if len(tables) == len(PUBLISHED_RAW_TABLES):
                raise MicrosegError("no marts to publish: run `microseg transform` first")
            for schema in sorted({schema for schema, _ in tables}):
                con.execute(f"create schema {schema}")
            for schema, table in tables:
                hidden = UNPUBLISHED_COLUMNS.get(f"{schema}.{table}")
                columns = f"* exclude ({', '.join(hidden)})" if hidden else "*"
                con.execute(
                    f"create table {schema}.{table} as "
                    f"select {columns} from warehouse.{schema}.{table}"
                )
                counts[f"{schema}.{table}"] = con.execute(
                    f"select count(*) from {schema}.{table}"
                ).fetchone()[0]
            for name, parameters, body in con.execute(
                "select function_name, parameters, macro_definition from duckdb_functions() "
                "where database_name = 'warehouse' and schema_name = 'marts' "
                "and function_type = 'macro'"
            ).fetchall():  # the marts' macros (marts.has_consent) work in the snapshot too
                con.execute(f"create macro marts.{name}({', '.join(parameters)}) as {body}")
            con.execute("detach warehouse")
            con.execute("checkpoint")
        with staging.open("rb") as handle:
            os.fsync(handle.fileno())
        # read-only on disk: a client that opens it read-write by mistake (DBeaver's and the
        # DuckDB CLI's default) gets "Permission denied" instead of taking DuckDB's exclusive
        # lock and locking every other analyst out until the next publish
        staging.chmod(0o440 if settings.group_read else 0o400)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return counts


def require_snapshot(settings: Settings) -> Path:
    """The analysts' snapshot file; a one-line error says what to run when there is none."""
    if not settings.analytics_path.exists():
        raise UsageError(
            f"no analysts' snapshot at {settings.analytics_path}: run `microseg publish`"
        )
    return settings.analytics_path


def open_snapshot(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The analysts' snapshot, read-only (what the notebooks read; it works while a night
    runs)."""
    return duckdb.connect(str(require_snapshot(settings)), read_only=True)
