"""DuckDB access: one place that opens the warehouse and owns the raw-layer DDL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path

import duckdb

from microseg.config import Settings
from microseg.contract import event_contract
from microseg.errors import MicrosegError, UsageError, WarehouseBusyError

# The storage format of a warehouse this project creates: the installed DuckDB's newest, kept
# in the file, so every later writer (dbt too) uses it. Inserting events took about a quarter
# less time than in DuckDB's default (a format DuckDB 0.10 can still read), a full build 7%
# less; the analysts' snapshot keeps that default so that their older tools open it.
STORAGE_VERSION = "latest"

# One row per file the manifest says is loaded, or that has rows in raw.events without such a
# manifest row (a load replayed from DuckDB's WAL after a kill can leave exactly that): the
# counts the manifest recorded are compared with the rows the raw tables actually hold.
FILE_ACCOUNTING_SQL = """
with
loaded as (select * from raw.load_manifest where status = 'loaded'),
events as (select source_file as file_name, count(*) as rows from raw.events group by all),
quarantined as (
    select source_file as file_name, count(*) as rows from raw.events_quarantine group by all
)
select
    coalesce(loaded.file_name, events.file_name, quarantined.file_name) as file_name,
    coalesce(loaded.rows_read, 0) as rows_read,
    coalesce(loaded.rows_quarantined, 0) / greatest(coalesce(loaded.rows_read, 0), 1)
        as quarantine_rate,
    loaded.rows_read - loaded.rows_loaded - loaded.rows_duplicate - loaded.rows_quarantined
        - coalesce(loaded.rows_erased, 0) - coalesce(loaded.rows_expired, 0)
        - coalesce(loaded.rows_unused, 0) as rows_unaccounted,
    coalesce(events.rows, 0) - coalesce(loaded.rows_loaded, 0) as events_not_in_manifest,
    coalesce(quarantined.rows, 0) - coalesce(loaded.rows_quarantined, 0)
        as quarantine_rows_not_in_manifest
from loaded
full join events using (file_name)
full join quarantined using (file_name)
"""


def _raw_ddl() -> list[str]:
    """raw.* tables. raw.events columns come from the event contract, plus lineage."""
    columns = ",\n    ".join(event_contract().column_definitions)
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
        """create table if not exists raw.event_taxonomy (
    field varchar not null,
    received_value varchar,
    canonical_value varchar not null
)""",
        "create table if not exists raw.nights (as_of_date date primary key)",
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
    loaded_at timestamp not null,
    rows_erased bigint not null default 0,
    rows_expired bigint not null default 0,
    delivered_sha256 varchar,  -- as delivered: content_sha256 follows erasure's rewrites
    rows_unused bigint not null default 0  -- the source's events that are no behavior here
)""",
        # manifests from before erasure and retention: rows they removed stay counted
        "alter table raw.load_manifest add column if not exists rows_erased bigint default 0",
        "alter table raw.load_manifest add column if not exists rows_expired bigint default 0",
        "alter table raw.load_manifest add column if not exists delivered_sha256 varchar",
        "alter table raw.load_manifest add column if not exists rows_unused bigint default 0",
        # privacy/retention.py: one row per night that expired rows. dbt reads the newest
        # events_before: facts dated before it are final (full refreshes are refused)
        """create table if not exists raw.retention_runs (
    as_of_date date primary key,
    events_before date,  -- null: raw retention off (quarantine only)
    events_expired bigint not null,
    unbuilt_events_expired bigint not null,
    quarantined_expired bigint not null,
    landing_files_deleted bigint not null,
    expired_at timestamp not null
)""",
    ]


def require_warehouse(settings: Settings) -> Path:
    """The warehouse path, or a one-line error when nothing has been ingested yet."""
    path = settings.warehouse_path
    if not path.exists():
        raise MicrosegError(f"no warehouse at {path}: run `microseg ingest` first")
    return path


def warehouse_busy_error(path: Path) -> WarehouseBusyError:
    """DuckDB's lock conflict as one line saying what to do."""
    return WarehouseBusyError(
        f"warehouse {path} is in use by another process (DuckDB allows one writer); "
        "retry when it finishes, or query analytics.duckdb instead"
    )


def in_use_error(path: Path, exc: duckdb.IOException) -> MicrosegError | None:
    """The busy error when `exc` is DuckDB's lock conflict (None: some other I/O error)."""
    return warehouse_busy_error(path) if "lock" in str(exc).lower() else None


def create_database(path: Path) -> None:
    """An empty DuckDB file in STORAGE_VERSION, closed: opened later like any other file, since
    a connection opened under a config refuses this process any other connection to it."""
    duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_VERSION}).close()


@contextmanager
def connect(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the working warehouse with UTC session time and the settings' memory limit,
    threads and spill folder; create the raw layer if missing."""
    path = require_warehouse(settings) if read_only else settings.warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not path.exists():
            create_database(path)
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        error = in_use_error(path, exc)
        if error:
            raise error from None
        raise
    try:
        con.execute("set TimeZone = 'UTC'")
        apply_limits(con, settings)
        if not read_only:
            for statement in _raw_ddl():
                con.execute(statement)
            _sync_taxonomy(con)
        yield con
    finally:
        con.close()


def apply_limits(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """The settings' memory limit, threads and spill folder. Set after opening rather than as
    the open's config: DuckDB refuses a second connection to a file this process holds open
    under another config. A spill folder already in use by this process stays."""
    if settings.duckdb_memory_limit:
        con.execute("set memory_limit = ?", [settings.duckdb_memory_limit])
    con.execute("set threads = ?", [settings.duckdb_threads])
    spill = str(settings.duckdb_temp_dir)
    if con.execute("select current_setting('temp_directory')").fetchone()[0] != spill:
        with suppress(duckdb.NotImplementedException):
            con.execute("set temp_directory = ?", [spill])


def _sync_taxonomy(con: duckdb.DuckDBPyConnection) -> None:
    """raw.event_taxonomy holds the event schema's closed value sets (contract.taxonomy_rows),
    which dbt's staging maps and tests against; rewritten only when the schema changed."""
    wanted = sorted(event_contract().taxonomy_rows(), key=repr)
    held = con.execute("select * from raw.event_taxonomy").fetchall()
    if sorted(held, key=repr) == wanted:
        return
    con.execute("begin transaction")
    con.execute("delete from raw.event_taxonomy")
    con.executemany("insert into raw.event_taxonomy values (?, ?, ?)", wanted)
    con.execute("commit")


def ensure_raw_layer(settings: Settings) -> None:
    """Create the raw tables this version reads if the warehouse predates them (a write
    connection only when one is missing: readers in the same process keep working)."""
    with connect(settings, read_only=True) as con:
        present = {
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables where table_schema = 'raw'"
            ).fetchall()
        }
    created = {re.search(r"raw\.(\w+)", ddl).group(1) for ddl in _raw_ddl() if "table" in ddl}
    if present >= created:
        return
    with connect(settings):
        pass


def has_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether schema.table exists (marts written by later steps may not exist yet)."""
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def feature_dates(settings: Settings) -> tuple[date, date]:
    """The first and the newest as-of date with features."""
    with connect(settings, read_only=True) as con:
        try:
            first, latest = con.execute(
                "select min(as_of_date), max(as_of_date) from marts.fct_user_features_daily"
            ).fetchone()
        except duckdb.CatalogException:
            raise MicrosegError("no features yet: run `microseg transform` first") from None
    if latest is None:
        raise MicrosegError("marts.fct_user_features_daily is empty: no as-of date yet")
    return first, latest


def latest_as_of(settings: Settings) -> date:
    """The newest as-of date with features: the default date of scoring, clusters, segments."""
    return feature_dates(settings)[1]


def features_as_of(settings: Settings, as_of: date | None) -> date:
    """`as_of` if features exist for it (default: the newest). A date outside them is an error
    naming the dates there are: a typo or "tomorrow" must not evaluate to empty audiences."""
    first, latest = feature_dates(settings)
    if as_of is None:
        return latest
    if as_of > latest:
        raise UsageError(
            f"no features for {as_of}: the newest as-of date is {latest} "
            f"(run the night of {as_of} first: `microseg run --as-of {as_of}`)"
        )
    if as_of < first:
        raise UsageError(f"no features for {as_of}: they start on {first}")
    return as_of
