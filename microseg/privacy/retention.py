"""Retention: raw events and quarantined lines are kept no longer than the settings allow.

MICROSEG_RAW_RETENTION_DAYS=N: the run as of D deletes the events of sessions that ended
before D - N days from raw.events and from their event-grain copies (staging, intermediate).
The facts built from them stay (sessions, page views, person-days, features, segments,
scores), final: dbt never rewrites facts dated before the horizon and refuses a full refresh
(macros/retention.sql); identity stitching keeps its links (int_identity_links). Sessions the
newest dbt build wrote stay until a later build: re-running that build replays them. Consent
events stay in raw and staging as the record of what each person agreed to, until the person
is erased. Events that never reached a session (later than the lookback, or with placeholder
ids only) go once older than the horizon, counted apart. A landing file goes once nothing it
delivered is kept but consent records.

MICROSEG_QUARANTINE_RETENTION_DAYS (30): quarantined lines of files loaded more than that
before D are deleted. Both move the rows to rows_expired in raw.load_manifest, so the file
accounting still adds up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from microseg.activation.grammar import Trigger, load_triggers
from microseg.config import Settings
from microseg.errors import ConfigError, UsageError
from microseg.lake import forget_spark_copies
from microseg.segments.grammar import Segment, load_segments
from microseg.warehouse import connect, has_table, require_warehouse

# Event-grain tables built from staging: their rows of expired sessions go, consent included
EVENT_COPIES = (
    "intermediate.int_events_stitched",
    "intermediate.int_events_sessionized",
    "intermediate.int_events_paged",
    "intermediate.int_late_events",
)
# Events raw and staging keep whatever their age: the record of consent (marts.consent_ledger)
RECORD_EVENT_TYPES = ("consent",)
# Segment rule fields that look back at events, in days (segments/grammar.py)
EVENT_LOOKBACK_FIELDS = ("within_days", "baseline_days")


@dataclass(frozen=True)
class Expiry:
    """What one run deleted (events_before None: raw retention is off)."""

    as_of: date
    events_before: date | None
    events: int
    unbuilt_events: int
    quarantined: int
    landing_files: int


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _lookbacks(node: object) -> list[int]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in EVENT_LOOKBACK_FIELDS and isinstance(v, int)]
        return found + [d for v in node.values() for d in _lookbacks(v)]
    if isinstance(node, list):
        return [d for v in node for d in _lookbacks(v)]
    return []


def check_event_lookback(settings: Settings, definitions: list[tuple[str, dict]]) -> None:
    """Refuse a retention shorter than the events that segments and triggers read, as
    (label, plan) pairs: a rule over the sessions of W days (within_days, a percentile's
    baseline_days) reads their events; W + 1 leaves a day's margin for windows counted from a
    trigger's cutoff. Or shorter than the incremental lookback: late events would join
    expired sessions."""
    if settings.raw_retention_days is None:
        return
    lookback = settings.late_arrival_hours or 0
    if settings.raw_retention_days * 24 <= lookback:
        raise ConfigError(
            f"MICROSEG_RAW_RETENTION_DAYS={settings.raw_retention_days} is within "
            f"MICROSEG_LATE_ARRIVAL_HOURS={lookback:g}: keep events longer than late ones may come"
        )
    if not definitions:
        return
    days, label = max((max(_lookbacks(plan), default=0), label) for label, plan in definitions)
    if settings.raw_retention_days <= days:
        raise ConfigError(
            f"MICROSEG_RAW_RETENTION_DAYS={settings.raw_retention_days} keeps fewer days of "
            f"events than {label} reads ({days} days back): keep at least {days + 1}"
        )


def reading_events(segments: list[Segment], triggers: list[Trigger]) -> list[tuple[str, dict]]:
    """The (label, plan) pairs check_event_lookback weighs."""
    return [(f"segment {s.name!r}", s.plan) for s in segments] + [
        (f"trigger {t.name!r}", t.plan) for t in triggers
    ]


def expire(settings: Settings, as_of: date) -> Expiry:
    """Delete what the retention settings no longer allow to keep, as of `as_of`."""
    require_warehouse(settings)
    events_before = None
    if settings.raw_retention_days is not None:
        segments = load_segments(settings.segments_file)
        triggers = load_triggers(settings.triggers_file).triggers
        check_event_lookback(settings, reading_events(segments, triggers))
        events_before = as_of - timedelta(days=settings.raw_retention_days)
    loaded_before = as_of - timedelta(days=settings.quarantine_retention_days)
    with connect(settings) as con:
        _refuse_far_dates(con, settings, as_of)
        con.execute("begin transaction")
        events, unbuilt = _expire_events(con, events_before) if events_before else (0, 0)
        quarantined = _expire_quarantine(con, loaded_before)
        gone = _emptied_landing_files(con, settings.landing_dir)
        if events or unbuilt or quarantined or gone:
            con.execute(
                """insert into raw.retention_runs values (?, ?, ?, ?, ?, ?, now()::timestamp)
                   on conflict (as_of_date) do update set
                       events_before = greatest(events_before, excluded.events_before),
                       events_expired = events_expired + excluded.events_expired,
                       unbuilt_events_expired =
                           unbuilt_events_expired + excluded.unbuilt_events_expired,
                       quarantined_expired = quarantined_expired + excluded.quarantined_expired,
                       landing_files_deleted =
                           landing_files_deleted + excluded.landing_files_deleted""",
                [as_of, events_before, events, unbuilt, quarantined, len(gone)],
            )
        con.execute("commit")
        con.execute("checkpoint")
    for path in gone:  # after the commit: a failed run leaves every file in place
        path.unlink(missing_ok=True)
    if events or unbuilt:
        forget_spark_copies(settings)  # its raw export still holds them
    return Expiry(as_of, events_before, events, unbuilt, quarantined, len(gone))


def _refuse_far_dates(con, settings: Settings, as_of: date) -> None:
    """A date past the nights the data allows (a typo) would freeze every fact before it."""
    newest = con.execute(
        "select max(event_at)::date from raw.events where event_at < ?", [as_of]
    ).fetchone()[0]
    if newest is not None and (as_of - newest).days - 1 > settings.quiet_days_max:
        raise UsageError(
            f"--as-of {as_of} is more than MICROSEG_QUIET_DAYS_MAX={settings.quiet_days_max} "
            f"days after the newest event ({newest}): retention counts back from a night the "
            "pipeline runs"
        )


def _expire_events(con, events_before: date) -> tuple[int, int]:
    """Delete the expired events everywhere; returns (events of sessions, unbuilt events)."""
    if not has_table(con, "marts", "fct_sessions"):
        return 0, 0  # nothing built yet: nothing is final
    records = _sql_list(RECORD_EVENT_TYPES)
    con.execute(
        f"""create or replace temp table _expired as
            select events.event_id, false as unbuilt, events.event_type in ({records}) as kept_raw
            from intermediate.int_events_paged as events
            join marts.fct_sessions as sessions using (session_id)
            where sessions.session_end_at < $1::timestamp
              -- a re-run of the last build replays its batch, and sessions again from the
              -- start of each activity run the batch holds: those runs stay whole
              and not exists (
                  select 1 from intermediate.int_events_sessionized as latest
                  where latest.batch = (
                          select max(batch) from intermediate.int_events_sessionized)
                    and latest.person_id = events.person_id
                    and latest.activity_run_start_at = events.activity_run_start_at)
            union all
            select event_id, true, false
            from staging.stg_events
            where event_at < $1::timestamp
              and event_type not in ({records})
              and event_id not in (
                  select event_id from intermediate.int_events_sessionized)""",
        [events_before],
    )
    gone = "select event_id from _expired where not kept_raw"
    _count_expired(
        con, "rows_loaded", f"select source_file from raw.events where event_id in ({gone})"
    )
    counts = dict(
        con.execute(
            "select expired.unbuilt, count(*) from raw.events "
            "join _expired as expired using (event_id) where not expired.kept_raw group by all"
        ).fetchall()
    )
    # consent records stay in raw and staging (the ledger's source); sessions go whole
    for table, expired in (
        ("raw.events", gone),
        ("staging.stg_events", gone),
        *((t, "select event_id from _expired") for t in EVENT_COPIES),
    ):
        schema, name = table.split(".")
        if has_table(con, schema, name):
            con.execute(f"delete from {table} where event_id in ({expired})")
    return counts.get(False, 0), counts.get(True, 0)


def _count_expired(con, column: str, rows: str, params: list | None = None) -> None:
    """Move the rows about to go (`rows` selects their source_file) from `column` to
    rows_expired in raw.load_manifest, so each file's accounting still adds up."""
    con.execute(
        f"""update raw.load_manifest as manifest
            set {column} = manifest.{column} - gone.rows,
                rows_expired = coalesce(manifest.rows_expired, 0) + gone.rows
            from (select source_file, count(*) as rows from ({rows}) group by all) as gone
            where manifest.file_name = gone.source_file""",
        params or [],
    )


def _expire_quarantine(con, loaded_before: date) -> int:
    """Delete the quarantined lines of files loaded before `loaded_before`; returns lines."""
    files = "select file_name from raw.load_manifest where loaded_at < ?::timestamp"
    _count_expired(
        con,
        "rows_quarantined",
        f"select source_file from raw.events_quarantine where source_file in ({files})",
        [loaded_before],
    )
    return con.execute(
        f"delete from raw.events_quarantine where source_file in ({files})", [loaded_before]
    ).fetchone()[0]


def _emptied_landing_files(con, landing_dir: Path) -> list[Path]:
    """Landing files with expired rows of which nothing but consent records is kept."""
    records = _sql_list(RECORD_EVENT_TYPES)
    rows = con.execute(
        f"""select file_path from raw.load_manifest as manifest
            where rows_expired > 0
              and not exists (
                  select 1 from raw.events
                  where source_file = manifest.file_name
                    and event_type not in ({records}))
              and not exists (
                  select 1 from raw.events_quarantine
                  where source_file = manifest.file_name)"""
    ).fetchall()
    landing = landing_dir.resolve()
    paths = [Path(p).resolve() for (p,) in rows]
    return [p for p in paths if p.is_relative_to(landing) and p.exists()]
