"""Input adapters end to end: a hand-written Snowplow enriched export loaded as it comes, and
the marts built from it checked against values counted by hand (tests/fixtures)."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime

import pytest

from microseg.config import PROJECT_ROOT, Settings
from microseg.ingest import ingest_paths
from microseg.ingest.snowplow import SNOWPLOW_FIELDS
from microseg.transform import transform
from tests.fixtures import snowplow_site
from tests.helpers import query, run_cli

SAMPLE = PROJECT_ROOT / "docs" / "examples" / "snowplow_enriched_2026-10-01.tsv"


@pytest.fixture(scope="module")
def snowplow_home(tmp_path_factory) -> tuple[Settings, list]:
    """The fixture loaded under a Snowplow loader's file name (no telling extension) and the
    marts built."""
    root = tmp_path_factory.mktemp("snowplow")
    export = root / "part-00000-enriched.gz"
    export.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    settings = Settings.from_env({"MICROSEG_HOME": str(root / "home")})
    results = ingest_paths(settings, [export])
    transform(settings)
    return settings, results


def test_a_snowplow_export_loads_with_every_row_accounted_for(snowplow_home) -> None:
    settings, [result] = snowplow_home
    expected = snowplow_site.EXPECTED
    quarantined = sum(expected["quarantined"].values()) + 2  # and the two the contract refuses
    assert (result.rows_read, result.rows_duplicate, result.rows_quarantined) == (
        expected["rows_read"], expected["rows_duplicate"], quarantined,
    )  # fmt: skip
    assert result.rows_read == result.rows_loaded + result.rows_duplicate + quarantined
    reasons = dict(query(settings, "select reason, count(*) from raw.events_quarantine group by 1"))
    assert reasons == {
        **expected["quarantined"],
        "missing both anonymous_id and user_id": 1,
        "unknown event_type 'share'": 1,  # a struct event's action, snake-cased
    }
    assert query(settings, "select file_format from raw.load_manifest") == [("snowplow",)]


def _sessions(settings: Settings) -> dict:
    return {
        (anonymous_id, f"{start:%Y-%m-%d %H:%M:%S}"): (
            page_views, engaged_s, cart_adds, has_purchase, float(revenue), round(scroll)
        )
        for anonymous_id, start, page_views, engaged_s, cart_adds, has_purchase, revenue, scroll
        in query(
            settings,
            """select anonymous_id, session_start_at, page_views, engaged_s, cart_adds,
                      has_purchase, revenue, max_scroll_percent from marts.fct_sessions""",
        )
    }  # fmt: skip


def test_sessions_page_views_engaged_time_and_orders_match_the_hand_count(snowplow_home) -> None:
    settings, _ = snowplow_home
    assert _sessions(settings) == snowplow_site.EXPECTED["sessions"]
    # the logged-in shopper is one person; the consent she gave and took back is on record
    assert query(
        settings,
        "select count(*) from marts.dim_persons where user_id = 'ben@example.com'",
    ) == [(1,)]
    cara = query(
        settings,
        """select c.state, c.policy_version from marts.consent_ledger c
           join marts.dim_persons p using (person_id)
           where list_contains(p.anonymous_ids, 'd-cara') and c.purpose = 'marketing'
           order by c.stated_at""",
    )
    assert cara == [("granted", "3"), ("withdrawn", None)]
    video = query(
        settings,
        """select event_type, video_position_s, video_duration_s from staging.stg_events
           where event_type like 'video_%' order by event_at""",
    )
    assert video == [
        ("video_play", 0, 120),
        ("video_progress", 60, 120),
        ("video_complete", 120, 120),
    ]


def test_with_session_source_client_the_sources_session_id_starts_sessions(
    snowplow_home, tmp_path
) -> None:
    settings, _ = snowplow_home
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(settings.warehouse_path, home)
    client = Settings.from_env({"MICROSEG_HOME": str(home), "MICROSEG_SESSION_SOURCE": "client"})
    transform(client, full_refresh=True)
    expected = {
        key: value
        for key, value in snowplow_site.EXPECTED["sessions"].items()
        if key[0] != "d-cara"
    }
    assert _sessions(client) == expected | snowplow_site.EXPECTED["client_sessions"]


def test_the_format_can_be_declared_and_other_shapes_are_quarantined_with_the_count(
    tmp_path,
) -> None:
    csv_like = tmp_path / "events.tsv"
    csv_like.write_text("event_id\tevent_type\tevent_at\nx\tpage_view\t2026-10-01T10:00:00Z\n")
    result = run_cli("ingest", str(csv_like), "--format", "snowplow", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "2 x Snowplow enriched event with 3 tab-separated fields, not 131" in result.stdout
    # a file whose first line was cut short is still recognized by its other lines
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    cut_first = tmp_path / "part-00002.gz"
    cut_first.write_bytes(gzip.compress(b"".join([lines[-1], *lines[:-1]])))
    result = run_cli("ingest", str(cut_first), home=tmp_path / "home")
    assert "1 x Snowplow enriched event with 100 tab-separated fields" in result.stdout
    gz = tmp_path / "part-00001.gz"
    gz.write_bytes(gzip.compress(b"not\tsnowplow\n"))
    result = run_cli("ingest", str(gz), home=tmp_path / "home")
    assert "unknown format" in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_the_sample_is_the_fixture_and_what_the_specs_say(tmp_path) -> None:
    """The demo's sample is the fixture's output; 131 fields a line (but the line cut short),
    timestamps as Enrich writes them."""
    written = snowplow_site.write(tmp_path / "sample.tsv").read_bytes()
    assert written == SAMPLE.read_bytes()
    fields = [line.split("\t") for line in written.decode().splitlines()]
    # positions by Snowplow's Go analytics SDK's index map, not by our list
    pinned = {"collector_tstamp": 3, "event": 5, "event_id": 6, "contexts": 52,
              "unstruct_event": 58, "derived_contexts": 122, "domain_sessionid": 123,
              "derived_tstamp": 124, "event_name": 126, "true_tstamp": 130}  # fmt: skip
    assert {name: SNOWPLOW_FIELDS.index(name) for name in pinned} == pinned
    assert [len(f) for f in fields[:-1]] == [131] * (len(fields) - 1) and len(fields[-1]) == 100
    datetime.strptime(fields[0][3], "%Y-%m-%d %H:%M:%S.%f")
