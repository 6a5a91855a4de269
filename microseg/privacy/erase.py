"""`microseg erase`: forget people everywhere the pipeline put them.

A request names a user id, a device (anonymous) id or a person; identity stitching resolves it
to the person and all their ids (never further: a shared household device that stitching kept
apart is not erased with one of its users). Then, holding the warehouse writer:

1. every warehouse table loses the rows of those ids (any schema; columns that hold a person,
   user or device id, the list columns of dim_persons, the idempotency keys of their messages,
   and free text that quotes an id: quarantined raw lines, message payloads); the load
   manifest counts the removed raw rows as erased, so its accounting still adds up;
2. tombstones (keyed hashes, privacy/tombstones.py) make ingest drop their events for good;
3. the warehouse file is rewritten (DuckDB keeps deleted rows' bytes until then);
4. files under MICROSEG_HOME that copy them out are rewritten without them: landing dumps
   (their manifest checksum follows), audience CSVs and trigger message files (their
   manifests' rows and checksums follow); Great Expectations results, Data Docs and Airflow
   task logs keep their records with [erased] in place of the ids; the Spark target's copies
   are deleted (microseg.lake); the analysts' snapshot is published again;
5. privacy.erasure_log records the request: when, why, how many rows per table, no ids.

Re-running the same request changes nothing but adds a log line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd

from microseg.config import Settings
from microseg.errors import InputError, UsageError, WarehouseBusyError
from microseg.lake import forget_spark_copies
from microseg.privacy.keys import key_id, keyed_hash, privacy_key
from microseg.privacy.pseudonymize import stored_user_id
from microseg.privacy.tombstones import PRIVACY_DDL
from microseg.warehouse import connect, create_database, has_table, require_warehouse
from ml.registry import flag_for_retraining

KINDS = {"user_id": "user", "anonymous_id": "anonymous", "person": "person"}
# Columns whose value is a person, user or device id, or a message of one.
ID_COLUMNS = {
    "person_id": "person",
    "previous_person_id": "person",
    "former_person_id": "person",
    "user_id": "identifier",
    "anonymous_id": "identifier",
    "identifier": "identifier",
    "idempotency_key": "message",
}
# Device ids of the source exports ingest reads (GA4, Snowplow) in landing Parquet files
SOURCE_ID_COLUMNS = ("user_pseudo_id", "domain_userid", "network_userid")
LIST_COLUMNS = ("user_ids", "anonymous_ids")
TEXT_COLUMNS = ("raw_text", "payload")  # free text that may quote an id
WAIT_SECONDS = 5  # between tries while another step holds the warehouse


@dataclass(frozen=True)
class Request:
    kind: str  # user, anonymous or person
    value: str


@dataclass
class Erasure:
    request_id: str
    people: int
    identifiers: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_rewritten: dict[str, int] = field(default_factory=dict)
    models_to_retrain: list[str] = field(default_factory=list)
    republished: bool = False


def stored_requests(settings: Settings, requests: list[Request]) -> list[Request]:
    """Requests as the warehouse stores their ids (user ids may be pseudonyms)."""
    return [
        Request(r.kind, stored_user_id(settings, r.value)) if r.kind == "user" else r
        for r in requests
    ]


def read_requests(pairs: list[tuple[str, str]], from_file: Path | None) -> list[Request]:
    """Requests from the command line (option, value) and from a file of `kind=value` lines
    (user_id=..., anonymous_id=..., person=...; blank lines and # comments skipped)."""
    requests = [Request(KINDS[option], value.strip()) for option, value in pairs]
    if from_file is not None:
        try:
            lines = from_file.read_text("utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"--from-file {from_file}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            option, _, value = text.partition("=")
            if option.strip() not in KINDS or not value.strip():
                raise InputError(
                    f"{from_file.name} line {number}: expected user_id=..., anonymous_id=... "
                    f"or person=..., got {text[:60]!r}"
                )
            requests.append(Request(KINDS[option.strip()], value.strip()))
    if any(not r.value for r in requests):
        raise UsageError("an empty id cannot be erased")
    if not requests:
        raise UsageError("name whom to erase: --user-id, --anonymous-id, --person or --from-file")
    return requests


def person_id_of(identity_key: str) -> str:
    """The person id dbt gives an identity key (macros/identity.sql: person_id)."""
    return "per_" + hashlib.md5(identity_key.encode()).hexdigest()[:24]


def _resolve(con, requests: list[Request]) -> tuple[set[tuple[str, str]], set[str], set[str]]:
    """(identifiers as (user|anonymous, id), the people, every person id rows may carry)."""
    asked = {(r.kind, r.value) for r in requests if r.kind != "person"}
    persons = {r.value for r in requests if r.kind == "person"}
    stitched: list[tuple[str, str, str]] = []
    if has_table(con, "intermediate", "int_identities_stitched"):
        con.register("_asked", pd.DataFrame(list(asked), columns=["id_type", "identifier"]))
        stitched = con.execute(
            """with people as (
                   select person_id from intermediate.int_identities_stitched
                   where (id_type, identifier) in (select (id_type, identifier) from _asked)
                   union select unnest(?::varchar[])
               )
               select person_id, id_type, identifier from intermediate.int_identities_stitched
               where person_id in (select person_id from people)""",
            [sorted(persons)],
        ).fetchall()
        con.unregister("_asked")
    known = {p for p, _, _ in stitched}
    missing = sorted(persons - known)
    if missing:
        raise UsageError(f"no person {missing[0]} in the warehouse (see marts.dim_persons)")
    asked |= {(t, i) for _, t, i in stitched}
    # every id a row may carry for them: current persons, and the ids of identities that
    # were merged into them since (a device's anonymous person before its login)
    prefix = {"user": "user:", "anonymous": "anon:"}
    return asked, known, known | {person_id_of(prefix[t] + i) for t, i in asked}


ID_CHARS = "A-Za-z0-9_.@:-"  # what may continue an id: "user_1" is not inside "user_12"


def _alternatives(needles: set[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))


def _needle_regex(needles: set[str]) -> str:
    """SQL (RE2) regex matching any needle as a whole value in free text (JSON or CSV)."""
    return f"(^|[^{ID_CHARS}])({_alternatives(needles)})($|[^{ID_CHARS}])"


def needle_pattern(needles: set[str]) -> re.Pattern[bytes]:
    """The same for Python on bytes, as lookarounds, so adjacent ids are all found."""
    return re.compile(f"(?<![{ID_CHARS}])(?:{_alternatives(needles)})(?![{ID_CHARS}])".encode())


def _tables(con) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every base table outside the privacy schema with its (column, type)."""
    rows = con.execute(
        """select c.table_schema || '.' || c.table_name, c.column_name, c.data_type
           from information_schema.columns c
           join information_schema.tables t using (table_catalog, table_schema, table_name)
           where t.table_type = 'BASE TABLE' and c.table_schema <> 'privacy'
             and c.table_catalog = current_database()
           order by 1, c.ordinal_position"""
    ).fetchall()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        tables.setdefault(table, []).append((column, kind))
    return list(tables.items())


def _predicate(columns: list[tuple[str, str]], regex: str) -> str | None:
    """SQL true for a row of the erased people, or None when no column can hold them."""
    sets = {
        "person": "(select person_id from _erase_persons)",
        "identifier": "(select identifier from _erase_ids)",
        "message": "(select idempotency_key from _erase_keys)",
    }
    parts = []
    for column, kind in columns:
        if column in ID_COLUMNS:
            parts.append(f"{column} in {sets[ID_COLUMNS[column]]}")
        elif column in LIST_COLUMNS:
            parts.append(f"list_has_any({column}, (select list(identifier) from _erase_ids))")
        elif column in TEXT_COLUMNS:
            text = column if kind == "VARCHAR" else f"{column}::varchar"
            parts.append(f"regexp_matches({text}, '{regex}')")
    return " or ".join(parts) or None


def _delete_everywhere(
    con, identifiers: set[tuple[str, str]], persons: set[str], as_asked: set[str]
) -> dict:
    """Delete the people's rows from every table; returns table -> rows deleted. Free text
    is searched for the ids `as_asked` too (a quarantined line holds a user id in clear even
    when the warehouse stores its pseudonym)."""
    con.register(
        "_erase_ids_frame",
        pd.DataFrame({"identifier": sorted({i for _, i in identifiers})}, dtype=object),
    )
    con.execute("create or replace temp table _erase_ids as select * from _erase_ids_frame")
    con.register("_erase_persons_frame", pd.DataFrame({"person_id": sorted(persons)}, dtype=object))
    con.execute("create or replace temp table _erase_persons as select * from _erase_persons_frame")
    outboxes = [t for t, _ in _tables(con) if t.endswith(".activation_outbox")]
    keys = " union all ".join(
        f"select idempotency_key from {t} where person_id in (select person_id from _erase_persons)"
        for t in outboxes
    )
    con.execute(
        "create or replace temp table _erase_keys as "
        + (keys or "select null::varchar as idempotency_key where false")
    )
    regex = _needle_regex({i for _, i in identifiers} | persons | as_asked).replace("'", "''")
    deleted: dict[str, int] = {}
    _count_erased_raw_rows(con, regex)
    for table, columns in _tables(con):
        where = _predicate(columns, regex)
        if where is None:
            continue
        rows = con.execute(f"delete from {table} where {where}").fetchone()[0]
        if rows:
            deleted[table] = rows
    return deleted


def _count_erased_raw_rows(con, regex: str) -> None:
    """Move the raw rows about to go from loaded/quarantined to erased in the manifest."""
    events = _predicate([("user_id", "VARCHAR"), ("anonymous_id", "VARCHAR")], regex)
    quarantined = _predicate([("raw_text", "VARCHAR")], regex)
    con.execute(
        f"""update raw.load_manifest m
            set rows_loaded = m.rows_loaded - gone.events,
                rows_quarantined = m.rows_quarantined - gone.quarantined,
                rows_erased = coalesce(m.rows_erased, 0) + gone.events + gone.quarantined
            from (
                select source_file, sum(events) as events, sum(quarantined) as quarantined
                from (
                    select source_file, 1 as events, 0 as quarantined
                    from raw.events where {events}
                    union all
                    select source_file, 0, 1 from raw.events_quarantine where {quarantined}
                )
                group by source_file
            ) as gone
            where m.file_name = gone.source_file"""
    )


def _active_days(con, identifiers: set[tuple[str, str]]) -> tuple[date, date] | None:
    """First and last day of the people's events (None: none loaded)."""
    first, last = con.execute(
        "select min(event_at)::date, max(event_at)::date from raw.events "
        "where user_id in (select unnest(?::varchar[])) "
        "or anonymous_id in (select unnest(?::varchar[]))",
        [
            [i for t, i in identifiers if t == "user"],
            [i for t, i in identifiers if t == "anonymous"],
        ],
    ).fetchone()
    return (first, last) if first else None


def _tombstone(con, settings: Settings, identifiers: set[tuple[str, str]]) -> None:
    key = privacy_key(settings)
    con.executemany(
        "insert or ignore into privacy.erasure_tombstones values (?, ?, now()::timestamp)",
        [(keyed_hash(key, t, i), key_id(key)) for t, i in sorted(identifiers)],
    )


@contextmanager
def _connect_waiting(
    settings: Settings, wait_minutes: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection, waiting for the step that holds the warehouse to finish."""
    deadline = time.monotonic() + wait_minutes * 60
    while True:
        opening = connect(settings)
        try:
            con = opening.__enter__()
            break
        except WarehouseBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(WAIT_SECONDS)
    try:
        yield con
    finally:
        opening.__exit__(None, None, None)


def rewrite_warehouse(settings: Settings) -> None:
    """Copy the warehouse into a fresh file and swap it in: deleted rows leave no bytes."""
    path = settings.warehouse_path
    fresh = path.with_name(f".{path.name}.{os.getpid()}.rewrite")
    fresh.unlink(missing_ok=True)
    try:
        create_database(fresh)
        with duckdb.connect() as con:
            con.execute(f"attach '{path}' as warehouse (read_only)")
            con.execute(f"attach '{fresh}' as fresh")
            con.execute("copy from database warehouse to fresh")
            con.execute("detach fresh")
            con.execute("detach warehouse")
        fresh.chmod(path.stat().st_mode & 0o777)
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)


def _scrub_lines(data: bytes, regex: re.Pattern[bytes]) -> tuple[bytes, int]:
    """JSON Lines without the lines that quote an id."""
    kept, removed = [], 0
    for line in data.splitlines(keepends=True):
        if regex.search(line):
            removed += 1
        else:
            kept.append(line)
    return b"".join(kept), removed


def _scrub_csv(data: bytes, needles: set[str]) -> tuple[bytes, int]:
    """CSV without the rows with an id as a whole field (a BOM and the header kept)."""
    bom = data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    kept = [rows[0]] + [r for r in rows[1:] if not needles.intersection(r)] if rows else []
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(kept)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode(), len(rows) - len(kept)


def _scrub_parquet(path: Path, needles: set[str]) -> tuple[bytes, int]:
    with duckdb.connect() as con:
        con.register("_needles", pd.DataFrame({"n": sorted(needles)}, dtype=object))
        columns = [d[0] for d in con.execute(f"select * from '{path}' limit 0").description]
        # Snowflake's exports name columns in upper case
        ids = [c for c in columns if c.lower() in ID_COLUMNS or c.lower() in SOURCE_ID_COLUMNS]
        if not ids:
            return path.read_bytes(), 0
        hit = " or ".join(
            f'coalesce("{c}"::varchar in (select n from _needles), false)' for c in ids
        )
        removed = con.execute(f"select count(*) from '{path}' where {hit}").fetchone()[0]
        if not removed:
            return path.read_bytes(), 0
        out = path.with_name(f".{path.name}.scrubbed")
        con.execute(f"copy (select * from '{path}' where not ({hit})) to '{out}' (format parquet)")
        data = out.read_bytes()
        out.unlink()
        return data, removed


def scrub_file(path: Path, needles: set[str]) -> int:
    """Rewrite `path` without the records of the erased ids; returns records removed."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    if base.endswith(".parquet"):
        data, removed = _scrub_parquet(path, needles)
    else:
        raw = path.read_bytes()
        if gz:
            raw = gzip.decompress(raw)
        if base.endswith(".csv"):
            data, removed = _scrub_csv(raw, needles)
        else:
            data, removed = _scrub_lines(raw, needle_pattern(needles))
        if gz:
            data = gzip.compress(data, mtime=0)
    if removed:
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)
    return removed


def redact_file(path: Path, regex: re.Pattern[bytes]) -> int:
    """Replace each erased id in a report or log (GX results, Data Docs, Airflow task logs)
    with [erased], keeping the rest of the record; returns replacements."""
    data = path.read_bytes()
    redacted, count = regex.subn(b"[erased]", data)
    if count:
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(redacted)
        os.replace(partial, path)
    return count


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _follow_manifest(path: Path, removed: int) -> None:
    """Keep the manifest beside an export or message file true: rows and checksums."""
    for manifest in (path.with_name(path.name + ".manifest.json"), path.with_name("manifest.json")):
        if not manifest.exists():
            continue
        data = json.loads(manifest.read_text("utf-8"))
        if data.get("file") == path.name:  # an audience export
            data["rows"] -= removed
            data["sha256"] = _sha256(path)
        elif path.name in data.get("files", {}):  # a trigger destination's run folder
            data["files"][path.name]["sha256"] = _sha256(path)
            if path.suffix == ".jsonl":
                data["rows"] -= removed
        else:
            continue
        partial = manifest.with_name(f".{manifest.name}.partial")
        partial.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
        os.replace(partial, manifest)


def _scrub_home_files(con, settings: Settings, needles: set[str]) -> dict[str, int]:
    """Rewrite landing dumps, audience CSVs and message files; returns folder -> files."""
    rewritten: dict[str, int] = {}
    landing = [p for p in settings.landing_dir.rglob("*") if p.is_file()]
    for path in landing:
        if scrub_file(path, needles):
            rewritten["landing"] = rewritten.get("landing", 0) + 1
            # the manifest (keyed by file name, as ingest is) describes the file as it is now,
            # so the next nightly ingest skips it rather than refusing changed content
            con.execute(
                "update raw.load_manifest set content_sha256 = ?, file_bytes = ? "
                "where file_name = ?",
                [_sha256(path), path.stat().st_size, path.name],
            )
    for folder, patterns in (
        (settings.export_dir, ("*.csv",)),
        (settings.activation_dir, ("messages.jsonl", "messages.csv")),
    ):
        for pattern in patterns:
            for path in folder.rglob(pattern) if folder.exists() else ():
                removed = scrub_file(path, needles)
                if removed:
                    _follow_manifest(path, removed)
                    rewritten[folder.name] = rewritten.get(folder.name, 0) + 1
    regex = needle_pattern(needles)
    for folder in (settings.gx_dir, settings.home / "airflow" / "logs"):
        for path in folder.rglob("*") if folder.exists() else ():
            if (
                path.is_file()
                and path.suffix in (".json", ".html", ".log")
                and redact_file(path, regex)
            ):
                rewritten[folder.name] = rewritten.get(folder.name, 0) + 1
    if deleted := forget_spark_copies(settings):
        rewritten["spark (deleted)"] = deleted
    return rewritten


def erase(
    settings: Settings, requests: list[Request], *, reason: str | None, wait_minutes: float = 10
) -> Erasure:
    """Forget the requested people everywhere (module docstring); idempotent."""
    from microseg.publish import publish

    require_warehouse(settings)
    requested_at = datetime.utcnow().replace(microsecond=0)
    with _connect_waiting(settings, wait_minutes) as con:
        for ddl in PRIVACY_DDL:
            con.execute(ddl)
        identifiers, people, persons = _resolve(con, stored_requests(settings, requests))
        erasure = Erasure(uuid.uuid4().hex, len(people), len(identifiers))
        active = _active_days(con, identifiers)
        con.execute("begin transaction")
        as_asked = {r.value for r in requests}
        erasure.rows_deleted = _delete_everywhere(con, identifiers, persons, as_asked)
        _tombstone(con, settings, identifiers)
        con.execute("commit")
        # the stored ids, and the ids as asked: landing dumps hold them in clear
        needles = {i for _, i in identifiers} | persons | as_asked
        erasure.files_rewritten = _scrub_home_files(con, settings, needles)
        con.execute(
            """insert into privacy.erasure_log (request_id, requested_at, completed_at, reason,
                   identifiers, people, rows_deleted, files_rewritten)
               values (?, ?, now()::timestamp, ?, ?, ?, ?, ?)""",
            [
                erasure.request_id,
                requested_at,
                reason,
                erasure.identifiers,
                erasure.people,
                json.dumps(erasure.rows_deleted),
                json.dumps(erasure.files_rewritten),
            ],
        )
    if active is not None:
        erasure.models_to_retrain = flag_for_retraining(settings, active, erasure.request_id)
        with connect(settings) as con:
            con.execute(
                "update privacy.erasure_log set models_to_retrain = ? where request_id = ?",
                [json.dumps(erasure.models_to_retrain), erasure.request_id],
            )
    rewrite_warehouse(settings)
    if settings.analytics_path.exists():
        publish(settings)
        erasure.republished = True
    return erasure
