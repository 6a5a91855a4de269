"""Stage 3 and the whole file: first deliveries into raw.events, violations into the quarantine,
one manifest row, in one transaction whose accounting is checked before it commits."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from microseg.config import Settings
from microseg.contract import EventContract, event_contract
from microseg.errors import InputError
from microseg.ingest.formats import stage_csv, stage_jsonl, stage_parquet
from microseg.ingest.landing import detect_format, expand_paths, sha256_of
from microseg.ingest.rules import checked_sql
from microseg.ingest.sqltext import first_line
from microseg.privacy import pseudonymize  # a module: pseudonymize imports ingest's sqltext
from microseg.privacy.tombstones import drop_erased_rows
from microseg.warehouse import FILE_ACCOUNTING_SQL, connect


@dataclass(frozen=True)
class FileResult:
    """What happened to one file; `status` is loaded, skipped (already loaded) or rejected."""

    file_name: str
    status: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    rows_erased: int = 0  # rows of erased people (privacy tombstones): counted, not stored
    error: str | None = None
    top_reasons: tuple[tuple[str, int, int], ...] = ()  # (reason, rows, first line)


def _load(con: duckdb.DuckDBPyConnection, file_name: str, contract: EventContract) -> None:
    """Insert first deliveries of unseen event_ids, and quarantine the rows that broke rules."""
    columns = ", ".join(contract.column_names)
    con.execute(
        """
        create or replace temp table _fresh as
        select * exclude (is_first) from (
            select *, row_number() over (partition by event_id order by source_line) = 1
                      as is_first
            from _checked where reason is null
        )
        where is_first and event_id not in (select event_id from raw.events)
        """
    )
    con.execute(
        f"insert into raw.events select {columns}, ? as source_file, source_line "
        "from _fresh order by event_at, event_id",
        [file_name],
    )
    con.execute(
        "insert into raw.events_quarantine select ?, source_line, reason, raw_text "
        "from _checked where reason is not null order by source_line",
        [file_name],
    )


def _counts(con: duckdb.DuckDBPyConnection, erased: int) -> tuple[int, int, int, int, int]:
    kept, quarantined = con.execute(
        "select count(*), count(*) filter (where reason is not null) from _checked"
    ).fetchone()
    loaded = con.execute("select count(*) from _fresh").fetchone()[0]
    return kept + erased, loaded, kept - loaded - quarantined, quarantined, erased


def _top_reasons(con: duckdb.DuckDBPyConnection) -> tuple[tuple[str, int, int], ...]:
    rows = con.execute(
        "select reason, count(*), min(source_line) from _checked where reason is not null "
        "group by reason order by count(*) desc, reason limit 3"
    ).fetchall()
    return tuple((r, int(n), int(line)) for r, n, line in rows)


def _record(
    con,
    path: Path,
    fmt: str | None,
    digest: str,
    status: str,
    error: str | None,
    counts: tuple[int, int, int, int, int],
) -> None:
    con.execute("delete from raw.load_manifest where file_name = ?", [path.name])
    con.execute(
        """insert into raw.load_manifest (file_name, file_path, file_format, content_sha256,
               delivered_sha256, file_bytes, status, error, rows_read, rows_loaded,
               rows_duplicate, rows_quarantined, rows_erased, loaded_at)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()::timestamp)""",
        [
            path.name,
            str(path.resolve()),
            fmt,
            digest,
            digest,
            path.stat().st_size,
            status,
            error,
            *counts,
        ],
    )


def _forget(con: duckdb.DuckDBPyConnection, file_name: str) -> None:
    """Remove what an earlier load of this file name put in the raw layer (for --replace)."""
    for table in ("raw.events", "raw.events_quarantine"):
        con.execute(f"delete from {table} where source_file = ?", [file_name])
    con.execute("delete from raw.load_manifest where file_name = ?", [file_name])


def ingest_file(
    con: duckdb.DuckDBPyConnection, path: Path, settings: Settings, *, replace: bool = False
) -> FileResult:
    """Load one file atomically. Raises InputError for a file that cannot be loaded at all."""
    contract = event_contract()
    digest = sha256_of(path)
    previous = con.execute(
        "select status, [content_sha256, delivered_sha256] from raw.load_manifest "
        "where file_name = ?",
        [path.name],
    ).fetchone()
    if previous and previous[0] == "loaded" and not replace:
        # the file as loaded, or as delivered before erasure rewrote it: the same delivery
        if digest in previous[1]:
            return FileResult(path.name, "skipped")
        raise InputError(
            f"{path.name}: already loaded with different content "
            "(sha256 differs); use --replace to reload it"
        )
    fmt = detect_format(path)
    con.execute("begin transaction")
    try:
        _stage(con, path, fmt, settings, contract)
        con.execute(checked_sql(contract))
        # before anything is stored, and before tombstones (they match the stored form)
        pseudonymize.protect_staged_rows(con, settings)
        erased = drop_erased_rows(con, settings)
        _forget(con, path.name)
        _load(con, path.name, contract)
        counts = _counts(con, erased)
        reasons = _top_reasons(con)
        _record(con, path, fmt, digest, "loaded", None, counts)
        _verify_accounting(con, path.name)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return FileResult(path.name, "loaded", *counts, top_reasons=reasons)


def _stage(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    settings: Settings,
    contract: EventContract,
) -> None:
    """Read the file into the staging table. Only what the reader says about the file's
    content makes the file unreadable (rejected); running out of memory or disk, or a bug in
    the SQL that follows, fails the step instead, to be retried or fixed."""
    try:
        if fmt == "jsonl":
            stage_jsonl(con, path, settings)
        elif fmt == "csv":
            stage_csv(con, path, contract)
        else:
            stage_parquet(con, path, contract)
    except duckdb.OutOfMemoryException:
        raise
    except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException) as exc:
        if _is_resource_error(exc):
            raise
        raise InputError(f"{path.name}: unreadable ({first_line(exc)})") from None


def _is_resource_error(exc: duckdb.Error) -> bool:
    """Disk full or a file that vanished: the machine's problem, not the file's content."""
    text = str(exc).lower()
    return any(s in text for s in ("no space left", "disk full", "no such file", "permission"))


def _verify_accounting(con: duckdb.DuckDBPyConnection, file_name: str) -> None:
    """Before the commit, the raw tables must hold exactly what the manifest row says (the same
    identity `microseg validate` checks after the fact); otherwise the load is rolled back."""
    mismatch = con.execute(
        f"select * from ({FILE_ACCOUNTING_SQL}) where file_name = ? and (rows_unaccounted <> 0 "
        "or events_not_in_manifest <> 0 or quarantine_rows_not_in_manifest <> 0)",
        [file_name],
    ).fetchone()
    if mismatch:
        raise RuntimeError(f"{file_name}: raw tables disagree with the manifest: {mismatch}")


def _reject(con: duckdb.DuckDBPyConnection, path: Path, error: str) -> FileResult:
    """Record a file that could not be loaded, so the manifest lists every file seen."""
    fmt = None
    with contextlib.suppress(InputError):
        fmt = detect_format(path)
    con.execute("begin transaction")
    _forget(con, path.name)
    _record(con, path, fmt, sha256_of(path), "rejected", error, (0, 0, 0, 0, 0))
    con.execute("commit")
    return FileResult(path.name, "rejected", error=error)


def ingest_paths(
    settings: Settings, paths: list[Path], *, replace: bool = False
) -> list[FileResult]:
    """Load every file; a bad file is rejected with its reason and the others still load."""
    files = expand_paths(paths)
    if not files:
        raise InputError(f"no files found in {', '.join(str(p) for p in paths)}")
    results = []
    with connect(settings) as con:
        for path in files:
            try:
                results.append(ingest_file(con, path, settings, replace=replace))
            except InputError as exc:
                previous = con.execute(
                    "select status from raw.load_manifest where file_name = ?", [path.name]
                ).fetchone()
                if previous and previous[0] == "loaded":  # keep the good load; report only
                    results.append(FileResult(path.name, "rejected", error=str(exc)))
                else:
                    results.append(_reject(con, path, str(exc)))
    return results
