"""DuckDB access: one place that opens the warehouse and owns the raw-layer DDL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb

from microseg.config import Settings
from microseg.contract import event_contract
from microseg.errors import MicrosegError


def _raw_ddl() -> list[str]:
    """raw.* tables. raw.events columns come from the event contract, plus lineage."""
    columns = ",\n    ".join(f"{f.name} {f.sql_type}" for f in event_contract().fields)
    return [
        "create schema if not exists raw",
        f"""create table if not exists raw.events (
    {columns},
    source_file varchar not null,
    source_line bigint not null
)""",
        """create table if not exists raw.events_quarantine (
    source_file varchar not null,
    source_line bigint not null,
    reason varchar not null,
    raw_text varchar
)""",
        """create table if not exists raw.load_manifest (
    file_name varchar primary key,
    file_path varchar not null,
    file_format varchar,
    content_sha256 varchar not null,
    file_bytes bigint not null,
    status varchar not null,
    error varchar,
    rows_read bigint not null,
    rows_loaded bigint not null,
    rows_duplicate bigint not null,
    rows_quarantined bigint not null,
    loaded_at timestamp not null
)""",
    ]


def require_warehouse(settings: Settings) -> Path:
    """The warehouse path, or a one-line error when nothing has been ingested yet."""
    path = settings.warehouse_path
    if not path.exists():
        raise MicrosegError(f"no warehouse at {path}: run `microseg ingest` first")
    return path


def in_use_error(path: Path, exc: duckdb.IOException) -> MicrosegError | None:
    """DuckDB's lock conflict as a one-line error saying who to wait for (None: not a lock)."""
    if "lock" not in str(exc).lower():
        return None
    return MicrosegError(
        f"warehouse {path} is in use by another process (DuckDB allows one writer); "
        "retry when it finishes, or query analytics.duckdb instead"
    )


@contextmanager
def connect(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the working warehouse with UTC session time; create the raw layer if missing."""
    path = require_warehouse(settings) if read_only else settings.warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        error = in_use_error(path, exc)
        if error:
            raise error from None
        raise
    try:
        con.execute("set TimeZone = 'UTC'")
        if not read_only:
            for statement in _raw_ddl():
                con.execute(statement)
        yield con
    finally:
        con.close()


def has_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether schema.table exists (marts written by later steps may not exist yet)."""
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def latest_as_of(settings: Settings) -> date:
    """The newest as-of date with features: the default date of scoring, clusters, segments."""
    with connect(settings, read_only=True) as con:
        try:
            (latest,) = con.execute(
                "select max(as_of_date) from marts.fct_user_features_daily"
            ).fetchone()
        except duckdb.CatalogException:
            raise MicrosegError("no features yet: run `microseg transform` first") from None
    if latest is None:
        raise MicrosegError("marts.fct_user_features_daily is empty: no as-of date yet")
    return latest
