"""Ingestion: accounting, idempotence, atomicity, formats and every bad-file case."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from microseg.config import Settings
from microseg.errors import InputError
from microseg.ingest import delivery_date, formats, ingest_paths, load
from microseg.ingest.formats import jsonl_chunks, text_bytes
from microseg.pipeline import ingest_step
from microseg.warehouse import FILE_ACCOUNTING_SQL, has_table
from tests.helpers import query, run_cli, table_snapshot

GOOD_EVENT = {
    "event_id": "good-1",
    "event_type": "page_view",
    "event_at": "2026-10-01T10:00:00+02:00",
    "anonymous_id": "a1",
    "page_type": "article",
    "properties": {"scroll_percent": 40},
}


def jsonl(*events: dict | str) -> str:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events)


def test_accounting_matches_generator_ground_truth(settings, small_dataset) -> None:
    ingest_paths(settings, [small_dataset])
    expected = pd.read_csv(small_dataset / "ground_truth" / "files.csv").set_index("file_name")
    manifest = query(
        settings,
        "select file_name, status, rows_read, rows_loaded, rows_duplicate, rows_quarantined "
        "from raw.load_manifest order by file_name",
    )
    assert [m[0] for m in manifest] == sorted(expected.index)
    for name, status, read, loaded, duplicate, quarantined in manifest:
        truth = expected.loc[name]
        assert status == "loaded"
        assert read == loaded + duplicate + quarantined
        assert (read, loaded, duplicate, quarantined) == (
            truth.rows_read,
            truth.rows_loaded,
            truth.rows_duplicate,
            truth.rows_quarantined,
        ), name
    # every quarantined row says where it came from and why
    assert query(
        settings,
        "select count(*) from raw.events_quarantine where reason is null "
        "or source_line < 1 or raw_text is null",
    ) == [(0,)]
    [(rows, ids)] = query(settings, "select count(*), count(distinct event_id) from raw.events")
    assert rows == ids


def test_quarantine_points_at_the_exact_line(settings, tmp_path) -> None:
    dump = tmp_path / "d.jsonl"
    dump.write_text(
        jsonl(GOOD_EVENT, '{"event_id": "x", "event_ty', {**GOOD_EVENT, "event_id": "g2"})
    )
    ingest_paths(settings, [dump])
    rows = query(
        settings, "select source_file, source_line, reason, raw_text from raw.events_quarantine"
    )
    assert rows == [("d.jsonl", 2, "line is not valid JSON", '{"event_id": "x", "event_ty')]
    loaded = query(
        settings,
        "select event_id, source_line, event_at::varchar from raw.events order by source_line",
    )
    # offsets are converted to UTC
    assert loaded == [("good-1", 1, "2026-10-01 08:00:00"), ("g2", 3, "2026-10-01 08:00:00")]


def test_quarantined_lines_keep_no_email_or_ip_address(settings, tmp_path) -> None:
    dump = tmp_path / "d.jsonl"
    dump.write_text(jsonl('{"user_id": "ann@example.com", "ip": "203.0.113.57", "event_ty'))
    ingest_paths(settings, [dump])
    assert query(settings, "select raw_text from raw.events_quarantine") == [
        ('{"user_id": "[email]", "ip": "[ip]", "event_ty',)
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"event_type": "click"}, "missing event_id"),
        ({"event_id": "  "}, "missing event_id"),
        ({"anonymous_id": None}, "missing both anonymous_id and user_id"),
        ({"event_type": "pageView"}, "unknown event_type 'pageView'"),
        ({"event_at": "yesterday"}, "event_at is not an ISO-8601 timestamp: 'yesterday'"),
        ({"event_at": "infinity"}, "event_at is not an ISO-8601 timestamp: 'infinity'"),
        ({"page_type": "landing"}, "unknown page_type 'landing'"),
        ({"properties": "oops"}, "properties is not a JSON object"),
        (
            {"properties": {"scroll_percent": "lots"}},
            "properties.scroll_percent is not a number: 'lots'",
        ),
        (
            {"properties": {"scroll_percent": 130}},
            "properties.scroll_percent=130 is outside 0..100",
        ),
        ({"properties": {"revenue": -5}}, "properties.revenue=-5 is outside 0.."),
        ({"properties": {"purposes": True}}, "properties.purposes is not a JSON object"),
        ({"event_id": "x" * 201}, "event_id longer than 200 characters"),
    ],
)
def test_contract_violations_are_quarantined_with_reason(settings, tmp_path, bad, reason) -> None:
    event = {**GOOD_EVENT, **bad}
    if bad.get("event_type") == "click" and "event_id" not in bad:
        event.pop("event_id")
    dump = tmp_path / "bad.jsonl"
    dump.write_text(jsonl(event))
    [result] = ingest_paths(settings, [dump])
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1, 0, 1)
    assert query(settings, "select reason from raw.events_quarantine") == [(reason,)]


def test_numeric_strings_and_missing_offsets_are_accepted(settings, tmp_path) -> None:
    dump = tmp_path / "lenient.jsonl"
    dump.write_text(
        jsonl(
            {
                **GOOD_EVENT,
                "event_at": "2026-10-01 10:00:00",
                "event_id": 7,
                "user_id": "  u 1  ",
                "country": "DE ",
                "properties": {"scroll_percent": "55"},
            }
        )
    )
    [result] = ingest_paths(settings, [dump])
    assert result.rows_loaded == 1
    assert query(
        settings, "select event_id, event_at::varchar, user_id, country from raw.events"
    ) == [("7", "2026-10-01 10:00:00", "u 1", "DE")]


def test_duplicates_within_and_across_files(settings, tmp_path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(jsonl(GOOD_EVENT, GOOD_EVENT))
    second.write_text(
        jsonl({**GOOD_EVENT, "anonymous_id": "changed"}, {**GOOD_EVENT, "event_id": "new"})
    )
    a, b = ingest_paths(settings, [first, second])
    assert (a.rows_loaded, a.rows_duplicate) == (1, 1)
    assert (b.rows_loaded, b.rows_duplicate) == (1, 1)
    # the first delivery wins
    assert query(settings, "select anonymous_id from raw.events where event_id = 'good-1'") == [
        ("a1",)
    ]


def test_reingest_changes_nothing(settings, small_dataset) -> None:
    ingest_paths(settings, [small_dataset])
    before = table_snapshot(settings)
    results = ingest_paths(settings, [small_dataset])
    assert {r.status for r in results} == {"skipped"}
    assert table_snapshot(settings) == before


def test_changed_content_needs_replace(settings, tmp_path) -> None:
    dump = tmp_path / "day.jsonl"
    dump.write_text(jsonl(GOOD_EVENT))
    ingest_paths(settings, [dump])
    before = table_snapshot(settings)
    dump.write_text(jsonl({**GOOD_EVENT, "event_id": "other"}, "not json"))
    [result] = ingest_paths(settings, [dump])
    assert result.status == "rejected"
    assert "already loaded with different content" in result.error
    assert "--replace" in result.error
    assert table_snapshot(settings) == before

    [result] = ingest_paths(settings, [dump], replace=True)
    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 1, 1)
    assert query(settings, "select event_id from raw.events") == [("other",)]
    assert query(settings, "select count(*) from raw.events_quarantine") == [(1,)]
    assert query(settings, "select count(*) from raw.load_manifest") == [(1,)]


def _write_bad_files(folder: Path) -> dict[str, str]:
    """One file per bad-file case, with the problem the CLI must name."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jsonl(GOOD_EVENT).encode()
    (folder / "truncated.jsonl.gz").write_bytes(gzip.compress(good * 200)[:-30])
    compressed = gzip.compress(good * 200)
    garbled = compressed[:12] + b"\xff" * 28 + compressed[40:]  # its first deflate block
    (folder / "corrupt.jsonl.gz").write_bytes(garbled)
    (folder / "junk_appended.jsonl.gz").write_bytes(compressed + b"junk")  # not cut short
    (folder / "empty.jsonl").write_bytes(b"")
    (folder / "header_only.csv").write_text("event_id,event_type,event_at,anonymous_id\n")
    (folder / "array.json").write_text(json.dumps([GOOD_EVENT, GOOD_EVENT], indent=2))
    (folder / "events.xml").write_text("<events/>")
    (folder / "no_id_column.csv").write_text("id,event_type,event_at\n1,click,2026-10-01\n")
    return {
        "truncated.jsonl.gz": "truncated gzip",
        "corrupt.jsonl.gz": "corrupt gzip",
        "junk_appended.jsonl.gz": "corrupt gzip (Not a gzipped file",
        "empty.jsonl": "empty file",
        "header_only.csv": "header-only CSV",
        "array.json": "a JSON array; expected JSON Lines",
        "events.xml": "unknown format",
        "no_id_column.csv": "no column event_id",
    }


def test_bad_files_get_one_line_errors_and_do_not_stop_others(tmp_path) -> None:
    folder = tmp_path / "landing"
    problems = _write_bad_files(folder)
    (folder / "zz_good.jsonl").write_text(jsonl(GOOD_EVENT))
    home = tmp_path / "home"
    proc = run_cli("ingest", str(folder), home=home)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == len(problems)
    for name, problem in problems.items():
        [line] = [e for e in errors if e.startswith(f"error: {name}:")]
        assert problem in line
    assert "zz_good.jsonl: read 1 = loaded 1" in proc.stdout
    # rejected files are recorded with their reason
    home_settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    statuses = dict(query(home_settings, "select file_name, status from raw.load_manifest"))
    assert statuses.pop("zz_good.jsonl") == "loaded"
    assert set(statuses.values()) == {"rejected"}


def test_a_bad_file_read_ahead_is_rejected_in_its_turn(settings, tmp_path) -> None:
    """The file after a loaded one is read while that one loads: its error still lands on it,
    in order, and the file after it still loads."""
    good = jsonl(GOOD_EVENT).encode()
    (tmp_path / "a.jsonl").write_bytes(good)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(good * 200)[:-30])
    (tmp_path / "c.jsonl").write_text(jsonl({**GOOD_EVENT, "event_id": "later"}))
    results = ingest_paths(settings, [tmp_path])
    assert [(r.file_name, r.status, r.rows_loaded) for r in results] == [
        ("a.jsonl", "loaded", 1),
        ("b.jsonl.gz", "rejected", 0),
        ("c.jsonl", "loaded", 1),
    ]
    assert "truncated gzip" in results[1].error
    assert query(settings, "select event_id from raw.events order by 1") == [
        (GOOD_EVENT["event_id"],),
        ("later",),
    ]


def test_a_big_file_is_read_in_pieces_and_only_a_small_one_ahead(
    settings, tmp_path, monkeypatch
) -> None:
    """A file is decompressed and parsed a batch's worth at a time (an eighth of the memory
    limit, here 8 MiB), its lines numbered on across the pieces; only a file within that is
    read ahead on the thread (its size from the gzip trailer, not decompressed to find out)."""
    within_64mb = replace(settings, duckdb_memory_limit="64MB")
    events = [jsonl({**GOOD_EVENT, "event_id": f"e{i}"}) for i in range(60_000)]
    events[49_999] = "{not json\n"  # line 50,000: in the second piece
    many = "".join(events).encode()
    (tmp_path / "a.jsonl").write_text(jsonl(GOOD_EVENT))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(many))
    (tmp_path / "c.jsonl").write_text(jsonl({**GOOD_EVENT, "event_id": "later"}))
    (tmp_path / "d.jsonl").write_text(jsonl({**GOOD_EVENT, "event_id": "last"}))
    assert text_bytes(tmp_path / "b.jsonl.gz") == len(many) > 8 * 2**20
    read_ahead, pieces = {}, {}

    def chunks_of(path: Path, chunk_bytes: int):
        read_ahead[path.name] = threading.current_thread().name.startswith("ingest-read")
        for lines in jsonl_chunks(path, chunk_bytes):
            pieces[path.name] = pieces.get(path.name, 0) + 1
            yield lines

    monkeypatch.setattr(load, "jsonl_chunks", chunks_of)
    results = ingest_paths(within_64mb, [tmp_path])
    counts = [(r.rows_read, r.rows_loaded) for r in results]
    assert counts == [(1, 1), (60_000, 59_999), (1, 1), (1, 1)]
    assert read_ahead == {"a.jsonl": False, "b.jsonl.gz": False, "c.jsonl": True, "d.jsonl": True}
    assert pieces == {"a.jsonl": 1, "b.jsonl.gz": 2, "c.jsonl": 1, "d.jsonl": 1}
    assert query(settings, "select source_file, source_line from raw.events_quarantine") == [
        ("b.jsonl.gz", 50_000)
    ]
    assert query(
        settings, "select max(source_line) from raw.events where source_file = 'b.jsonl.gz'"
    ) == [(60_000,)]


def test_parquet_files_are_checked_in_batches_of_their_values(
    settings, tmp_path, monkeypatch
) -> None:
    """A batch is measured in the values its files hold (a Parquet file's uncompressed row
    groups): two big Parquet files are checked one at a time, two small ones together (all
    in one batch held a 10M-event month in DuckDB at once). Each batch is staged in a table
    made anew: DuckDB keeps the rows deleted from a temp table, which held every batch's."""
    within_64mb = replace(settings, duckdb_memory_limit="64MB")  # batches of 8 MiB

    def parquet(name: str, rows: int) -> None:
        frame = pd.DataFrame(
            {
                "event_id": [f"{name}{i}" for i in range(rows)],
                "event_type": "page_view",
                "event_at": "2026-10-01T10:00:00Z",
                "anonymous_id": "a1",
                "page_url": [f"{i:08d}" * 30 for i in range(rows)],  # 240 B, each its own
            }
        )
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)

    for name, rows in (("a", 40_000), ("b", 40_000), ("c", 10), ("d", 10)):
        parquet(name, rows)
    batches, held = [], []

    def spy(con, batch, settings):
        batches.append([path.name for path in batch.paths])
        held.append(  # Parquet files of canonical columns stage their fields, not documents
            con.execute(
                "select (select estimated_size from duckdb_tables() where table_name = "
                "'_staged_fields'), (select count(*) from _staged_fields)"
            ).fetchone()
        )
        return load_batch(con, batch, settings)

    load_batch = load._load_batch
    monkeypatch.setattr(load, "_load_batch", spy)
    results = ingest_paths(within_64mb, [tmp_path])
    assert [r.rows_loaded for r in results] == [40_000, 40_000, 10, 10]
    assert [b for b in batches if b] == [["a.parquet"], ["b.parquet"], ["c.parquet", "d.parquet"]]
    assert [rows for rows, staged in held if staged] == [40_000, 40_000, 20]  # live rows only


def test_a_big_file_broken_after_its_first_pieces_loads_nothing(settings, tmp_path) -> None:
    """The gzip stream ends early after 8 MiB pieces were parsed: the file is rejected whole,
    the next one loads as it would have."""
    within_64mb = replace(settings, duckdb_memory_limit="64MB")
    many = jsonl(*({**GOOD_EVENT, "event_id": f"e{i}"} for i in range(60_000))).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(many)[:-30])
    (tmp_path / "b.jsonl").write_text(jsonl({**GOOD_EVENT, "event_id": "e1"}))
    results = ingest_paths(within_64mb, [tmp_path])
    assert [(r.file_name, r.status, r.rows_loaded) for r in results] == [
        ("a.jsonl.gz", "rejected", 0),
        ("b.jsonl", "loaded", 1),
    ]
    assert "truncated gzip" in results[0].error
    assert query(settings, "select source_file, event_id from raw.events") == [("b.jsonl", "e1")]


def test_lines_are_viewed_across_buffers_as_they_were_delivered(monkeypatch) -> None:
    """Lines are Arrow views into the decompressed text, whose offsets are 32 bits: past a
    buffer's size the text is seen as several buffers, and each line still reads whole (short
    lines inline, long ones across a buffer's end, CR LF and a last line without its end)."""
    monkeypatch.setattr(formats, "VIEW_BUFFER_BYTES", 16)
    delivered = [b"short", b"", b"a line longer than one buffer", b"twelve bytes"]
    delivered += [f"line {i} of the later buffers".encode() for i in range(4)] + [b"\xff\xfe"]
    data = b"\r\n".join(delivered[:3]) + b"\n" + b"\n".join(delivered[3:])
    lines = formats._line_table(data, first_line=5)
    assert lines["raw"].to_pylist() == delivered
    assert lines["text"].to_pylist() == [line.decode() for line in delivered[:-1]] + [None]
    assert lines["source_line"].to_pylist() == list(range(5, 14))
    assert lines["nbytes"].to_pylist() == [7, 2, 30, 13, 28, 28, 28, 28, 2]
    assert len(lines["raw"].chunk(0).buffers()) > 3  # validity, views, several data buffers


def test_pieces_of_a_file_hold_its_lines_once_in_order(tmp_path) -> None:
    """Read a few bytes at a time, a file's pieces hold each line once, numbered as delivered
    (lines across a piece's end, one longer than a piece, CR LF, a blank first line, a last
    line without its end), as the whole file read at once holds them."""
    delivered = [b"", b"first", b"x" * 50, b"crlf\r", b"mid", b"", b"last without end"]
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(delivered)))
    whole = formats.file_lines(path).to_pylist()
    assert [line["raw"] for line in whole] == [line.rstrip(b"\r") for line in delivered]
    for piece_bytes in (7, 16, 1000):
        pieces = [line for lines in jsonl_chunks(path, piece_bytes) for line in lines.to_pylist()]
        assert pieces == whole, piece_bytes


def test_line_level_problems_are_quarantined_not_fatal(settings, tmp_path) -> None:
    """Non-UTF-8 bytes, a 10 MB line and a non-object line lose only themselves."""
    dump = tmp_path / "mixed.jsonl"
    huge = json.dumps({**GOOD_EVENT, "event_id": "huge", "page_url": "x" * 10_000_000})
    body = (
        jsonl(GOOD_EVENT).encode()
        + b'{"event_id": "latin", "anonymous_id": "caf\xe9"}\n'
        + huge.encode()
        + b"\n"
        + b"[1, 2, 3]\r\n"  # Windows line ends too
        + b"\n   \r\n"  # blank lines are not rows
        + jsonl({**GOOD_EVENT, "event_id": "crlf"}).encode().replace(b"\n", b"\r\n")
        + b"null\n"
        + b"  "
        + jsonl({**GOOD_EVENT, "event_id": "indented"}).encode()
        + jsonl({**GOOD_EVENT, "event_id": "last"}).encode().rstrip(b"\n")  # no line end
    )
    dump.write_bytes(body)
    [result] = ingest_paths(settings, [dump])
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (8, 4, 4)
    reasons = dict(query(settings, "select source_line, reason from raw.events_quarantine"))
    assert reasons[2] == "line is not valid UTF-8"
    assert reasons[3].startswith("line is 10000") and "over the 1048576-byte limit" in reasons[3]
    assert reasons[4] == "line is a JSON array, not an object"
    assert reasons[8] == "line is a JSON null, not an object"
    assert query(settings, "select raw_text from raw.events_quarantine where source_line = 4") == [
        ("[1, 2, 3]",)
    ]
    assert query(settings, "select event_id, source_line from raw.events order by 2") == [
        (GOOD_EVENT["event_id"], 1),
        ("crlf", 7),
        ("indented", 9),
        ("last", 10),
    ]
    assert query(settings, "select max(length(raw_text)) from raw.events_quarantine") == [(2000,)]


def test_csv_with_a_broken_row(settings, tmp_path) -> None:
    dump = tmp_path / "events.csv"
    dump.write_text(
        "event_id,event_type,event_at,anonymous_id,properties\n"
        'c1,click,2026-10-01T10:00:00Z,a1,"{""hover_ms"": 5}"\n'
        "c2,click,2026-10-01T10:00:00Z,a1,{},extra,columns\n"
        "c3,hover,2026-10-01T10:00:01Z,a1,\n"
    )
    [result] = ingest_paths(settings, [dump])
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 2, 1)
    assert query(settings, "select event_id, source_line from raw.events order by 1") == [
        ("c1", 2),
        ("c3", 4),
    ]
    [(line, reason)] = query(settings, "select source_line, reason from raw.events_quarantine")
    assert line == 3 and reason.startswith("unparseable CSV line")


def test_a_message_is_known_by_its_message_id_even_a_null_one(settings, tmp_path) -> None:
    dump = tmp_path / "messages.jsonl"
    dump.write_text(
        jsonl({"type": "alias", "messageId": "m1", "anonymousId": "a1"})
        + jsonl({"type": "alias", "messageId": None, "anonymousId": "a1"})
        + jsonl(
            {
                "type": "track",
                "event": "Product Added",
                "messageId": "m3",
                "anonymousId": "a",
                "timestamp": "2026-10-01T08:00:00Z",
            }
        )
    )
    [result] = ingest_paths(settings, [dump])
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    assert (
        query(settings, "select reason from raw.events_quarantine order by source_line")
        == [("unsupported Segment/RudderStack message type 'alias'",)] * 2
    )
    assert query(settings, "select event_id, event_type from raw.events") == [("m3", "add_to_cart")]


def test_a_quarantined_parquet_row_shows_the_fields_it_was_read_into(settings, tmp_path) -> None:
    """A Parquet row is checked as read, never written out as a document: the quarantine
    still shows what each bad row held, and its neighbours load."""
    pd.DataFrame(
        {
            "event_id": ["p1", "p2", "p3"],
            "event_type": ["page_view", "page_teleport", "page_view"],
            "event_at": ["2026-10-01T08:00:00Z"] * 3,
            "anonymous_id": ["a1", "a2", "a3"],
            "properties": ['{"scroll_percent": 40}', "", "not json"],
        }
    ).to_parquet(tmp_path / "d.parquet", index=False)
    [result] = ingest_paths(settings, [tmp_path / "d.parquet"])
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    quarantined = query(
        settings, "select source_line, reason, raw_text from raw.events_quarantine order by 1"
    )
    assert [(line, reason) for line, reason, _ in quarantined] == [
        (2, "unknown event_type 'page_teleport'"),
        (3, "properties is not a JSON object"),
    ]
    shown = [json.loads(text) for _, _, text in quarantined]
    assert [(row["event_id"], row["event_type"], row["anonymous_id"]) for row in shown] == [
        ("p2", "page_teleport", "a2"),
        ("p3", "page_view", "a3"),
    ]
    assert [row["properties"] for row in shown] == [None, "not json"]
    assert query(settings, "select event_id, properties::varchar from raw.events") == [
        ("p1", '{"scroll_percent":40}')
    ]


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet", "segment"])
def test_every_format_loads_the_same_events(settings, dataset_factory, file_format) -> None:
    """The same generated events as JSON Lines, CSV, Parquet or Segment messages load alike."""
    reference = dataset_factory(file_format="jsonl.gz")
    ingest_paths(settings, [dataset_factory(file_format=file_format)])
    columns = "event_id, event_type, event_at, received_at, anonymous_id, user_id"
    page_columns = (
        ", page_url, page_type, content_id, content_category, element_id, "
        "device_type, country, referrer, utm_source, utm_medium, utm_campaign, "
        "properties::varchar"
    )
    ref_settings = Settings.from_env({"MICROSEG_HOME": str(settings.home.parent / "reference")})
    ingest_paths(ref_settings, [reference])

    def rows(s, where: str, cols: str) -> list[tuple]:
        return query(s, f"select {cols} from raw.events where {where} order by event_id")

    # Segment identify calls carry no page context, so identify events compare on identity only
    for where, cols in (
        ("event_type <> 'identify'", columns + page_columns),
        ("event_type = 'identify'", columns),
    ):
        got, want = rows(settings, where, cols), rows(ref_settings, where, cols)
        assert len(got) == len(want) > 0
        assert got == want


def _whole_files_left(home: Path) -> int:
    """Files a killed ingest left in the manifest, after checking that they hold exactly their
    rows and that no row of a file the kill interrupted is there (0 without a commit)."""
    if not (home / "warehouse.duckdb").exists():
        return 0
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        if not has_table(con, "raw", "load_manifest"):
            return 0
        unaccounted = con.execute(
            f"select count(*) from ({FILE_ACCOUNTING_SQL}) where rows_unaccounted <> 0 "
            "or events_not_in_manifest <> 0 or quarantine_rows_not_in_manifest <> 0"
        ).fetchone()[0]
        assert unaccounted == 0
        return con.execute("select count(*) from raw.load_manifest").fetchone()[0]


def test_killed_ingest_then_rerun_equals_one_clean_run(tmp_path, small_dataset) -> None:
    """SIGKILL at several moments of a run; after a re-run the tables equal a clean run's.
    The killed runs read two files per batch (a small memory limit), the clean run all files in
    one: the result does not depend on the batching either."""
    clean_home = tmp_path / "clean"
    assert run_cli("ingest", str(small_dataset), home=clean_home).returncode == 0
    expected = table_snapshot(Settings.from_env({"MICROSEG_HOME": str(clean_home)}))
    small_batches = {"MICROSEG_DUCKDB_MEMORY_LIMIT": "64MB"}  # 8 MB: two files a batch
    started = time.monotonic()
    run_cli("ingest", str(small_dataset), home=tmp_path / "timed", env=small_batches)
    duration = time.monotonic() - started

    files = len(list(small_dataset.glob("events_*")))
    killed, cut_between_files = 0, 0
    for i, fraction in enumerate((0.45, 0.6, 0.75, 0.9)):
        home = tmp_path / f"killed{i}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "microseg.cli", "ingest", str(small_dataset)],
            env={**os.environ, **small_batches, "MICROSEG_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(duration * fraction)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        cut_between_files += 0 < _whole_files_left(home) < files
        rerun = run_cli("ingest", str(small_dataset), home=home, env=small_batches)
        assert rerun.returncode == 0, rerun.stderr
        assert table_snapshot(Settings.from_env({"MICROSEG_HOME": str(home)})) == expected, (
            f"after a kill at {fraction:.0%} of a run"
        )
    assert killed >= 2, "the kills must land while the ingest is running"
    assert cut_between_files >= 1, "a kill must leave some files loaded and others not"


def test_folders_are_not_searched_recursively(settings, small_dataset) -> None:
    results = ingest_paths(settings, [small_dataset])
    assert all(r.file_name.startswith("events_") for r in results)
    assert (small_dataset / "ground_truth").is_dir()


@pytest.mark.parametrize(
    ("name", "day"),
    [
        ("events_2026-10-12.jsonl.gz", date(2026, 10, 12)),
        ("2026-10-12_segment.json", date(2026, 10, 12)),
        ("events.jsonl", None),
        ("events_2026-13-40.csv", None),  # not a date: loaded by any night
        ("dump_20261012-2026-10-12-x.parquet", date(2026, 10, 12)),
        ("events_20261012.json", date(2026, 10, 12)),  # GA4's daily table
        ("events_20261012-000000000003.parquet.gz", date(2026, 10, 12)),  # a sharded extract
        ("myevents_20261012.json", None),
        ("events_20261340.json", None),
    ],
)
def test_delivery_date_comes_from_the_iso_date_in_the_name(name, day) -> None:
    assert delivery_date(Path(name)) == day


def test_nightly_ingest_loads_only_the_deliveries_due_by_its_date(settings, small_dataset) -> None:
    """All five days are in the landing folder (a backfill over a past range): the night of
    10-03 loads 10-01 and 10-02 and holds the rest, as the nightly runs saw them."""
    settings.landing_dir.mkdir(parents=True)
    for dump in sorted(small_dataset.glob("events_*")):
        shutil.copy(dump, settings.landing_dir)
    undated = settings.landing_dir / "manual_fix.jsonl"
    undated.write_text(jsonl(GOOD_EVENT))

    summary = ingest_step(settings, date(2026, 10, 3))
    loaded = [
        name for (name,) in query(settings, "select file_name from raw.load_manifest order by 1")
    ]
    assert loaded == ["events_2026-10-01.jsonl.gz", "events_2026-10-02.jsonl.gz", undated.name]
    assert "3 new file(s)" in summary
    assert "3 held for later nights" in summary and "events_2026-10-05.jsonl.gz" in summary
    assert query(
        settings, "select max(event_at)::date from raw.events where event_id <> ?", ["good-1"]
    ) == [(date(2026, 10, 2),)]

    assert "0 new file(s)" in ingest_step(settings, date(2026, 10, 3))  # a re-run loads nothing
    assert "2 new file(s)" in ingest_step(settings, date(2026, 10, 5))


def test_a_night_with_no_delivery_due_says_what_is_held(settings, small_dataset) -> None:
    settings.landing_dir.mkdir(parents=True)
    shutil.copy(small_dataset / "events_2026-10-05.jsonl.gz", settings.landing_dir)
    with pytest.raises(InputError, match=r"no delivery due by 2026-10-05 .*events_2026-10-05"):
        ingest_step(settings, date(2026, 10, 5))


def test_missing_path_is_a_one_line_error(tmp_path) -> None:
    proc = run_cli("ingest", str(tmp_path / "nope"), home=tmp_path / "home")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"


def test_locked_warehouse_is_a_one_line_error(settings, tmp_path) -> None:
    """Every writer, dbt included (which once printed 224 lines of traceback first)."""
    dump = tmp_path / "e.jsonl"
    dump.write_text(jsonl(GOOD_EVENT))
    assert run_cli("ingest", str(dump), home=settings.home).returncode == 0
    with duckdb.connect(str(settings.warehouse_path)):
        for command in (["ingest", str(dump)], ["transform"], ["segments"]):
            proc = run_cli(*command, home=settings.home)
            assert proc.returncode == 1, command
            assert proc.stderr.startswith("error: warehouse "), command
            assert "in use by another process" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1


def test_copy_of_a_loaded_file_under_a_new_name_is_all_duplicates(settings, tmp_path) -> None:
    dump = tmp_path / "a.jsonl"
    dump.write_text(jsonl(GOOD_EVENT, {**GOOD_EVENT, "event_id": "2"}))
    shutil.copy(dump, tmp_path / "b.jsonl")
    a, b = ingest_paths(settings, [tmp_path])
    assert (a.rows_loaded, b.rows_loaded, b.rows_duplicate) == (2, 0, 2)


def test_a_load_whose_rows_disagree_with_its_manifest_row_is_rolled_back(
    settings, tmp_path, monkeypatch
) -> None:
    """The identity rows read = loaded + duplicates + quarantined is checked against what the
    raw tables hold before the commit: a load that lost a row leaves nothing behind."""
    import microseg.ingest.load as ingest

    dump = tmp_path / "e.jsonl"
    dump.write_text(jsonl(GOOD_EVENT) + jsonl({**GOOD_EVENT, "event_id": "good-2"}))
    load = ingest._load

    def lossy_load(con, file_name, contract) -> int:  # a load that drops one of its rows
        loaded = load(con, file_name, contract)
        con.execute("delete from raw.events where event_id = 'good-2'")
        return loaded

    monkeypatch.setattr(ingest, "_load", lossy_load)
    with pytest.raises(RuntimeError, match=r"e\.jsonl: raw tables disagree with the manifest"):
        ingest_paths(settings, [dump])
    assert query(settings, "select count(*) from raw.events") == [(0,)]
    assert query(settings, "select count(*) from raw.load_manifest") == [(0,)]


def test_only_the_reader_can_reject_a_file(settings, tmp_path, monkeypatch) -> None:
    """A bug in the generated SQL (or running out of memory) fails the step to be retried or
    fixed; it once marked a good file 'rejected' as if its content were bad."""
    import microseg.ingest.load as ingest

    dump = tmp_path / "e.jsonl"
    dump.write_text(jsonl(GOOD_EVENT))
    monkeypatch.setattr(ingest, "checked_sql", lambda _contract: "select frm _staged")
    with pytest.raises(duckdb.BinderException):
        ingest_paths(settings, [dump])
    assert query(settings, "select count(*) from raw.load_manifest") == [(0,)]
    monkeypatch.undo()
    [result] = ingest_paths(settings, [dump])
    assert (result.status, result.rows_loaded) == ("loaded", 1)


def test_running_out_of_memory_is_one_line_naming_the_setting(tmp_path, small_dataset) -> None:
    proc = run_cli(
        "ingest", str(small_dataset), home=tmp_path, env={"MICROSEG_DUCKDB_MEMORY_LIMIT": "20MB"}
    )
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: DuckDB ran out of memory") and "MEMORY_LIMIT" in line
