"""Erasure's file scrubbing and request parsing, on small files of every format it rewrites."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from microseg.errors import InputError, UsageError
from microseg.privacy.erase import (
    Request,
    needle_pattern,
    person_id_of,
    read_requests,
    redact_file,
    scrub_file,
)
from microseg.privacy.keys import keyed_hash
from microseg.privacy.pseudonymize import scrubbed_url_sql, truncated_ip_sql

GONE = {"user_12", "anon_a"}


def test_json_lines_lose_only_lines_that_quote_an_erased_id(tmp_path: Path) -> None:
    lines = [
        {"event_id": "1", "user_id": "user_12"},
        {"event_id": "2", "user_id": "user_123"},  # a longer id that contains it stays
        {"event_id": "3", "anonymous_id": "anon_a", "user_id": None},
        {"event_id": "4", "anonymous_id": "anon_ab"},
    ]
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    assert scrub_file(path, GONE) == 2
    kept = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert [x["event_id"] for x in kept] == ["2", "4"]
    assert scrub_file(path, GONE) == 0  # again: nothing left to remove


def test_csv_rows_go_by_whole_field_and_keep_header_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "audience.csv"
    path.write_bytes(b"\xef\xbb\xbfperson_id,user_id\r\nper_1,user_12\r\nper_2,user_120\r\n")
    assert scrub_file(path, GONE) == 1
    assert path.read_bytes() == b"\xef\xbb\xbfperson_id,user_id\nper_2,user_120\n"


def test_parquet_rows_go_by_id_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    duckdb.sql(
        "select * from (values ('1', 'user_12', null), ('2', null, 'anon_b')) "
        "t(event_id, user_id, anonymous_id)"
    ).write_parquet(str(path))
    assert scrub_file(path, GONE) == 1
    assert duckdb.sql(f"select event_id from '{path}'").fetchall() == [("2",)]
    ga4 = tmp_path / "events_20261001.parquet"  # the GA4 export: the device id by its name
    duckdb.sql(
        "select * from (values ('page_view', 'anon_a'), ('scroll', 'anon_ab')) "
        "t(event_name, user_pseudo_id)"
    ).write_parquet(str(ga4))
    assert scrub_file(ga4, GONE) == 1
    assert duckdb.sql(f"select event_name from '{ga4}'").fetchall() == [("scroll",)]
    atomic = tmp_path / "atomic_events.parquet"  # Snowflake's upper-case column names
    duckdb.sql(
        "select * from (values ('e1', 'anon_a'), ('e2', 'anon_b')) t(EVENT_ID, DOMAIN_USERID)"
    ).write_parquet(str(atomic))
    assert scrub_file(atomic, GONE) == 1
    assert duckdb.sql(f"select EVENT_ID from '{atomic}'").fetchall() == [("e2",)]


def test_requests_from_options_and_file(tmp_path: Path) -> None:
    listed = tmp_path / "requests.txt"
    listed.write_text("# ticket 42\nuser_id=u1\n\nanonymous_id = d1\nperson=per_x\n")
    assert read_requests([("user_id", "u0")], listed) == [
        Request("user", "u0"),
        Request("user", "u1"),
        Request("anonymous", "d1"),
        Request("person", "per_x"),
    ]
    listed.write_text("email=a@b.c\n")
    with pytest.raises(InputError, match=r"requests.txt line 1: expected user_id=\.\.\."):
        read_requests([], listed)
    with pytest.raises(UsageError, match="name whom to erase"):
        read_requests([], None)


def test_person_ids_and_keyed_hashes() -> None:
    assert person_id_of("user:u1") == "per_" + hashlib.md5(b"user:u1").hexdigest()[:24]
    one = keyed_hash(b"k1", "user", "u1")
    assert one != keyed_hash(b"k2", "user", "u1") != keyed_hash(b"k1", "anonymous", "u1")
    assert len(one) == 64 and "u1" not in one


def test_reports_and_logs_keep_their_records_with_ids_redacted(tmp_path: Path) -> None:
    path = tmp_path / "validation.json"
    path.write_text('{"unexpected": ["user_12", "user_123", "anon_a","anon_a"], "n": 4}')
    assert redact_file(path, needle_pattern(GONE)) == 3
    assert json.loads(path.read_text()) == {
        "unexpected": ["[erased]", "user_123", "[erased]", "[erased]"],
        "n": 4,
    }


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://x/a?email=ann@b.c&utm_source=n", "https://x/a?utm_source=n"),
        ("https://x/a?utm_source=n&EMAIL=ann@b.c", "https://x/a?utm_source=n"),
        ("https://x/a?email=ann@b.c#top", "https://x/a#top"),
        ("https://x/a?token=1&e=2&ok=3", "https://x/a?ok=3"),
        ("https://x/a?emails=1&mail=2", "https://x/a?emails=1"),  # names match whole
    ],
)
def test_query_parameters_named_are_removed_from_urls(url: str, kept: str) -> None:
    sql = scrubbed_url_sql(f"'{url}'", ("email", "mail", "token", "e"))
    assert duckdb.sql(f"select {sql}").fetchone() == (kept,)


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("203.0.113.57", "203.0.113.0"),
        ("2001:db8:85a3::8a2e:370:7334", "2001:db8:85a3::"),
        ("2001:db8::1", "2001:db8::"),
        ("not an address", None),
    ],
)
def test_ip_addresses_keep_only_their_network(ip: str, network: str | None) -> None:
    assert duckdb.sql(f"select {truncated_ip_sql(repr(ip))}").fetchone() == (network,)
