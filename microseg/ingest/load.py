"""Stage 3 and the whole file: first deliveries into raw.events, violations into the quarantine,
one manifest row, in one transaction whose accounting is checked before it commits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from microseg.config import Settings
from microseg.contract import EventContract, event_contract
from microseg.errors import InputError
from microseg.ingest.formats import (
    content_bytes,
    jsonl_chunks,
    stage_csv,
    stage_jsonl,
    stage_parquet,
    text_bytes,
)
from microseg.ingest.ga4 import stage_ga4
from microseg.ingest.landing import detect_format, expand_paths, sha256_of
from microseg.ingest.rules import checked_sql
from microseg.ingest.snowplow import stage_snowplow
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
    rows_unused: int = 0  # the source's events that are no behavior here: counted, not stored
    error: str | None = None
    top_reasons: tuple[tuple[str, int, int], ...] = ()  # (reason, rows, first line)
    unused_events: tuple[tuple[str, int], ...] = ()  # (source event name, rows)


def _find_repeats(con: duckdb.DuckDBPyConnection, file_names: list[str]) -> None:
    """`_repeats(source_file, source_line)`: the batch's rows that deliver an event_id again,
    stored before or earlier in the batch (file order, then line order). Repeats are few, so
    this is a narrow table: one pass over raw.events per batch, not one per file. The batch's
    own files are left out of that pass: a file loaded again (--replace) is forgotten before
    its rows go in, and no other file of the batch is in raw.events yet."""
    con.execute(
        """
        create or replace temp table _repeats as
        with valid as (
            select source_file, source_line, event_id from _checked where reason is null
        ),
        stored as (
            select source_file, source_line from valid
            where event_id in (
                select event_id from raw.events
                where not list_contains($files, source_file))
        ),
        within_batch as (
            select source_file, source_line from valid
            where event_id in (select event_id from valid group by all having count(*) > 1)
            qualify row_number() over (partition by event_id
                order by list_position($files, source_file), source_line) > 1
        )
        select * from stored union select * from within_batch
        """,
        {"files": file_names},
    )


def _load(con: duckdb.DuckDBPyConnection, file_name: str, contract: EventContract) -> int:
    """Insert the file's first deliveries, in time order so that zone maps prune reads by date,
    and quarantine its rows that broke rules; returns how many events went in."""
    columns = ", ".join(contract.column_names)
    loaded = con.execute(
        f"""insert into raw.events select {columns}, source_file, source_line
            from _checked
            where source_file = $file and reason is null
              and source_line not in (select source_line from _repeats where source_file = $file)
            order by event_at, event_id""",
        {"file": file_name},
    ).fetchone()[0]
    con.execute(
        "insert into raw.events_quarantine select source_file, source_line, reason, raw_text "
        "from _checked where source_file = ? and reason is not null order by source_line",
        [file_name],
    )
    return loaded


def _counts(
    con: duckdb.DuckDBPyConnection, file_name: str, loaded: int, erased: int
) -> tuple[int, int, int, int, int, int]:
    """(read, loaded, duplicates, quarantined, erased, unused)"""
    kept, quarantined = con.execute(
        "select count(*), count(*) filter (where reason is not null) from _checked "
        "where source_file = ?",
        [file_name],
    ).fetchone()
    unused = con.execute(
        "select count(*) from _unused where source_file = ?", [file_name]
    ).fetchone()[0]
    return kept + erased + unused, loaded, kept - loaded - quarantined, quarantined, erased, unused


def _top_reasons(
    con: duckdb.DuckDBPyConnection, file_name: str
) -> tuple[tuple[str, int, int], ...]:
    rows = con.execute(
        "select reason, count(*), min(source_line) from _checked "
        "where source_file = ? and reason is not null "
        "group by reason order by count(*) desc, reason limit 3",
        [file_name],
    ).fetchall()
    return tuple((r, int(n), int(line)) for r, n, line in rows)


def _unused_events(con: duckdb.DuckDBPyConnection, file_name: str) -> tuple[tuple[str, int], ...]:
    rows = con.execute(
        "select event_name, count(*) from _unused where source_file = ? "
        "group by all order by count(*) desc, event_name",
        [file_name],
    ).fetchall()
    return tuple((name, int(n)) for name, n in rows)


def _record(
    con,
    path: Path,
    fmt: str | None,
    digest: str,
    status: str,
    error: str | None,
    counts: tuple[int, int, int, int, int, int],
) -> None:
    con.execute("delete from raw.load_manifest where file_name = ?", [path.name])
    con.execute(
        """insert into raw.load_manifest (file_name, file_path, file_format, content_sha256,
               delivered_sha256, file_bytes, status, error, rows_read, rows_loaded,
               rows_duplicate, rows_quarantined, rows_erased, rows_unused, loaded_at)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()::timestamp)""",
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


# What every format's stage 1 appends to (one file, or a batch of JSON Lines, at a time): rows
# with their canonical document as JSON text, or with their fields already read (a table of
# their own: columns a batch of documents would carry empty cost it memory), and where a
# source's events that are no behavior here are counted (GA4's session_start, ...)
STAGED_DDL = f"""create or replace temp table _staged (
    source_file varchar, source_line bigint, raw_text varchar, doc varchar, pre_reason varchar);
create or replace temp table _staged_fields (
    source_file varchar, source_line bigint, raw_text varchar, pre_reason varchar,
    fields {event_contract().read_struct_type});
create or replace temp table _unused (
    source_file varchar, source_line bigint, event_name varchar)"""
# Files' content (decompressed text, Parquet's uncompressed values) checked together: enough
# rows for DuckDB to spread the work over its threads, few enough to stay well inside the
# memory limit (a batch is held a few times over while it is staged and checked).
BATCH_BYTES_MAX = 128 * 1024 * 1024


def _batch_bytes(settings: Settings) -> int:
    return min(BATCH_BYTES_MAX, settings.duckdb_memory_bytes // 8)


@dataclass
class _Batch:
    """Files staged together; each is then loaded in its own transaction."""

    positions: list[int]  # of each file in the list ingest_paths was given
    paths: list[Path]
    digests: dict[str, str]
    formats: dict[str, str]
    jsonl: list[pa.Table]  # JSON Lines read, not parsed into _staged yet
    staged_bytes: int = 0  # of the files (or JSON Lines pieces) in _staged: content_bytes

    @property
    def bytes(self) -> int:
        """The batch's content, staged or not: what a batch's size is measured in."""
        return self.staged_bytes + self.jsonl_pending_bytes

    @property
    def jsonl_pending_bytes(self) -> int:
        return sum(lines["raw"].nbytes for lines in self.jsonl)

    def parse(self, con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
        """The lines read so far into _staged, in one statement (stage_jsonl)."""
        if self.jsonl:
            stage_jsonl(con, pa.concat_tables(self.jsonl), settings)
            self.staged_bytes = self.bytes
            self.jsonl = []


def _admit(con: duckdb.DuckDBPyConnection, path: Path, replace: bool) -> FileResult | str:
    """The file's digest if it is to be loaded, else its result (skipped: loaded already)."""
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
    return digest


def _stage(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    settings: Settings,
    batch: _Batch,
    budget: int,
    read: Future[list[pa.Table]] | None = None,
) -> None:
    """Read the file: JSON Lines into the batch's lines (`read`: its lines being read ahead),
    parsed a batch's worth at a time, the other formats into `_staged`. Only what the reader
    says about the file's content makes the file unreadable (rejected); running out of memory
    or disk, or a bug in the SQL that follows, fails the step instead, to be retried or fixed.
    `budget`: the batch's size (_batch_bytes), which a big JSON Lines file is parsed in."""
    if fmt == "jsonl":
        try:
            for lines in read.result() if read else jsonl_chunks(path, budget):
                batch.jsonl.append(lines)
                if batch.jsonl_pending_bytes >= budget:
                    batch.parse(con, settings)
        except InputError:  # what was read of the file before its error is not loaded
            batch.jsonl = [t for t in batch.jsonl if t["source_file"][0].as_py() != path.name]
            con.execute("delete from _staged where source_file = ?", [path.name])
            raise
        return
    try:
        if fmt == "csv":
            stage_csv(con, path, settings)
        elif fmt == "snowplow":
            stage_snowplow(con, path, settings)
        elif fmt == "ga4":
            stage_ga4(con, path, settings)
        else:
            stage_parquet(con, path)
        batch.staged_bytes += content_bytes(path, fmt)
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


def _load_batch(
    con: duckdb.DuckDBPyConnection, batch: _Batch, settings: Settings
) -> list[FileResult]:
    """Check the batch's rows together, then load each file atomically, in order."""
    if not batch.paths:
        return []
    contract = event_contract()
    batch.parse(con, settings)
    con.execute(checked_sql(contract))
    # before anything is stored, and before tombstones (they match the stored form)
    pseudonymize.protect_staged_rows(con, settings)
    erased = drop_erased_rows(con, settings)
    _find_repeats(con, [path.name for path in batch.paths])
    results = []
    for path in batch.paths:
        con.execute("begin transaction")
        try:
            _forget(con, path.name)
            loaded = _load(con, path.name, contract)
            counts = _counts(con, path.name, loaded, erased.get(path.name, 0))
            reasons = _top_reasons(con, path.name)
            unused = _unused_events(con, path.name)
            digest = batch.digests[path.name]
            _record(con, path, batch.formats[path.name], digest, "loaded", None, counts)
            _verify_accounting(con, path.name)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        results.append(
            FileResult(path.name, "loaded", *counts, top_reasons=reasons, unused_events=unused)
        )
    return results


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


def _reject(
    con: duckdb.DuckDBPyConnection, path: Path, declared: str | None, error: str
) -> FileResult:
    """Record a file that could not be loaded, so the manifest lists every file seen; a file
    loaded before keeps its good load (reported only)."""
    previous = con.execute(
        "select status from raw.load_manifest where file_name = ?", [path.name]
    ).fetchone()
    if previous and previous[0] == "loaded":
        return FileResult(path.name, "rejected", error=error)
    fmt = None
    with contextlib.suppress(InputError):
        fmt = detect_format(path, declared)
    con.execute("begin transaction")
    _forget(con, path.name)
    _record(con, path, fmt, sha256_of(path), "rejected", error, (0, 0, 0, 0, 0, 0))
    con.execute("commit")
    return FileResult(path.name, "rejected", error=error)


@contextlib.contextmanager
def _checkpointed_once(con: duckdb.DuckDBPyConnection, settings: Settings) -> Iterator[None]:
    """Each file commits on its own, but DuckDB writes its log into the compressed table once
    the log passes 16 MB, which after every file cost more than the parsing: the log may grow
    to a quarter of the memory limit here, and is written into the table at the end."""
    con.execute("set checkpoint_threshold = ?", [f"{settings.duckdb_memory_bytes // 4 // 2**20}MB"])
    try:
        yield
        con.execute("checkpoint")
    finally:
        con.execute("reset checkpoint_threshold")


def ingest_paths(
    settings: Settings,
    paths: list[Path],
    *,
    replace: bool = False,
    file_format: str | None = None,
) -> list[FileResult]:
    """Load every file; a bad file is rejected with its reason and the others still load.
    Files are read in batches (BATCH_BYTES_MAX) that are checked together; each file is still
    loaded in a transaction of its own, in the order given. `file_format` declares every
    file's format (contract.INPUT_FORMATS); by default each file's is detected."""
    files = expand_paths(paths)
    if not files:
        raise InputError(f"no files found in {', '.join(str(p) for p in paths)}")
    results: dict[int, FileResult] = {}
    batch_bytes = _batch_bytes(settings)
    with (
        connect(settings) as con,
        _checkpointed_once(con, settings),
        ThreadPoolExecutor(1, thread_name_prefix="ingest-read") as reader,
    ):
        con.execute(STAGED_DDL)
        batch = _Batch([], [], {}, {}, [])
        # the next JSON Lines file is decompressed and split into lines on a thread while
        # DuckDB checks and loads the batch before it (a third of a 10M-event ingest's time
        # was that reading, with DuckDB idle); held outside DuckDB's memory limit, it is read
        # ahead only when it is at most an eighth of that limit
        reading: dict[int, tuple[str, Future[list[pa.Table]]]] = {}
        ahead_bytes = settings.duckdb_memory_bytes // 8

        def read_ahead(index: int) -> None:
            if index < len(files):
                with contextlib.suppress(InputError, OSError):  # said when the file's turn comes
                    fmt = detect_format(files[index], file_format)
                    if fmt == "jsonl" and text_bytes(files[index]) <= ahead_bytes:
                        lines = jsonl_chunks(files[index], batch_bytes)  # read by the thread
                        reading[index] = (fmt, reader.submit(list, lines))

        def flush() -> None:
            nonlocal batch
            loaded = _load_batch(con, batch, settings)
            results.update(zip(batch.positions, loaded, strict=True))
            # made anew: DuckDB keeps a temp table's deleted rows until it is dropped, so a
            # `delete` kept every staged document of the run (100M: 13 GB of spill in 8 min)
            con.execute(STAGED_DDL)
            batch = _Batch([], [], {}, {}, [])

        for index, path in enumerate(files):
            if path.name in batch.digests:  # the same name twice: the first must land first
                flush()
            fmt, read = reading.pop(index, (None, None))
            try:
                admitted = _admit(con, path, replace)
                if isinstance(admitted, FileResult):
                    results[index] = admitted
                    continue
                fmt = fmt or detect_format(path, file_format)
                _stage(con, path, fmt, settings, batch, batch_bytes, read)
            except InputError as exc:
                results[index] = _reject(con, path, file_format, str(exc))
                continue
            batch.formats[path.name] = fmt
            batch.positions.append(index)
            batch.paths.append(path)
            batch.digests[path.name] = admitted
            read_ahead(index + 1)  # only after a file to load: a re-run skips without reading
            if batch.bytes >= batch_bytes:
                flush()
        flush()
    return [results[i] for i in range(len(files))]
