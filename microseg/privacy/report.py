"""`microseg privacy report`: consent coverage per purpose, and where personal data lives.

For the data team answering "what do we hold about people, and may we act on them?": each
configured purpose with how many people may be acted on as of a date (and why not: denied,
withdrawn), then every warehouse table with a column that identifies or describes a person
(rows, oldest row) and the files under MICROSEG_HOME that copy people out of the warehouse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from microseg.config import Settings
from microseg.errors import UsageError
from microseg.privacy.consent import consent_policy
from microseg.privacy.erase import ID_COLUMNS, LIST_COLUMNS, TEXT_COLUMNS
from microseg.warehouse import connect, has_table

# Columns that identify a person (what erasure deletes by) or can hold what they typed or
# where they were.
PERSONAL_COLUMNS = (
    *ID_COLUMNS,
    *LIST_COLUMNS,
    *TEXT_COLUMNS,
    "page_url",
    "referrer",
    "properties",
    "search_query",
)
# Folders of MICROSEG_HOME whose files hold people's ids or events.
PERSONAL_FOLDERS = ("landing", "exports", "activation", "mlartifacts", "gx")


@dataclass(frozen=True)
class PurposeCoverage:
    purpose: str
    default: str
    uses: tuple[str, ...]
    people: int
    may_act: int  # granted on the date and still granted
    by_default: int  # of may_act: no statement, the default holds
    denied: int
    withdrawn: int


def consent_coverage(settings: Settings, as_of: date) -> list[PurposeCoverage]:
    """People per configured purpose as of `as_of`: who may be acted on, and who not, why."""
    policy = consent_policy()
    with connect(settings, read_only=True) as con:
        if not has_table(con, "marts", "consent_periods"):
            raise UsageError("no consent periods yet: run `microseg transform` first")
        rows = con.execute(
            """select purpose, count(*),
                      count(*) filter (where marts.has_consent(person_id, purpose, $as_of)),
                      count(*) filter (where marts.has_consent(person_id, purpose, $as_of)
                                         and statement = 'default'),
                      count(*) filter (where state = 'denied'),
                      count(*) filter (where state = 'withdrawn')
               from marts.consent_periods
               where marts.consent_in_force(valid_from, valid_to, $as_of)
               group by purpose""",
            {"as_of": as_of},
        ).fetchall()
    counts = {row[0]: row[1:] for row in rows}
    return [
        PurposeCoverage(
            purpose,
            default,
            tuple(use for use, p in policy.purpose_of.items() if p == purpose),
            *counts.get(purpose, (0, 0, 0, 0, 0)),
        )
        for purpose, default in policy.defaults.items()
    ]


def personal_tables(settings: Settings) -> list[tuple[str, int, tuple[str, ...], object]]:
    """(schema.table, rows, personal columns, oldest value of its first date/time column)."""
    with connect(settings, read_only=True) as con:
        columns = con.execute(
            """select table_schema || '.' || table_name, column_name, data_type
               from information_schema.columns
               where table_schema not in ('information_schema', 'pg_catalog')
               order by table_schema, table_name, ordinal_position"""
        ).fetchall()
        tables: dict[str, tuple[list[str], list[str]]] = {}
        for table, column, kind in columns:
            personal, times = tables.setdefault(table, ([], []))
            if column in PERSONAL_COLUMNS:
                personal.append(column)
            if kind in ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE"):
                times.append(column)
        found = []
        for table, (personal, times) in tables.items():
            if not personal:
                continue
            oldest = f"min({times[0]})" if times else "null"
            rows, first = con.execute(f"select count(*), {oldest} from {table}").fetchone()
            found.append((table, rows, tuple(personal), first))
    return found


def personal_files(settings: Settings) -> list[tuple[str, int, int, datetime | None]]:
    """(folder, files, bytes, oldest modification) of the folders that copy people out."""
    found = []
    for name in PERSONAL_FOLDERS:
        files = [p for p in (settings.home / name).rglob("*") if p.is_file()]
        stats = [p.stat() for p in files]
        oldest = _utc(min(s.st_mtime for s in stats)) if stats else None
        found.append((name, len(files), sum(s.st_size for s in stats), oldest))
    found.append(("analytics.duckdb", *_file_line(settings.analytics_path)))
    return found


def _retention_line(settings: Settings) -> str:
    """The retention settings, and what they deleted so far (raw.retention_runs)."""
    with connect(settings, read_only=True) as con:
        before, events, unbuilt, quarantined, files = (
            con.execute(
                "select max(events_before), sum(events_expired), sum(unbuilt_events_expired), "
                "sum(quarantined_expired), sum(landing_files_deleted) from raw.retention_runs"
            ).fetchone()
            if has_table(con, "raw", "retention_runs")
            else (None,) * 5
        )
    kept = (
        f"raw events {settings.raw_retention_days} days"
        if settings.raw_retention_days
        else "raw events forever (MICROSEG_RAW_RETENTION_DAYS unset)"
    )
    done = (
        f"; deleted so far: {events or 0:,} events (sessions ended before {before}) + "
        f"{unbuilt or 0:,} never built, {quarantined or 0:,} quarantined lines, "
        f"{files or 0:,} landing files"
        if events is not None
        else "; nothing deleted yet"
    )
    return (
        f"retention: {kept}, quarantined lines {settings.quarantine_retention_days} days, "
        f"consent events until erasure{done}"
    )


def _file_line(path: Path) -> tuple[int, int, datetime | None]:
    if not path.exists():
        return 0, 0, None
    stat = path.stat()
    return 1, stat.st_size, _utc(stat.st_mtime)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None, microsecond=0)


def print_privacy_report(settings: Settings, as_of: date) -> None:
    print(f"consent as of {as_of} (may act: granted then and not withdrawn since):")
    print(
        f"  {'purpose':<16} {'default':<8} {'people':>8} {'may act':>8} {'by default':>10} "
        f"{'denied':>8} {'withdrawn':>9}  used by"
    )
    for c in consent_coverage(settings, as_of):
        print(
            f"  {c.purpose:<16} {c.default:<8} {c.people:>8,} {c.may_act:>8,} "
            f"{c.by_default:>10,} {c.denied:>8,} {c.withdrawn:>9,}  {', '.join(c.uses) or '-'}"
        )
    print("personal data in the warehouse (tables with person ids, URLs or raw input):")
    for table, rows, personal, oldest in personal_tables(settings):
        since = str(oldest or "-")[:19]
        print(f"  {table:<42} {rows:>10,} rows  oldest {since:<19}  {', '.join(personal)}")
    print(_retention_line(settings))
    print(f"personal data in files under {settings.home}:")
    for folder, count, size, oldest in personal_files(settings):
        print(f"  {folder:<42} {count:>6,} files {size / 1e6:>9.1f} MB  oldest {oldest or '-'}")
