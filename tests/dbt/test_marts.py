"""The dbt marts, built for real by `dbt build`, checked against the generator's ground truth."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from microseg.config import Settings, dbt_project_vars
from microseg.errors import MicrosegError
from microseg.generate import GeneratorConfig, generate
from microseg.ingest import ingest_paths
from microseg.transform import failed_nodes, run_dbt, transform
from tests.helpers import MARTS, query, run_cli, truth_connection


@pytest.fixture(scope="module")
def con(built, small_dataset):
    connection = truth_connection(built, small_dataset)
    yield connection
    connection.close()


def test_every_person_has_the_planted_sessions(con) -> None:
    mismatches = con.execute("""
        with planted as (
            select person_key, count(*) as sessions from truth_sessions group by all
        ),
        found as (select person_id, count(*) as sessions from marts.fct_sessions group by all)
        select p.person_key, planted.sessions, found.sessions
        from truth_people p
        join planted using (person_key)
        left join found using (person_id)
        where found.sessions is distinct from planted.sessions
    """).fetchall()
    assert mismatches == []
    # and nobody who was not planted
    extra = con.execute(
        "select count(*) from marts.dim_persons "
        "where person_id not in (select person_id from truth_people)"
    ).fetchone()
    assert extra == (0,)


def test_cross_device_people_are_stitched_and_households_are_not(con) -> None:
    split = con.execute("""
        select p.person_key, len(p.anonymous_ids), d.devices
        from truth_people p join marts.dim_persons d using (person_id)
        where p.is_registered and len(p.anonymous_ids) > 1
          and not list_has_any(p.anonymous_ids, (select list(identifier) from
                               intermediate.int_identities_stitched where is_shared_device))
          and d.devices <> len(p.anonymous_ids)
    """).fetchall()
    assert split == []
    stitched = con.execute("select count(*) from marts.dim_persons where devices > 1").fetchone()[0]
    assert stitched > 20
    shared = con.execute("""
        select identifier, identity_key from intermediate.int_identities_stitched
        where is_shared_device
    """).fetchall()
    assert shared and all(key == f"anon:{device}" for device, key in shared)


def test_planted_behaviors_surface_in_the_marts(con) -> None:
    """Micro-behavior facts find exactly the sessions the truth says meet each rule."""
    wrong = con.execute("""
        with truth as (
            select t.*, p.person_id
            from truth_sessions t join truth_people p using (person_key)
        ),
        joined as (
            select truth.*, m.*, s.is_bounce
            from truth
            join marts.fct_sessions s
              on s.person_id = truth.person_id
             and s.session_start_at between truth.session_start_at - interval 1 second
                                        and truth.session_start_at + interval 1 second
            join marts.fct_session_micro_behaviors m using (session_id)
        )
        select
            count(*),
            count(*) filter (where subscribe_curious <> (subscribe_hovers >= 2
                                                         and max_articles_within_window >= 3)),
            count(*) filter (where product_hesitation
                             <> coalesce(max_product_dwell_without_cart_s > 120, false)),
            count(*) filter (where cart_abandon <> (cart_adds_without_checkout > 0)),
            count(*) filter (where bounce <> is_bounce),
            -- a deep read is also scrolled and followed by a related click: not in this mart
            count(*) filter (where deep_read and not coalesce(max_article_dwell_s >= 180, false))
        from joined
    """).fetchone()
    matched, *wrong_counts = wrong
    assert matched == con.execute("select count(*) from truth_sessions").fetchone()[0]
    assert wrong_counts == [0, 0, 0, 0, 0]


def test_features_reflect_opt_outs_and_purchases(con) -> None:
    opted = con.execute("""
        select count(*) filter (where p.is_opted_out <> d.is_opted_out), count(*)
        from truth_people p join marts.dim_persons d using (person_id)
        where not p.is_bot
    """).fetchone()
    assert opted[0] == 0 and opted[1] > 200
    # and on each date, as the consent events before it say
    by_date = con.execute("""
        select count(*) filter (where f.is_opted_out
                                      <> truth_opted_out_on(f.person_id, f.as_of_date)),
               count(*) filter (where f.is_opted_out),
               count(distinct f.person_id) filter (where f.is_opted_out
                                                   and not p.is_opted_out)
        from marts.fct_user_features_daily f join truth_people p using (person_id)
        where not p.is_bot
    """).fetchone()
    # some people are opted out on some dates only (they granted again later)
    assert by_date[0] == 0 and by_date[1] >= 10 and by_date[2] > 0, by_date
    # a person's 90-day purchases at the last as-of date are the purchases the generator
    # planted before it (one per purchase session; every day of the data set is within 90)
    diff, buyers = con.execute("""
        with last_row as (
            select * from marts.fct_user_features_daily
            qualify as_of_date = max(as_of_date) over ()
        ),
        planted as (
            select p.person_id, count(*) filter (where s.purchase) as n
            from truth_sessions s join truth_people p using (person_key)
            where s.session_start_at < (select max(as_of_date) from last_row)
            group by all
        )
        select count(*) filter (where coalesce(last_row.purchases_90d, 0)
                                      <> coalesce(planted.n, 0)),
               count(*) filter (where planted.n > 0)
        from last_row full join planted using (person_id)
    """).fetchone()
    assert diff == 0 and buyers > 50


def test_item_interactions_count_every_item_signal_once(con) -> None:
    """marts.fct_person_item_interactions holds per person exactly the planted purchases (one
    per purchase session, anonymous ones included), per item the views, cart adds,
    completions and engaged time of the events (each delivered once), and confidence follows
    the weights of dbt_project.yml."""
    planted_purchases = con.execute("""
        with planted as (
            select p.person_id, count(*) as n
            from truth_sessions s join truth_people p using (person_key)
            where s.purchase group by all
        ),
        found as (
            select person_id, sum(purchases) as n
            from marts.fct_person_item_interactions where purchases > 0 group by all
        )
        select count(*) filter (where p.n is distinct from f.n), count(*)
        from planted p full join found f using (person_id)
    """).fetchone()
    assert planted_purchases[0] == 0 and planted_purchases[1] > 30
    per_item = con.execute("""
        with events as (select distinct on (event_id) * from raw.events),
        counted as (
            select coalesce(properties ->> '$.product_id', content_id) as item_id,
                   count(*) filter (where event_type = 'page_view') as views,
                   10 * count(*) filter (where event_type = 'page_ping') as engaged_s,
                   count(*) filter (where event_type = 'video_complete') as completions,
                   count(*) filter (where event_type = 'add_to_cart') as cart_adds
            from events where page_type in ('article', 'video', 'product') group by all
        ),
        mart as (
            select item_id, sum(views) as views, sum(engaged_s) as engaged_s,
                   sum(video_completions) as completions, sum(cart_adds) as cart_adds
            from marts.fct_person_item_interactions group by all
        )
        select count(*) filter (where (c.views, c.engaged_s, c.completions, c.cart_adds)
                                      is distinct from (m.views, m.engaged_s, m.completions,
                                                        m.cart_adds)),
               count(*)
        from counted c full join mart m using (item_id)
    """).fetchone()
    assert per_item[0] == 0 and per_item[1] > 300
    off_formula = con.execute("""
        select count(*) from marts.fct_person_item_interactions
        where abs(confidence - (5 * purchases + 3 * cart_adds + 2 * video_completions + views
                                + ln(1 + engaged_s / 60))) > 1e-3
    """).fetchone()[0]
    assert off_formula == 0


def _features_until(settings: Settings, as_of: str) -> list[tuple]:
    return query(
        settings,
        "select * from marts.fct_user_features_daily "
        "where as_of_date <= ? order by person_id, as_of_date",
        [as_of],
    )


def test_every_window_counts_exactly_the_days_before_the_as_of_date(tmp_path) -> None:
    """100 days of 40 people, so the 90-day window cuts: on every seventh as-of date each
    person's sessions and purchases over each window of var feature_windows are the sessions
    (and purchase sessions) the generator started in the w days before D."""
    dataset = tmp_path / "hundred_days"
    generate(GeneratorConfig(users=40, days=100, seed=5), dataset)
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    ingest_paths(settings, [dataset])
    transform(settings)
    windows = dbt_project_vars()["feature_windows"]
    checks = [("sessions", "true", w) for w in windows["sessions"]]
    checks += [("purchases", "s.purchase", w) for w in windows["purchases"]]
    with truth_connection(settings, dataset) as con:
        for measure, planted, days in checks:
            wrong, compared, counted = con.execute(f"""
                with truth as (
                    select f.person_id, f.as_of_date, count(s.session) filter (where {planted}) as n
                    from marts.fct_user_features_daily f
                    join truth_people p using (person_id)
                    left join truth_sessions s
                      on s.person_key = p.person_key
                     and s.session_start_at >= f.as_of_date - {days}
                     and s.session_start_at < f.as_of_date
                    where date_diff('day', date '2026-10-01', f.as_of_date) % 7 = 0
                    group by all
                )
                select count(*) filter (where f.{measure}_{days}d <> truth.n), count(*),
                       count(*) filter (where truth.n > 0)
                from truth join marts.fct_user_features_daily f using (person_id, as_of_date)
            """).fetchone()
            assert wrong == 0 and compared > 300 and counted > 20, (measure, days, wrong)
        # the data set is long enough that the longest window leaves sessions out
        longest = f"sessions_{max(windows['sessions'])}d"
        cut = con.execute(f"""
            select count(*) from marts.fct_user_features_daily f
            where {longest} < (select count(*) from truth_sessions s join truth_people p
                               using (person_key)
                               where p.person_id = f.person_id
                                 and s.session_start_at < f.as_of_date)
        """).fetchone()[0]
        assert cut > 0


def test_features_are_point_in_time(small_dataset, tmp_path) -> None:
    """Appending events at or after D changes no feature row for as_of_date <= D — even
    events that extend sessions which ended shortly before midnight."""
    as_of = "2026-10-03"
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    ingest_paths(settings, [small_dataset])
    transform(settings)
    before = _features_until(settings, as_of)
    assert len(before) > 250
    day_after = query(
        settings,
        "select * from marts.fct_user_features_daily where as_of_date = ?::date + 1 order by all",
        [as_of],
    )  # two as-of dates (10-02, 10-03) for the people seen by then

    later = tmp_path / "later.jsonl"
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("set TimeZone = 'UTC'")
        # copies of real events moved to just after midnight (joining sessions that were
        # still open at D) and a day later; same device/user pairs, so no new identity links
        con.execute(f"""
            copy (
                select * exclude (source_file, source_line, event_id, event_at),
                       'later-' || event_id as event_id,
                       strftime(event_at + case when event_at >= timestamp '{as_of}'
                                                             - interval 20 minute
                                                then interval 20 minute
                                                else interval 1 day end,
                                '%Y-%m-%dT%H:%M:%S.%fZ') as event_at
                from raw.events
                where event_type <> 'identify'
                  and event_at >= timestamp '{as_of}' - interval 1 day
                  and event_at < timestamp '{as_of}'
            ) to '{later}' (format json)
        """)
    assert ingest_paths(settings, [later])[0].rows_loaded > 1000
    # a full refresh: incremental runs would leave these (older than the lookback) waiting
    assert transform(settings, full_refresh=True)["late events waiting for a full refresh"] == 0
    after = _features_until(settings, as_of)
    assert after == before
    # the appended events did land: the rows for the day after D changed
    assert (
        query(
            settings,
            "select * from marts.fct_user_features_daily "
            "where as_of_date = ?::date + 1 order by all",
            [as_of],
        )
        != day_after
    )


def test_transform_without_warehouse_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(MicrosegError, match=r"no warehouse at .*run `microseg ingest` first"):
        transform(Settings.from_env({"MICROSEG_HOME": str(tmp_path / "none")}))


def test_failed_dbt_test_names_the_node(built, tmp_path) -> None:
    """A broken invariant in the data makes `transform` fail naming the failing test."""
    copy = tmp_path / "broken"
    copy.mkdir()
    (copy / "warehouse.duckdb").write_bytes(Path(built.warehouse_path).read_bytes())
    settings = Settings.from_env({"MICROSEG_HOME": str(copy)})
    with duckdb.connect(str(settings.warehouse_path)) as con:
        # a row that bypassed ingestion's checks (a manual insert, a bad backfill): no file
        # the manifest lists brought it, so the night looks at it
        con.execute(
            "insert into raw.events select * replace ('teleport-1' as event_id, "
            "'teleport' as event_type, 'backfill.jsonl' as source_file) from raw.events limit 1"
        )
    with pytest.raises(MicrosegError) as failure:
        transform(settings)
    message = str(failure.value)
    assert "stg_events.event_type: data test in_event_taxonomy failed (1 rows)" in message
    assert "value=teleport rows_with_value=1 files=" in message  # the value and its file
    assert "fix: a value outside the event schema's taxonomy" in message
    assert f"(log: {settings.home / 'dbt' / 'logs' / 'last_run.log'})" in message
    assert len(message.splitlines()) == 1
    # what the Airflow dbt tasks read to fail without retries (orchestration callback)
    failed_tests = failed_nodes(settings.dbt_target_dir, tests_only=True)
    assert len(failed_tests) == 1
    assert failed_tests[0].startswith("stg_events.event_type: data test in_event_taxonomy")


def test_a_night_stages_the_files_loaded_since_the_last_one(built, small_dataset, tmp_path):
    """Staging looks at the raw rows of files loaded after its last run began: a file loaded
    again with --replace brings its new events, the files staged before are not read again,
    and a night with nothing new stages nothing."""
    shutil.copy(built.warehouse_path, tmp_path)
    settings = dataclasses.replace(built, home=tmp_path)
    dump = sorted(small_dataset.glob("events_*"))[1]
    with gzip.open(dump, "rt") as delivered:
        lines = delivered.readlines()
    first_id = json.loads(lines[0])["event_id"]
    lines[0] = lines[0].replace(first_id, "replaced-1")
    changed = tmp_path / "landing" / dump.name
    changed.parent.mkdir()
    with gzip.open(changed, "wt") as out:
        out.writelines(lines)
    staged = "select count(*), max(arrival_batch) from staging.stg_events"
    (before, batch), *_ = query(settings, staged)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        # an event of an old file that nothing staged: a night does not look for it there
        con.execute(
            "insert into raw.events select * replace ('never-1' as event_id) from raw.events "
            "where source_file = ? limit 1",
            [sorted(small_dataset.glob("events_*"))[2].name],
        )
    ingest_paths(settings, [changed], replace=True)
    transform(settings)
    assert query(settings, staged) == [(before + 1, batch + 1)]
    assert query(
        settings,
        "select event_id, source_file from staging.stg_events where arrival_batch = ?",
        [batch + 1],
    ) == [("replaced-1", dump.name)]
    transform(settings)
    assert query(settings, staged) == [(before + 1, batch + 1)]


def test_an_event_repeated_in_the_latest_batch_fails_its_unique_test(built, tmp_path) -> None:
    """Event tables test uniqueness on the latest batch's ids (unique_in_latest_batch): a
    repeat written in that batch is found, and in staging (appended, not replaced by key) also
    a repeat of an id that an older batch holds."""
    shutil.copy(built.warehouse_path, tmp_path)
    settings = dataclasses.replace(built, home=tmp_path)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "insert into intermediate.int_events_paged select * from intermediate.int_events_paged "
            "where batch = (select max(batch) from intermediate.int_events_paged) limit 1"
        )
        con.execute(
            "insert into staging.stg_events select * replace (arrival_batch - 1 as arrival_batch) "
            "from staging.stg_events where arrival_batch = "
            "(select max(arrival_batch) from staging.stg_events) limit 1"
        )
    with pytest.raises(MicrosegError) as failure:
        run_dbt(settings, "test", "--select", "int_events_paged", "stg_events")
    for table in ("int_events_paged.event_id", "stg_events.event_id"):
        assert f"{table}: data test unique_in_latest_batch failed (1 rows)" in str(failure.value)


def test_rerunning_transform_changes_nothing(built, tmp_path) -> None:
    shutil.copy(built.warehouse_path, tmp_path)  # the shared warehouse is only read
    again = dataclasses.replace(built, home=tmp_path)

    def snapshot() -> dict[str, list[tuple]]:
        return {m: query(again, f"select * from marts.{m} order by all") for m in MARTS}

    before = snapshot()
    transform(again)
    assert snapshot() == before


def test_a_full_build_in_slices_pages_every_event_as_one_statement_does(built, tmp_path) -> None:
    """With var events_per_slice a third of the events, a full build of int_events_paged runs
    in three slices of its sessions by start time (the first in dbt's statement, the others in
    its post_hook), each reading the span of staging its events are in, to the same rows as
    the shared build, which took one."""
    shutil.copy(built.warehouse_path, tmp_path)
    sliced = dataclasses.replace(built, home=tmp_path)
    paged = "select * from intermediate.int_events_paged order by event_id"
    before = query(sliced, paged)
    third = len(before) // 3 + 1
    run_dbt(
        sliced,
        "run",
        "--select",
        "int_events_paged",
        "--full-refresh",
        "--vars",
        json.dumps({"events_per_slice": third}),
    )
    statement = sliced.dbt_target_dir / "run/microseg/models/intermediate/int_events_paged.sql"
    assert "/* slice 0 of 3 */" in statement.read_text()
    assert "where event_at between '" in statement.read_text()
    assert (
        "/* slice"
        not in (built.dbt_target_dir / statement.relative_to(sliced.dbt_target_dir)).read_text()
    )
    assert query(sliced, paged) == before


def test_dbt_unit_tests_pass(built) -> None:
    """The boundary cases in models/intermediate/_unit_tests.yml (timeout, cap, midnight,
    identity, lookback) run against the built warehouse, as dbt requires."""
    run_dbt(built, "test", "--select", "test_type:unit")
    results = json.loads((built.dbt_target_dir / "run_results.json").read_text())["results"]
    units = [r for r in results if r["unique_id"].startswith("unit_test.")]
    assert len(units) >= 7
    assert {r["status"] for r in units} == {"pass"}


def test_consent_counts_from_just_after_its_statement_and_a_withdrawal_reaches_back(
    built, small_dataset
) -> None:
    """marts.has_consent on real statements: marketing (opt-in) starts just after the grant;
    a withdrawal that still holds also ends consent on every earlier date (backfills)."""
    con = truth_connection(built, small_dataset)

    def has(person, purpose, at) -> bool:
        return con.execute("select marts.has_consent(?, ?, ?)", [person, purpose, at]).fetchone()[0]

    person, granted_at = con.execute("""
        select person_id, stated_at from marts.consent_ledger
        where purpose = 'marketing' and state = 'granted'
          and person_id in (select person_id from truth_people
                            where not declines_marketing and not is_opted_out)
        order by stated_at limit 1
    """).fetchone()
    assert not has(person, "marketing", granted_at)
    assert has(person, "marketing", granted_at + timedelta(milliseconds=1))
    assert has(person, "analytics", granted_at)  # a default of granted: since ever
    leaver, left_at = con.execute("""
        select person_id, max(stated_at) from marts.consent_ledger
        where purpose = 'personalization' and state <> 'granted'
          and person_id in (select person_id from truth_people where is_opted_out)
        group by person_id order by person_id limit 1
    """).fetchone()
    state_before = con.execute(
        "select state from marts.consent_periods where person_id = ? and purpose = ? "
        "and valid_to = ?",
        [leaver, "personalization", left_at],
    ).fetchone()
    assert state_before == ("granted",)  # the timeline keeps what held then
    assert not has(leaver, "personalization", left_at - timedelta(days=1))  # acting needs now too
    bots = con.execute("""
        select count(*), count(*) filter (where marts.has_consent(person_id, 'marketing', now())),
               count(*) filter (where marts.has_consent(person_id, 'personalization', now()))
        from truth_people where is_bot
    """).fetchone()
    assert bots[0] > 0 and bots[1:] == (0, bots[0])  # no statement: each purpose's default


def test_privacy_report_counts_consent_and_lists_where_people_are(built) -> None:
    result = run_cli("privacy", "report", "--as-of", "2026-10-04", home=built.home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    printed = {
        line.split()[0]: [int(v.replace(",", "")) for v in line.split()[2:7]] for line in lines[2:5]
    }
    expected = {
        purpose: list(counts)
        for purpose, *counts in query(
            built,
            """select purpose, count(*),
                      count(*) filter (where marts.has_consent(person_id, purpose, $d)),
                      count(*) filter (where marts.has_consent(person_id, purpose, $d)
                                         and valid_from is null),
                      count(*) filter (where state = 'denied'),
                      count(*) filter (where state = 'withdrawn')
               from marts.consent_periods
               where coalesce(valid_from < $d, true) and coalesce(valid_to >= $d, true)
               group by purpose""",
            {"d": date(2026, 10, 4)},
        )
    }
    assert printed == expected and printed["marketing"][1] < printed["personalization"][1]
    tables = {line.split()[0] for line in lines if line.startswith("  raw.") or ".fct_" in line}
    assert {"raw.events", "raw.events_quarantine", "marts.fct_sessions"} <= tables
    assert (
        "retention: raw events forever (MICROSEG_RAW_RETENTION_DAYS unset), quarantined lines "
        "30 days, consent events until erasure; nothing deleted yet"
    ) in lines
