"""Input adapters end to end: a hand-written Snowplow enriched export and a GA4 BigQuery export
loaded as they come into one warehouse, and the marts built from them checked against values
counted by hand (tests/fixtures)."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime

import pytest

from microseg.config import PROJECT_ROOT, Settings
from microseg.ingest import ingest_paths
from microseg.ingest.snowplow import SNOWPLOW_FIELDS
from microseg.transform import transform
from tests.fixtures import ga4_site, snowplow_site
from tests.helpers import query, run_cli

SAMPLE = PROJECT_ROOT / "docs" / "examples" / "snowplow_enriched_2026-10-01.tsv"
GA4_SAMPLE = PROJECT_ROOT / "docs" / "examples" / "ga4"


@pytest.fixture(scope="module")
def adapters_home(tmp_path_factory) -> tuple[Settings, list]:
    """The Snowplow fixture under a Snowplow loader's file name (no telling extension) and the
    GA4 fixture's two days, loaded by their shape into one warehouse, and the marts built."""
    root = tmp_path_factory.mktemp("adapters")
    export = root / "part-00000-enriched.gz"
    export.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    settings = Settings.from_env({"MICROSEG_HOME": str(root / "home")})
    results = ingest_paths(settings, [export, GA4_SAMPLE])
    transform(settings)
    return settings, results


def _reasons(settings: Settings, *files: str) -> dict[str, int]:
    return dict(
        query(
            settings,
            "select reason, count(*) from raw.events_quarantine "
            "where list_contains(?, source_file) group by 1",
            [list(files)],
        )
    )


def test_a_snowplow_export_loads_with_every_row_accounted_for(adapters_home) -> None:
    settings, [result, *_] = adapters_home
    expected = snowplow_site.EXPECTED
    quarantined = sum(expected["quarantined"].values()) + 2  # and the two the contract refuses
    assert (result.rows_read, result.rows_duplicate, result.rows_quarantined) == (
        expected["rows_read"], expected["rows_duplicate"], quarantined,
    )  # fmt: skip
    # what the raw layer holds is what the hand count leaves: no row lost, none counted twice
    stored = query(
        settings, "select count(*) from raw.events where source_file = ?", [result.file_name]
    )
    assert stored == [(expected["rows_read"] - expected["rows_duplicate"] - quarantined,)]
    assert _reasons(settings, result.file_name) == {
        **expected["quarantined"],
        "missing both anonymous_id and user_id": 1,
        "unknown event_type 'share'": 1,  # a struct event's action, snake-cased
    }
    assert query(
        settings,
        "select file_format from raw.load_manifest where file_name = ?",
        [result.file_name],
    ) == [("snowplow",)]


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


def test_sessions_page_views_engaged_time_and_orders_match_the_hand_count(adapters_home) -> None:
    """Each source's sessions, engaged time counted its own way (Snowplow's pings, GA4's
    engagement_time_msec), side by side in one warehouse."""
    settings, _ = adapters_home
    assert _sessions(settings) == snowplow_site.EXPECTED["sessions"] | ga4_site.EXPECTED["sessions"]
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
           where event_type like 'video_%' order by anonymous_id, event_at""",
    )
    media = [("video_play", 0, 120), ("video_progress", 60, 120), ("video_complete", 120, 120)]
    assert video == media * 2  # GA4's Alice's video_start/progress/complete, then Snowplow's Anna


def test_a_ga4_export_loads_with_every_row_accounted_for(adapters_home) -> None:
    """Two days of the JSON export: GA4's bookkeeping counted as unused, consent-mode rows
    without an id quarantined with their reason, a row exported twice a duplicate."""
    settings, [_, *results] = adapters_home
    expected = ga4_site.EXPECTED
    assert {r.file_name: r.rows_read for r in results} == expected["rows_read"]
    assert sum(r.rows_duplicate for r in results) == expected["rows_duplicate"]
    unused = {}
    for r in results:
        for name, rows in r.unused_events:
            unused[name] = unused.get(name, 0) + rows
    assert unused == expected["unused"]
    names = [r.file_name for r in results]
    reasons = expected["quarantined"] | expected["quarantined_json_only"]
    assert _reasons(settings, *names) == reasons
    # what the raw layer holds is what the hand count leaves: no row lost, none counted twice
    stored = query(
        settings, "select count(*) from raw.events where list_contains(?, source_file)", [names]
    )
    left = sum(expected["rows_read"].values()) - expected["rows_duplicate"]
    assert stored == [(left - sum(reasons.values()) - sum(expected["unused"].values()),)]
    manifest = query(
        settings,
        "select file_format, sum(rows_unused) from raw.load_manifest "
        "where list_contains(?, file_name) group by 1",
        [names],
    )
    assert manifest == [("ga4", sum(expected["unused"].values()))]


def test_ga4_parameters_land_in_the_canonical_columns(adapters_home) -> None:
    settings, _ = adapters_home
    rows = query(
        settings,
        """select event_type, page_type, content_id, element_id, search_query, product_id,
                  quantity, revenue, utm_source, country
           from staging.stg_events
           where anonymous_id in ('1001.1700000001', '2002.1700000002', '4004.1700000004')
             and event_type not in ('page_ping', 'video_play', 'video_progress', 'video_complete')
           order by anonymous_id, event_at, event_type""",
    )
    assert [tuple(float(v) if hasattr(v, "as_tuple") else v for v in r) for r in rows] == [
        ("page_view", "article", "/article/42", None, None, None, None, None, "newsletter",
         "Germany"),
        ("scroll", "article", "/article/42", None, None, None, None, None, None, "Germany"),
        ("click", "article", "/article/42", "related_product", None, None, None, None, None,
         "Germany"),
        ("page_view", "product", "/product/7", None, None, None, None, None, None, "Germany"),
        ("add_to_cart", "product", "/product/7", None, None, "sku_7", 2.0, None, None, "Germany"),
        ("add_to_cart", "product", "/product/7", None, None, "sku_7", 1.0, None, None, "Germany"),
        ("page_view", "video", "/video/9", None, None, None, None, None, None, "Germany"),
        ("page_view", "product", "/product/3", None, None, None, None, None, None, "Austria"),
        ("identify", "product", "/product/3", None, None, None, None, None, None, "Austria"),
        ("add_to_cart", "product", "/product/3", None, None, "sku_3", 2.0, None, None, "Austria"),
        ("page_view", "checkout", None, None, None, None, None, None, None, "Austria"),
        ("checkout_start", "checkout", None, None, None, "sku_3", 1.0, None, None, "Austria"),
        ("purchase", "checkout", None, None, None, "sku_3", 1.0, 59.8, None, "Austria"),
        ("page_view", "category", None, None, None, None, None, None, None, None),
        ("form_submit", "category", None, "newsletter", None, None, None, None, None, None),
        ("search", "search", None, None, "red shoes", None, None, None, None, None),
    ]  # fmt: skip
    # user properties ride along as an object, whichever slot holds each value
    assert query(
        settings,
        "select distinct properties -> 'user_properties' from staging.stg_events "
        "where anonymous_id = '2002.1700000002'",
    ) == [('{"plan":"gold","orders":"12"}',)]
    # the logged-in shopper is one person across both daily files
    assert query(
        settings,
        "select count(*), sum(sessions) from marts.dim_persons "
        "where user_id = 'b.berger@example.com'",
    ) == [(1, 1)]


def test_the_ga4_parquet_export_loads_as_the_json_export_does(tmp_path) -> None:
    """The same rows as Parquet (native INT64, explicit nulls) give the same events."""
    homes = {}
    for form, parquet in (("json", False), ("parquet", True)):
        files = ga4_site.write(tmp_path / form, parquet=parquet)
        homes[form] = Settings.from_env({"MICROSEG_HOME": str(tmp_path / f"home-{form}")})
        results = ingest_paths(homes[form], files)
        assert [r.status for r in results] == ["loaded", "loaded"]
    events = "select * exclude (source_file, source_line) from raw.events order by event_id"
    assert query(homes["parquet"], events) == query(homes["json"], events)
    assert query(homes["parquet"], "select file_format from raw.load_manifest") == [("ga4",)] * 2
    assert _reasons(homes["parquet"], "events_20261001.parquet") == ga4_site.EXPECTED["quarantined"]


def test_with_session_source_client_the_sources_session_id_starts_sessions(
    adapters_home, tmp_path
) -> None:
    """domain_sessionid and ga_session_id: a visitor who came back 9 minutes later in a new
    tracker session has two sessions (one by inactivity)."""
    settings, _ = adapters_home
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(settings.warehouse_path, home)
    client = Settings.from_env({"MICROSEG_HOME": str(home), "MICROSEG_SESSION_SOURCE": "client"})
    transform(client, full_refresh=True)
    split = {"d-cara", "3003.1700000003"}
    expected = {
        key: value
        for key, value in (
            snowplow_site.EXPECTED["sessions"] | ga4_site.EXPECTED["sessions"]
        ).items()
        if key[0] not in split
    }
    assert _sessions(client) == (
        expected | snowplow_site.EXPECTED["client_sessions"] | ga4_site.EXPECTED["client_sessions"]
    )


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


@pytest.mark.parametrize("name", ["atomic_events.csv", "atomic_events.parquet"])
def test_snowplow_atomic_events_exports_load_as_the_enriched_lines_do(
    adapters_home, tmp_path, name
) -> None:
    """atomic.events as a warehouse loader keeps it (fields as columns, upper case in
    Snowflake's CSV; each self-describing type in a column of its own), exported: the same
    events as the enriched TSV, read as Snowplow's (so engaged time is counted its way)."""
    settings, [snowplow, *_] = adapters_home
    export = snowplow_site.write_atomic(tmp_path / name)
    home = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    [result] = ingest_paths(home, [export])
    # the line cut short never reached the warehouse: one row fewer, one quarantined fewer
    assert (result.rows_read, result.rows_loaded, result.rows_duplicate) == (
        snowplow.rows_read - 1, snowplow.rows_loaded, snowplow.rows_duplicate,
    )  # fmt: skip
    events = "select * exclude (source_file, source_line) from raw.events {} order by event_id"
    tsv = query(settings, events.format("where source_file = ?"), [snowplow.file_name])
    assert query(home, events.format("")) == tsv
    assert query(home, "select file_format from raw.load_manifest") == [("snowplow",)]
    invalid = [r for r in _reasons(home, name) if r.endswith("not valid JSON")]
    assert [r.lower() for r in invalid] == [
        "snowplow unstruct_event_com_snowplowanalytics_snowplow_link_click_1: not valid json"
    ]


def test_ga4_rows_are_recognized_by_their_shape_whatever_the_name(tmp_path) -> None:
    lines = (GA4_SAMPLE / "events_20261002.json").read_bytes()
    part = tmp_path / "part-000000000000.json"  # a BigQuery wildcard export's name
    part.write_bytes(lines)
    result = run_cli("ingest", str(part), home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert query(
        Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")}),
        "select file_format, rows_loaded from raw.load_manifest",
    ) == [("ga4", 4)]
    # declared, a canonical event line is quarantined: it is no GA4 row
    canonical = tmp_path / "canonical.jsonl"
    canonical.write_text(
        '{"event_id": "e1", "event_type": "page_view", "event_at": "2026-10-01T10:00:00Z", '
        '"anonymous_id": "a"}\n'
    )
    result = run_cli("ingest", str(canonical), "--format", "ga4", home=tmp_path / "home")
    assert "1 x not a GA4 export row (no event_name)" in result.stdout, result.stdout


def test_the_ga4_sample_is_the_fixture(tmp_path) -> None:
    written = ga4_site.write(tmp_path)
    assert [p.name for p in written] == sorted(p.name for p in GA4_SAMPLE.iterdir())
    assert all(p.read_bytes() == (GA4_SAMPLE / p.name).read_bytes() for p in written)


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
