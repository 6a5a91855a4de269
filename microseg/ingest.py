"""Load event dump files into raw.events, one atomic transaction per file.

Every file goes through the same three stages, all in DuckDB (no Python loop per row):
1. stage: read the file into `_incoming(source_line, raw_text, doc, pre_reason)`, where `doc` is
   the event as a canonical JSON object (Segment/RudderStack messages are mapped here) and
   `pre_reason` says why a line could not even be parsed;
2. check: type the canonical fields and give each row its first contract violation, with the
   rules compiled from the event JSON Schema (microseg.contract);
3. load: first delivery of each new event_id into raw.events, repeats counted as duplicates,
   violations into raw.events_quarantine, and one raw.load_manifest row, in one transaction.
So for every file: rows read = loaded + duplicates + quarantined.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from microseg.config import Settings
from microseg.contract import EventContract, event_contract
from microseg.errors import InputError
from microseg.warehouse import FILE_ACCOUNTING_SQL, connect

RAW_TEXT_CHARS = 2000  # quarantined rows keep this much of the offending input

# Segment / RudderStack `track` event names mapped to the canonical taxonomy (docs/events.md).
# Names not listed are snake-cased ("Page Ping" -> page_ping) and then checked like any event.
SPEC_TRACK_EVENTS = {
    "Products Searched": "search",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "checkout_start",
    "Order Completed": "purchase",
    "Video Playback Started": "video_play",
    "Video Playback Resumed": "video_play",
    "Video Playback Paused": "video_pause",
    "Video Content Playing": "video_progress",
    "Video Playback Completed": "video_complete",
    "Form Submitted": "form_submit",
    "Consent Updated": "consent",
}
SPEC_MESSAGE_TYPES = {"track", "page", "screen", "identify"}
# Spec properties that become canonical columns, so they are not kept twice in `properties`.
SPEC_LIFTED_PROPERTIES = (
    "page_type",
    "content_id",
    "content_category",
    "category",
    "element_id",
    "url",
    "referrer",
)


@dataclass(frozen=True)
class FileResult:
    """What happened to one file; `status` is loaded, skipped (already loaded) or rejected."""

    file_name: str
    status: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    error: str | None = None
    top_reasons: tuple[tuple[str, int, int], ...] = ()  # (reason, rows, first line)


def detect_format(path: Path) -> str:
    """File format from the name: jsonl (plain or .gz), csv (plain or .gz) or parquet."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if last in {".csv", ".tsv"}:
        return "csv"
    if last == ".parquet":
        return "parquet"
    raise InputError(f"{path.name}: unknown format (expected .jsonl, .json, .csv or .parquet)")


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files named directly, plus the visible files directly inside named folders (sorted).

    Folders are not searched recursively: the generator's ground truth lives in a subfolder
    beside the dumps and must never be loaded.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


DELIVERY_DATE = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")


def delivery_date(path: Path) -> date | None:
    """The day a landing file holds, from the ISO date in its name (events_2026-10-12.jsonl.gz);
    None for an undated name."""
    match = DELIVERY_DATE.search(path.name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def split_due(files: list[Path], as_of: date) -> tuple[list[Path], list[Path]]:
    """(due, held): the night of `as_of` loads undated files and days before `as_of`; later
    days wait for their own night. This is what makes a backfill see, night by night, exactly
    the deliveries the nightly runs saw, even when every file is already in the landing folder.
    """
    due, held = [], []
    for path in files:
        day = delivery_date(path)
        (due if day is None or day < as_of else held).append(path)
    return due, held


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- stage 1: read into _incoming


def _read_bytes(path: Path) -> bytes:
    """Whole file, decompressed when gzipped; corrupt or truncated gzip is a file error."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise InputError(
            f"{path.name}: truncated gzip (ends before the end-of-stream marker)"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path.name}: corrupt gzip ({exc})") from None


def _line_table(data: bytes) -> pa.Table:
    """Split bytes into lines without a Python loop: (source_line, nbytes, raw) with zero copy.

    Each value keeps its line terminator (values must be contiguous in Arrow); SQL strips it.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.append(starts[1:], len(buf)).astype(np.int64)
    if len(buf) and buf[-1] == 10:  # the final terminator does not open another line
        starts, ends = starts[:-1], ends[:-1]
    offsets = pa.py_buffer(np.append(starts, ends[-1] if len(ends) else 0).astype(np.int64))
    raw = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(starts), [None, offsets, pa.py_buffer(data)]
    )
    return pa.table(
        {
            "source_line": pa.array(np.arange(1, len(starts) + 1, dtype=np.int64)),
            "nbytes": pa.array(ends - starts),
            "raw": raw,
        }
    )


def _spec_message_sql(j: str) -> str:
    """A Segment/RudderStack message `j` as a canonical JSON event (mapping in docs/events.md)."""
    track = " ".join(
        f"when {_quote(name)} then {_quote(canonical)}"
        for name, canonical in SPEC_TRACK_EVENTS.items()
    )
    event_type = f"""case {j}->>'$.type'
            when 'page' then 'page_view' when 'screen' then 'page_view'
            when 'identify' then 'identify'
            when 'track' then case {j}->>'$.event' {track}
                else regexp_replace(lower(trim({j}->>'$.event')), '[^a-z0-9]+', '_', 'g') end
        end"""
    return f"""json_object(
        'event_id', {j}->'$.messageId',
        'event_type', {event_type},
        'event_at', coalesce({j}->'$.timestamp', {j}->'$.originalTimestamp'),
        'received_at', {j}->'$.receivedAt',
        'anonymous_id', {j}->'$.anonymousId',
        'user_id', {j}->'$.userId',
        'page_url', coalesce({j}->'$.context.page.url', {j}->'$.properties.url'),
        'page_type', {j}->'$.properties.page_type',
        'content_id', {j}->'$.properties.content_id',
        'content_category', coalesce({j}->'$.properties.content_category',
                                     {j}->'$.properties.category'),
        'element_id', {j}->'$.properties.element_id',
        'device_type', {j}->'$.context.device.type',
        'country', {j}->'$.context.location.country',
        'referrer', coalesce({j}->'$.context.page.referrer', {j}->'$.properties.referrer'),
        'utm_source', {j}->'$.context.campaign.source',
        'utm_medium', {j}->'$.context.campaign.medium',
        'utm_campaign', {j}->'$.context.campaign.name',
        'properties', case when {j}->>'$.type' <> 'identify' then json_merge_patch(
            {j}->'$.properties', {_quote(json.dumps(dict.fromkeys(SPEC_LIFTED_PROPERTIES)))}) end
    )"""


def _stage_jsonl(con: duckdb.DuckDBPyConnection, path: Path, settings: Settings) -> None:
    data = _read_bytes(path)
    head = data[:4096].lstrip()
    if not head:
        raise InputError(f"{path.name}: empty file")
    if head[:1] == b"[":
        raise InputError(
            f"{path.name}: a JSON array; expected JSON Lines (one JSON object per line)"
        )
    con.register("_lines", _line_table(data))
    spec_types = ", ".join(_quote(t) for t in sorted(SPEC_MESSAGE_TYPES))
    con.execute(
        f"""
        create or replace temp table _incoming as
        with decoded as (
            select source_line, nbytes, raw,
                   case when nbytes <= {settings.max_line_bytes}
                        then rtrim(try(decode(raw)), chr(13) || chr(10)) end as text
            from _lines
        ),
        parsed as (
            select *,
                case
                    when nbytes > {settings.max_line_bytes} then format(
                        'line is {{}} bytes, over the {settings.max_line_bytes}-byte limit', nbytes)
                    when text is null then 'line is not valid UTF-8'
                    when not json_valid(text) then 'line is not valid JSON'
                    when json_type(text) <> 'OBJECT' then
                        'line is a JSON ' || lower(json_type(text)) || ', not an object'
                end as pre_reason
            from decoded
            where nbytes > {settings.max_line_bytes} or text is null or trim(text) <> ''
        ),
        classified as (
            -- JSON functions raise on malformed text, so only parsed lines get a document
            select *, case when pre_reason is null then json(text) end as j from parsed
        ),
        typed as (
            select *, coalesce(json_exists(j, '$.messageId'), false) as is_spec from classified
        )
        select
            source_line,
            left(coalesce(text, cast(raw as varchar)), {RAW_TEXT_CHARS}) as raw_text,
            case when not is_spec then j
                 when j->>'$.type' in ({spec_types}) then {_spec_message_sql("j")} end as doc,
            case when is_spec and coalesce(j->>'$.type', '') not in ({spec_types})
                     then 'unsupported Segment/RudderStack message type '
                          || {_sql_shown("j->>'$.type'")}
                 else pre_reason end as pre_reason
        from typed
        """
    )
    con.unregister("_lines")


def _doc_from_columns(columns: list[str], contract: EventContract) -> str:
    """A canonical JSON object from flat (varchar) columns; `properties` text is parsed."""
    parts = []
    for name in contract.column_names:
        if name not in columns:
            continue
        if name == "properties":
            value = (
                "case when properties is null or trim(properties) = '' then null "
                "when json_valid(properties) then json(properties) else to_json(properties) end"
            )
        else:
            value = _ident(name)
        parts.append(f"{_quote(name)}, {value}")
    return f"json_object({', '.join(parts)})"


def _require_columns(path: Path, columns: list[str], contract: EventContract) -> None:
    missing = [c for c in contract.required if c not in columns]
    if missing:
        raise InputError(f"{path.name}: no column {', '.join(missing)} (see docs/events.md)")


def _stage_csv(con: duckdb.DuckDBPyConnection, path: Path, contract: EventContract) -> None:
    """CSV via DuckDB's reader; lines it cannot parse come back from its rejects table."""
    con.execute("drop table if exists _csv_rejects; drop table if exists _csv_scans")
    reader = (
        f"read_csv({_quote(str(path))}, header = true, all_varchar = true, "
        "store_rejects = true, rejects_table = '_csv_rejects', rejects_scan = '_csv_scans', "
        "parallel = false, max_line_size = 1073741824)"
    )
    try:
        con.execute(f"create or replace temp table _csv as select * from {reader}")
    except duckdb.Error as exc:
        raise InputError(f"{path.name}: unreadable CSV ({_first_line(exc)})") from None
    columns = [row[0] for row in con.execute("select column_name from (describe _csv)").fetchall()]
    rejected = con.execute("select count(distinct line) from _csv_rejects").fetchone()[0]
    good = con.execute("select count(*) from _csv").fetchone()[0]
    if good + rejected == 0:
        raise InputError(f"{path.name}: header-only CSV (no rows)")
    _require_columns(path, columns, contract)
    # Good records fill the data lines (2..N) that the reader did not reject, in order.
    con.execute(
        f"""
        create or replace temp table _incoming as
        with rejected as (
            select line, first(error_message order by column_idx) as message,
                   first(csv_line) as csv_line
            from _csv_rejects group by line
        ),
        good_lines as (
            select line, row_number() over (order by line) as ordinal
            from range(2, {good + rejected + 2}) as r(line)
            where line not in (select line from rejected)
        ),
        good as (
            select row_number() over () as ordinal, * from _csv
        )
        select g.line as source_line,
               left(concat_ws(',', {", ".join(_ident(c) for c in columns)}),
                    {RAW_TEXT_CHARS}) as raw_text,
               {_doc_from_columns(columns, contract)} as doc,
               null::varchar as pre_reason
        from good join good_lines g using (ordinal)
        union all
        select line, left(csv_line, {RAW_TEXT_CHARS}), null,
               'unparseable CSV line: ' || message
        from rejected
        """
    )


def _stage_parquet(con: duckdb.DuckDBPyConnection, path: Path, contract: EventContract) -> None:
    reader = f"read_parquet({_quote(str(path))}, file_row_number = true)"
    try:
        columns = [
            r[0]
            for r in con.execute(
                f"select column_name from (describe select * from {reader})"
            ).fetchall()
        ]
    except duckdb.Error as exc:
        raise InputError(f"{path.name}: unreadable Parquet ({_first_line(exc)})") from None
    _require_columns(path, columns, contract)
    present = [c for c in contract.column_names if c in columns]
    casts = ", ".join(
        f"cast({_ident(c)} as varchar) as {_ident(c)}"
        if c != "properties"
        else "case when typeof(properties) = 'VARCHAR' then properties::varchar "
        "else to_json(properties)::varchar end as properties"
        for c in present
    )
    con.execute(
        f"""
        create or replace temp table _incoming as
        with flat as (select file_row_number + 1 as source_line, {casts} from {reader})
        select source_line,
               left(to_json(flat)::varchar, {RAW_TEXT_CHARS}) as raw_text,
               {_doc_from_columns(present, contract)} as doc,
               null::varchar as pre_reason
        from flat
        """
    )
    if con.execute("select count(*) from _incoming").fetchone()[0] == 0:
        raise InputError(f"{path.name}: Parquet file has no rows")


# ------------------------------------------------------------------ stage 2: check the contract


def _checked_sql(contract: EventContract) -> str:
    """Typed canonical columns plus `reason`, the first contract rule each row breaks.

    Each document is parsed once (json_transform into a struct of text), not once per rule.
    """
    top = {f.name: "JSON" if f.name == "properties" else "VARCHAR" for f in contract.fields}
    props = {p.name: "VARCHAR" for p in contract.numeric_properties}
    props |= {name: "JSON" for name in contract.object_properties}

    def text(name: str) -> str:
        return f"nullif(trim(f.{name}), '')"

    select = []
    for f in contract.fields:
        if f.name == "properties":
            select.append("case when is_object then f.properties end as properties")
        elif f.is_timestamp:
            select.append(f"try_cast(f.{f.name} as timestamptz) at time zone 'UTC' as {f.name}")
        else:
            select.append(f"{text(f.name)} as {f.name}")

    rules: list[tuple[str, str]] = [("pre_reason is not null", "pre_reason")]
    rules += [(f"{text(name)} is null", _quote(f"missing {name}")) for name in contract.required]
    ids = contract.identity_any_of
    rules.append(
        (
            " and ".join(f"{text(n)} is null" for n in ids),
            _quote(f"missing both {' and '.join(ids)}"),
        )
    )
    for f in contract.fields:
        value = f"f.{f.name}"
        if f.max_length:
            rules.append(
                (
                    f"length({value}) > {f.max_length}",
                    _quote(f"{f.name} longer than {f.max_length} characters"),
                )
            )
        if f.enum:
            allowed = ", ".join(_quote(v) for v in f.enum)
            rules.append(
                (
                    f"{text(f.name)} not in ({allowed})",
                    f"'unknown {f.name} ' || {_sql_shown(value)}",
                )
            )
        if f.is_timestamp:
            rules.append(
                (
                    f"{text(f.name)} is not null and try_cast({value} as timestamptz) is null",
                    f"'{f.name} is not an ISO-8601 timestamp: ' || {_sql_shown(value)}",
                )
            )
    rules.append(
        (
            "f.properties is not null and json_type(f.properties) <> 'NULL' and not is_object",
            "'properties is not a JSON object'",
        )
    )
    for prop in contract.numeric_properties:
        value = f"p.{prop.name}"
        number = f"try_cast({value} as double)"
        rules.append(
            (
                f"{value} is not null and {number} is null",
                f"'properties.{prop.name} is not a number: ' || {_sql_shown(value)}",
            )
        )
        bounds = []
        if prop.minimum is not None:
            bounds.append(f"{number} < {prop.minimum}")
        if prop.maximum is not None:
            bounds.append(f"{number} > {prop.maximum}")
        if bounds:
            low = "" if prop.minimum is None else f"{prop.minimum:g}"
            high = "" if prop.maximum is None else f"{prop.maximum:g}"
            rules.append(
                (
                    " or ".join(bounds),
                    f"'properties.{prop.name}=' || {value} || ' is outside {low}..{high}'",
                )
            )
    for name in contract.object_properties:
        rules.append(
            (
                f"coalesce(json_type(p.{name}), 'NULL') not in ('OBJECT', 'NULL')",
                _quote(f"properties.{name} is not a JSON object"),
            )
        )

    reason = "case " + " ".join(f"when {cond} then {msg}" for cond, msg in rules) + " end"
    return f"""
        create or replace temp table _checked as
        with fields as (
            select source_line, raw_text, pre_reason,
                   json_transform(doc, {_quote(json.dumps(top))}) as f
            from _incoming
        ),
        typed as (
            select *, coalesce(json_type(f.properties) = 'OBJECT', false) as is_object
            from fields
        ),
        with_properties as (
            select *, json_transform(case when is_object then f.properties end,
                                     {_quote(json.dumps(props))}) as p
            from typed
        )
        select source_line, raw_text, {", ".join(select)}, {reason} as reason
        from with_properties
    """


# ---------------------------------------------------------------------------- stage 3: load


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


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int]:
    read, quarantined = con.execute(
        "select count(*), count(*) filter (where reason is not null) from _checked"
    ).fetchone()
    loaded = con.execute("select count(*) from _fresh").fetchone()[0]
    return read, loaded, read - loaded - quarantined, quarantined


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
    counts: tuple[int, int, int, int],
) -> None:
    con.execute("delete from raw.load_manifest where file_name = ?", [path.name])
    con.execute(
        "insert into raw.load_manifest values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()::timestamp)",
        [path.name, str(path.resolve()), fmt, digest, path.stat().st_size, status, error, *counts],
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
        "select content_sha256, status from raw.load_manifest where file_name = ?", [path.name]
    ).fetchone()
    if previous and previous[1] == "loaded" and not replace:
        if previous[0] == digest:
            return FileResult(path.name, "skipped")
        raise InputError(
            f"{path.name}: already loaded with different content "
            "(sha256 differs); use --replace to reload it"
        )
    fmt = detect_format(path)
    con.execute("begin transaction")
    try:
        _stage(con, path, fmt, settings, contract)
        con.execute(_checked_sql(contract))
        _forget(con, path.name)
        _load(con, path.name, contract)
        counts = _counts(con)
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
            _stage_jsonl(con, path, settings)
        elif fmt == "csv":
            _stage_csv(con, path, contract)
        else:
            _stage_parquet(con, path, contract)
    except duckdb.OutOfMemoryException:
        raise
    except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException) as exc:
        if _is_resource_error(exc):
            raise
        raise InputError(f"{path.name}: unreadable ({_first_line(exc)})") from None


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
    _record(con, path, fmt, sha256_of(path), "rejected", error, (0, 0, 0, 0))
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


# ------------------------------------------------------------------------------------ helpers


def _quote(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _sql_shown(expr: str) -> str:
    """SQL that shows a value inside a reason: quoted, cut at 60 characters, or null."""
    return f"coalesce('''' || left({expr}, 60) || '''', 'null')"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300]
