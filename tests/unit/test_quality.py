"""Raw validation through real GX checkpoints: passes on good data, names what broke."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from microseg.ingest import ingest_paths
from microseg.quality import validate_raw
from tests.helpers import run_cli


@pytest.fixture
def loaded(settings, dataset_factory):
    ingest_paths(settings, [dataset_factory(users=80, days=2)])
    return settings


def test_clean_data_passes_and_builds_data_docs(loaded) -> None:
    report = validate_raw(loaded, as_of=date(2026, 10, 2))
    assert report.success, report.summary()
    rows, total, passed = report.checked["raw_events"]
    assert rows > 1000 and total == passed == 15
    assert report.checked["raw_load_manifest"] == (2, 5, 5)
    assert loaded.data_docs_index.exists()
    html = loaded.data_docs_index.read_text()
    assert "raw_events" in html and "raw_load_manifest" in html


def test_crafted_bad_batch_fails_naming_each_expectation(loaded) -> None:
    """Rows that bypass ingestion (a bad backfill, a manual insert) are caught by the suite."""
    with duckdb.connect(str(loaded.warehouse_path)) as con:
        template = "select * replace ({} ) from raw.events limit 1"
        for replacement in (
            "'future-1' as event_id, timestamp '2099-01-01' as event_at",
            "'scroll-1' as event_id, '{\"scroll_percent\": 150}'::json as properties",
            "'refund-1' as event_id, '{\"revenue\": -20}'::json as properties",
            "'typo-1' as event_id, 'pageview' as event_type",
            "'ghost-1' as event_id, null as anonymous_id, null as user_id",
        ):
            con.execute("insert into raw.events " + template.format(replacement))
        con.execute("insert into raw.events select * from raw.events where event_id = 'typo-1'")
    report = validate_raw(loaded, as_of=date(2026, 10, 2))
    assert not report.success
    failed = {(f.expectation_type, f.column): " ".join(f.examples) for f in report.failures}
    assert set(failed) == {
        ("expect_column_values_to_be_between", "event_at"),
        ("expect_column_values_to_be_between", "scroll_percent"),
        ("expect_column_values_to_be_between", "revenue"),
        ("expect_column_values_to_be_in_set", "event_type"),
        ("expect_column_values_to_be_in_set", "has_identity"),
        ("expect_column_values_to_be_unique", "event_id"),
        # and the manifest no longer accounts for the file's rows
        ("expect_column_values_to_be_between", "events_not_in_manifest"),
    }
    assert "event_id=future-1" in failed[("expect_column_values_to_be_between", "event_at")]
    assert "scroll_percent=150" in failed[("expect_column_values_to_be_between", "scroll_percent")]
    assert "event_id=typo-1" in failed[("expect_column_values_to_be_unique", "event_id")]
    assert "event_id=ghost-1" in failed[("expect_column_values_to_be_in_set", "has_identity")]


def test_quarantine_rate_over_the_limit_names_the_file(settings, tmp_path) -> None:
    good = {
        "event_id": "g",
        "event_type": "click",
        "event_at": "2026-10-01T00:00:00Z",
        "anonymous_id": "a",
    }
    dump = tmp_path / "mostly_bad.jsonl"
    dump.write_text(json.dumps(good) + "\n" + "garbage\n" * 3)
    ingest_paths(settings, [dump])
    report = validate_raw(settings, as_of=date(2026, 10, 1))
    [failure] = report.failures
    assert failure.suite == "raw_load_manifest"
    assert (failure.expectation_type, failure.column) == (
        "expect_column_values_to_be_between",
        "quarantine_rate",
    )
    assert failure.examples == ["file_name=mostly_bad.jsonl quarantine_rate=0.75"]


def test_raw_rows_that_disagree_with_the_manifest_fail_until_reloaded(
    settings, dataset_factory
) -> None:
    """What a kill during ingest once left (rows replayed from DuckDB's WAL, no manifest row),
    and a file that lost rows, both fail naming the file; loading them anew repairs both."""
    dataset = dataset_factory(users=80, days=2)
    ingest_paths(settings, [dataset])
    with duckdb.connect(str(settings.warehouse_path)) as con:
        query = "select file_name from raw.load_manifest order by 1"
        first, second = (row[0] for row in con.execute(query).fetchall())
        con.execute("delete from raw.load_manifest where file_name = ?", [first])
        con.execute(
            "delete from raw.events where source_file = ? and source_line % 10 = 0", [second]
        )
    report = validate_raw(settings, as_of=date(2026, 10, 2))
    failed = {f.column: f.examples for f in report.failures}
    assert {"rows_unaccounted", "events_not_in_manifest"} <= set(failed), report.summary()
    assert failed["rows_unaccounted"] == [f"file_name={first} rows_unaccounted=<NA>"]
    names = sorted(e.split()[0] for e in failed["events_not_in_manifest"])
    assert names == [f"file_name={first}", f"file_name={second}"]

    proc = run_cli("ingest", "--replace", str(dataset), home=settings.home)
    assert proc.returncode == 0, proc.stderr
    assert validate_raw(settings, as_of=date(2026, 10, 2)).success


@pytest.mark.usefixtures("loaded")
def test_cli_exit_code_and_output(settings) -> None:
    ok = run_cli("validate", "--as-of", "2026-10-02", home=settings.home)
    assert ok.returncode == 0, ok.stderr
    assert "raw_events: 15/15 expectations passed" in ok.stdout
    assert "Data Docs: file://" in ok.stdout
    # as of an earlier date, the later events are "in the future"
    early = run_cli("validate", "--as-of", "2026-09-01", home=settings.home)
    assert early.returncode == 1
    assert "FAILED raw_events: expect_column_values_to_be_between(column=event_at" in early.stdout
    assert "Traceback" not in early.stderr


def test_validate_without_warehouse_is_a_one_line_error(tmp_path) -> None:
    proc = run_cli("validate", home=tmp_path / "empty")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: no warehouse at ")
    assert len(proc.stderr.strip().splitlines()) == 1
