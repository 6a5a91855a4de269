"""Incremental runs equal a full rebuild: the generator's days loaded one night at a time."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from microseg.config import Settings
from microseg.ingest import ingest_paths
from microseg.transform import run_dbt, transform
from tests.helpers import MARTS, query

pytestmark = pytest.mark.slow


# person-day marts of the touched-people rule (macros/incremental.sql); their engaged_s is marked
CANARIED = ("fct_person_item_interactions", "fct_person_category_daily")
CANARY = 10**9
# what int_events_stitched keeps for its nights
STITCHING_IDS = ("user_id", "anonymous_id", "arrival_batch")


def nightly(settings: Settings, files: list[Path]) -> list[int]:
    """Ingest each day's dump and run an incremental transform after it; late-event counts."""
    late = []
    for dump in files:
        ingest_paths(settings, [dump])
        late.append(transform(settings)["late events waiting for a full refresh"])
    return late


def differences(left: Path, right: Path) -> dict[str, tuple[int, int]]:
    """Rows only in the left / only in the right warehouse, per mart."""
    with duckdb.connect(str(left), read_only=True) as con:
        con.execute(f"attach '{right}' as other (read_only)")
        return {
            mart: (
                con.execute(
                    f"select count(*) from (select * from marts.{mart} except all "
                    f"select * from other.marts.{mart})"
                ).fetchone()[0],
                con.execute(
                    f"select count(*) from (select * from other.marts.{mart} except all "
                    f"select * from marts.{mart})"
                ).fetchone()[0],
            )
            for mart in MARTS
        }


@pytest.fixture(scope="module")
def full_build(small_dataset, tmp_path_factory) -> Settings:
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path_factory.mktemp("full"))})
    ingest_paths(settings, [small_dataset])
    transform(settings, full_refresh=True)
    return settings


def test_day_by_day_equals_full_refresh(small_dataset, full_build, tmp_path) -> None:
    """With a lookback that covers the generator's lateness (up to 3 days), nothing waits."""
    settings = dataclasses.replace(
        Settings.from_env({"MICROSEG_HOME": str(tmp_path / "nightly")}), late_arrival_hours=96
    )
    first_night, *nights, last_night = sorted(small_dataset.glob("events_*"))
    late = nightly(settings, [first_night])
    # as int_events_stitched was before it kept the ids its people were decided by: the next
    # night adds them (rewriting every row once), and the nights after it look them up
    with duckdb.connect(str(settings.warehouse_path)) as con:
        for column in STITCHING_IDS:
            con.execute(f"alter table intermediate.int_events_stitched drop column {column}")
    late += nightly(settings, nights)
    # a night rewrites only the rows of people it touched: marked rows of the others survive
    with duckdb.connect(str(settings.warehouse_path)) as con:
        for mart in CANARIED:
            con.execute(f"update marts.{mart} set engaged_s = engaged_s + {CANARY}")
    late += nightly(settings, [last_night])
    with duckdb.connect(str(settings.warehouse_path)) as con:
        for mart in CANARIED:
            kept, rows = con.execute(
                f"select count(*) filter (where engaged_s >= {CANARY}), count(*) from marts.{mart}"
            ).fetchone()
            assert 0 < kept < rows, mart
            con.execute(
                f"update marts.{mart} set engaged_s = engaged_s - {CANARY} "
                f"where engaged_s >= {CANARY}"
            )
    assert late == [0] * len(late)
    diff = differences(settings.warehouse_path, full_build.warehouse_path)
    assert diff == {mart: (0, 0) for mart in MARTS}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        # every row has what the next night looks up: an attributable event has an id
        assert con.execute(
            "select count(*) from intermediate.int_events_stitched "
            "where (user_id is null and anonymous_id is null) or arrival_batch is null"
        ).fetchone() == (0,)
        # the comparison has teeth: late sessions and re-attributed devices were processed,
        # a batch by each night after the first (a full build: its rows numbered 0 and below)
        assert (
            con.execute("select max(batch) from intermediate.int_events_stitched").fetchone()[0]
            == len(nights) + 1
        )
        assert (
            con.execute(
                "select count(*) from intermediate.int_events_stitched "
                "where previous_person_id is not null"
            ).fetchone()[0]
            > 0
        )


def test_a_run_finding_nothing_new_after_a_full_refresh_redoes_its_latest_day_only(
    full_build, tmp_path
) -> None:
    """A full build numbers its event rows by day (0 and below: int_events_stitched):
    a run right after it that finds nothing new re-processes the latest day, as a re-run of a
    night re-processes that night, not every event of the history; and changes nothing."""
    shutil.copy(full_build.warehouse_path, tmp_path)
    settings = dataclasses.replace(full_build, home=tmp_path)
    transform(settings)
    (rewritten, latest_day, events), *_ = query(
        settings,
        """select count(*) filter (where previous_session_id is not null),
                  count(*) filter (where event_at::date = (
                      select max(event_at)::date from staging.stg_events)),
                  count(*)
           from intermediate.int_events_sessionized""",
    )
    assert 0 < latest_day <= rewritten < events / 2
    diff = differences(settings.warehouse_path, full_build.warehouse_path)
    assert diff == {mart: (0, 0) for mart in MARTS}


def test_events_later_than_the_lookback_wait_for_a_full_refresh(
    small_dataset, full_build, tmp_path
) -> None:
    settings = dataclasses.replace(
        Settings.from_env({"MICROSEG_HOME": str(tmp_path / "nightly")}), late_arrival_hours=6
    )
    # every day but the last two built at once, then a night for each of those dumps, which
    # bring sessions of the days before them that arrive days late
    *history, second_last, last = sorted(small_dataset.glob("events_*"))
    ingest_paths(settings, history)
    transform(settings)
    ingest_paths(settings, [second_last])
    late = transform(settings)["late events waiting for a full refresh"]
    # staging rebuilt alone numbers every event anew: int_late_events (which compares staged
    # and stitched events per arrival batch) lists the same events ...
    run_dbt(settings, "build", "--select", "stg_events", "int_late_events", "--full-refresh")
    assert query(settings, "select count(*) from intermediate.int_late_events") == [(late,)]
    # ... and the next night's arrivals are stitched
    ingest_paths(settings, [last])
    late = transform(settings)["late events waiting for a full refresh"]
    assert late > 0, "the generator plants sessions that arrive days late"
    newest = "select max(event_at) from {}"
    assert query(settings, newest.format("intermediate.int_events_stitched")) == query(
        settings, newest.format("staging.stg_events")
    )
    # a re-run of the night changes nothing
    assert transform(settings)["late events waiting for a full refresh"] == late
    assert differences(settings.warehouse_path, full_build.warehouse_path) != {
        mart: (0, 0) for mart in MARTS
    }
    counts = transform(settings, full_refresh=True)
    assert counts["late events waiting for a full refresh"] == 0
    assert differences(settings.warehouse_path, full_build.warehouse_path) == {
        mart: (0, 0) for mart in MARTS
    }


def test_a_session_going_on_past_midnight_is_continued_by_the_next_night(
    settings, tmp_path
) -> None:
    """The next night's first events join the session the night before ended with, and the
    session cap still counts from the start of its activity run: 20:30 to 00:50 every 20
    minutes is cut at 00:30 (240 minutes), across two nights as in one build."""
    days = {"2026-10-01": [f"{h}:{m}" for h in (20, 21, 22, 23) for m in (10, 30, 50)][1:]}
    days["2026-10-02"] = ["00:10", "00:30", "00:50"]
    for day, times in days.items():
        events = [
            {
                "event_id": f"{day}T{at}",
                "event_type": "page_view",
                "event_at": f"{day}T{at}:00Z",
                "anonymous_id": "a1",
                "page_type": "article",
            }
            for at in times
        ]
        (tmp_path / f"events_{day}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    session_of = "select event_id, session_id from intermediate.int_events_sessionized"
    for day in days:
        ingest_paths(settings, [tmp_path / f"events_{day}.jsonl"])
        transform(settings)
    nightly = dict(query(settings, session_of))
    transform(settings, full_refresh=True)
    assert nightly == dict(query(settings, session_of))
    pieces = {}
    for event_id, session_id in sorted(nightly.items()):
        pieces.setdefault(session_id, []).append(event_id[-5:])
    assert sorted(pieces.values()) == [["00:30", "00:50"], [*days["2026-10-01"], "00:10"]]
