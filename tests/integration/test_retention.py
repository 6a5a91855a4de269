"""Raw retention: old events go from every event-grain table and landing, the facts stay."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from microseg.config import PROJECT_ROOT, Settings
from microseg.ingest import ingest_paths
from microseg.privacy.retention import EVENT_COPIES, expire
from microseg.quality import validate_raw
from microseg.transform import transform
from microseg.warehouse import FILE_ACCOUNTING_SQL
from tests.helpers import query, run_cli, warehouse_differences

RETENTION_DAYS = 8  # the default segments.yml looks back 7 days at events
NIGHT = date(2026, 10, 11)  # days 1-10 built; sessions ended before 10-03 expire
HORIZON = NIGHT - timedelta(days=RETENTION_DAYS)
ID_TABLE = "intermediate.int_identities_stitched"
# Facts keyed by person (dim_persons has every person they name)
PERSON_FACTS = (
    "marts.fct_sessions",
    "marts.fct_page_views",
    "marts.fct_element_interactions",
    "marts.fct_session_micro_behaviors",
    "intermediate.int_person_days",
    "intermediate.int_person_category_days",
    "marts.fct_user_features_daily",
    "marts.fct_person_category_daily",
)
# Everything built from events, which retention must leave exactly as it was
FACTS = (
    *PERSON_FACTS,
    "marts.dim_persons",
    ID_TABLE,
    "marts.consent_ledger",
    "marts.consent_periods",
)


def _env(triggers: Path) -> dict[str, str]:
    return {
        "MICROSEG_RAW_RETENTION_DAYS": str(RETENTION_DAYS),
        "MICROSEG_LATE_ARRIVAL_HOURS": "96",  # late deliveries get in, as in one build of all
        "MICROSEG_TRIGGERS_FILE": str(triggers),
    }


def _settings(root: Path, **env: str) -> Settings:
    return Settings.from_env({"MICROSEG_HOME": str(root), **env})


def _facts(settings: Settings) -> dict[str, list[tuple]]:
    return {t: sorted(query(settings, f"select * from {t}"), key=repr) for t in FACTS}


@pytest.fixture(scope="module")
def short_baselines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default triggers with 7-day percentile baselines (28 would need 29 days)."""
    path = tmp_path_factory.mktemp("triggers") / "triggers.yml"
    default = (PROJECT_ROOT / "triggers.yml").read_text("utf-8")
    assert "baseline_days: 28" in default
    path.write_text(default.replace("baseline_days: 28", "baseline_days: 7"), "utf-8")
    return path


@pytest.fixture(scope="module")
def kept(
    twelve_days: Path, short_baselines: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Days 1-10 delivered to landing, ingested and built (day 10 by a night of its own: the
    newest build's sessions are kept until the next), with 8 days of raw retention."""
    root = tmp_path_factory.mktemp("retention")
    settings = _settings(root, **_env(short_baselines))
    settings.landing_dir.mkdir(parents=True)
    for days in (slice(0, 9), slice(9, 10)):
        for path in sorted(twelve_days.glob("events_*"))[days]:
            shutil.copy(path, settings.landing_dir)
        ingest_paths(settings, [settings.landing_dir])
        transform(settings)
    return settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MICROSEG_TRIGGERS_FILE": "short"},
            "MICROSEG_RAW_RETENTION_DAYS=7 keeps fewer days of events than trigger "
            "'unusual_product_dwell' reads (7 days back): keep at least 8",
        ),
        (  # the default triggers' percentile baseline reads 28 days of sessions
            {"MICROSEG_RAW_RETENTION_DAYS": "8"},
            "MICROSEG_RAW_RETENTION_DAYS=8 keeps fewer days of events than trigger "
            "'unusual_product_dwell' reads (28 days back): keep at least 29",
        ),
        (
            {"MICROSEG_TRIGGERS_FILE": "short", "MICROSEG_LATE_ARRIVAL_HOURS": "192"},
            "MICROSEG_RAW_RETENTION_DAYS=7 is within MICROSEG_LATE_ARRIVAL_HOURS=192: "
            "keep events longer than late ones may come",
        ),
    ],
)
def test_a_retention_shorter_than_rules_or_late_events_need_is_refused(
    kept: Settings, short_baselines: Path, env: dict[str, str], message: str
) -> None:
    env = {"MICROSEG_RAW_RETENTION_DAYS": "7", **env}
    if env.get("MICROSEG_TRIGGERS_FILE") == "short":
        env["MICROSEG_TRIGGERS_FILE"] = str(short_baselines)
    result = run_cli("privacy", "expire", "--as-of", NIGHT.isoformat(), home=kept.home, env=env)
    assert (result.returncode, result.stderr.strip()) == (2, f"error: {message}")


def test_old_events_go_everywhere_and_every_fact_stays(
    kept: Settings, twelve_days: Path, twelve_days_home: Path, tmp_path: Path
) -> None:
    facts = _facts(kept)
    landing = {p.name for p in kept.landing_dir.iterdir()}

    done = expire(kept, NIGHT)

    assert done.events_before == HORIZON and done.events > 10_000
    # no event of a session ended before the horizon is left in any event-grain table (the
    # day before it: a session crossing midnight may end after it), but those of the activity
    # runs the newest build rewrote (a login re-attributed them) and consent records
    newest = """select event_id from intermediate.int_events_sessionized
        where (person_id, activity_run_start_at) in (
            select (person_id, activity_run_start_at) from intermediate.int_events_sessionized
            where batch = (select max(batch) from intermediate.int_events_sessionized))"""
    for table in ("raw.events", "staging.stg_events", *EVENT_COPIES):
        # raw and staging keep consent records; built tables keep nothing expired
        records = "" if table.startswith("intermediate.") else "and event_type <> 'consent'"
        left = query(
            kept,
            f"""select count(*) from {table} where event_at < ? and event_id not in ({newest})
                {records}""",
            [HORIZON - timedelta(days=1)],
        )[0][0]
        assert left == 0, table
    consents = "select count(*) from staging.stg_events where event_type = 'consent'"
    assert query(kept, consents + " and event_at < ?", [HORIZON])[0][0] > 0
    assert _facts(kept) == facts
    # the first days' landing files still hold quarantined lines (kept 30 days after loading);
    # the manifest accounts for every row
    assert {p.name for p in kept.landing_dir.iterdir()} == landing
    assert validate_raw(kept, NIGHT).success
    assert query(kept, "select sum(rows_expired) from raw.load_manifest")[0][0] == (
        done.events + done.unbuilt_events
    )

    # again for the same date: nothing changes; an incremental build changes no fact either
    copy = _settings(tmp_path)
    shutil.copy(kept.warehouse_path, copy.warehouse_path)
    assert expire(kept, NIGHT).events == 0
    assert warehouse_differences(kept, copy) == {}
    transform(kept)
    assert _facts(kept) == facts

    # a mistyped date far ahead would freeze every fact before it: refused
    env = _env(kept.triggers_file)
    typo = run_cli("privacy", "expire", "--as-of", "2027-10-11", home=kept.home, env=env)
    assert (typo.returncode, typo.stderr.strip()) == (
        2,
        "error: --as-of 2027-10-11 is more than MICROSEG_QUIET_DAYS_MAX=7 days after the "
        "newest event (2026-10-10): retention counts back from a night the pipeline runs",
    )

    # a full refresh would rebuild the old facts from nothing: refused, saying why
    result = run_cli("transform", "--full-refresh", home=kept.home)
    assert result.returncode == 1
    assert (
        "a full refresh would rebuild sessions and features from the events kept since "
        f"{HORIZON} and lose the older ones" in result.stderr
    )
    assert _facts(kept) == facts

    # a device whose sessions all expired logs in: its anonymous person merges into the user
    # and leaves every fact table (what a full history would do with them is out of reach);
    # no row is left behind for a person that no longer exists
    device, merged = query(
        kept,
        """select any_value(sessions.anonymous_id), person_id
           from marts.fct_sessions as sessions join marts.dim_persons using (person_id)
           where dim_persons.user_id is null and dim_persons.devices = 1
           group by person_id having max(session_end_at) < ?
           order by person_id limit 1""",
        [HORIZON - timedelta(days=1)],
    )[0]
    login = tmp_path / "login.jsonl"
    login.write_text(
        json.dumps(
            {
                "event_id": "login-after-the-horizon",
                "event_type": "identify",
                "event_at": "2026-10-10T12:00:00Z",
                "anonymous_id": device,
                "user_id": "user_9999999",
            }
        )
        + "\n"
    )
    ingest_paths(kept, [login])
    transform(kept)
    for table in PERSON_FACTS:
        orphans = query(
            kept,
            f"""select count(*) filter (where person_id = ?),
                       count(*) filter (where person_id not in (
                           select person_id from marts.dim_persons))
                from {table}""",
            [merged],
        )[0]
        assert orphans == (0, 0), table

    # the next days build on the kept facts: every feature of a person whose identity did
    # not change since is what a warehouse that kept everything computed
    identities = (
        "select person_id, string_agg(identifier, ' ' order by identifier) from {} group by all"
    )
    before = set(query(kept, identities.format(ID_TABLE)))
    for path in sorted(twelve_days.glob("events_*"))[10:]:
        shutil.copy(path, kept.landing_dir)
    ingest_paths(kept, [kept.landing_dir])
    transform(kept)
    unchanged = [p for p, ids in query(kept, identities.format(ID_TABLE)) if (p, ids) in before]
    everything = _settings(twelve_days_home).warehouse_path
    stable, only_kept, only_everything = query(
        kept,
        f"""attach '{everything}' as everything (read_only);
            with
            stable as (
                select p from ({identities.format(ID_TABLE)}) as kept_ids (p, ids)
                join ({identities.format("everything." + ID_TABLE)}) as all_ids (p, ids)
                    using (p, ids)
                where p in (select unnest(?::varchar[]))
            ),
            kept as (
                select * from marts.fct_user_features_daily
                where person_id in (select p from stable)
            ),
            full_history as (
                select * from everything.marts.fct_user_features_daily
                where person_id in (select p from stable)
            )
            select (select count(*) from stable),
                   (select count(*) from (from kept except all from full_history)),
                   (select count(*) from (from full_history except all from kept))""",
        [unchanged],
    )[0]
    assert stable > 500
    assert (only_kept, only_everything) == (0, 0)

    # the files were loaded long ago, so their quarantined lines are past their limit too: a
    # night later nothing of the first days' files is kept but consent records, and they go
    with duckdb.connect(str(kept.warehouse_path)) as con:
        con.execute("update raw.load_manifest set loaded_at = '2026-10-01'")
    lines = query(kept, "select count(*) from raw.events_quarantine")[0][0]
    later = _settings(kept.home, **_env(kept.triggers_file), MICROSEG_QUARANTINE_RETENTION_DAYS="1")
    done = expire(later, NIGHT + timedelta(days=1))
    assert done.quarantined == lines > 0
    gone = landing - {p.name for p in kept.landing_dir.iterdir()}
    assert {"events_2026-10-01.jsonl.gz", "events_2026-10-02.jsonl.gz"} <= gone
    assert "events_2026-10-10.jsonl.gz" not in gone and done.landing_files == len(gone)
    report = run_cli(
        "privacy", "report", home=kept.home, env={"MICROSEG_RAW_RETENTION_DAYS": "8"}
    ).stdout
    expired = query(
        kept,
        "select sum(events_expired), sum(unbuilt_events_expired) from raw.retention_runs",
    )[0]
    assert (
        f"retention: raw events 8 days, quarantined lines 30 days, consent events until "
        f"erasure; deleted so far: {expired[0]:,} events (sessions ended before "
        f"{HORIZON + timedelta(days=1)}) + {expired[1]:,} never built, {lines:,} quarantined "
        f"lines, {len(gone)} landing files"
    ) in report.splitlines()
    accounting = query(
        kept,
        f"""select sum(abs(rows_unaccounted)), sum(abs(quarantine_rows_not_in_manifest)),
                   sum(abs(events_not_in_manifest))
            from ({FILE_ACCOUNTING_SQL})""",
    )
    assert accounting == [(0, 0, 0)]
