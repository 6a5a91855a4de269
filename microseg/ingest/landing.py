"""Which files to load and when: formats by name, folders, delivery dates, content hashes."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

from microseg.errors import InputError
from microseg.ingest.formats import first_lines, parquet_columns
from microseg.ingest.ga4 import is_ga4_columns, is_ga4_line
from microseg.ingest.snowplow import is_atomic_columns, is_atomic_header, is_snowplow_line


def detect_format(path: Path, declared: str | None = None) -> str:
    """The declared format, else the file's from its name - jsonl (plain or .gz), csv (plain
    or .gz) or parquet - and its shape: the GA4 export's rows (JSON lines or Parquet columns
    naming event_name and event_timestamp) are ga4; when most of its first lines have 131
    tab-separated fields, Snowplow's enriched format, whatever the name (Snowplow's loaders
    write .tsv, or part-0000.gz: rename such parts, their names repeat across folders)."""
    if declared is not None:
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last == ".parquet":
        names = parquet_columns(path)
        return (
            "ga4"
            if is_ga4_columns(names)
            else "snowplow"
            if is_atomic_columns(names)
            else "parquet"
        )
    head = first_lines(path)

    def most(test) -> bool:
        return bool(head) and sum(map(test, head)) * 2 > len(head)

    if last in {".jsonl", ".ndjson", ".json"}:
        return "ga4" if most(is_ga4_line) else "jsonl"
    if most(is_snowplow_line) or (last == ".csv" and head and is_atomic_header(head[0])):
        return "snowplow"
    if last in {".csv", ".tsv"}:
        return "csv"
    raise InputError(
        f"{path.name}: unknown format (expected .jsonl, .json, .csv, .parquet, or Snowplow "
        "enriched events: 131 tab-separated fields; the GA4 export is .json or .parquet)"
    )


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files named directly, plus the visible files directly inside named folders (sorted).

    Folders are not searched recursively: the generator's ground truth lives in a subfolder
    beside the dumps and must never be loaded.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


DELIVERY_DATE = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")
GA4_TABLE_DAY = re.compile(r"(?<![A-Za-z])events_(\d{8})(?!\d)")  # GA4's events_YYYYMMDD


def delivery_date(path: Path) -> date | None:
    """The day a landing file holds, from the ISO date in its name (events_2026-10-12.jsonl.gz)
    or the GA4 export's table name (events_20261012.json, events_20261012-000000000001.json);
    None for an undated name."""
    match = DELIVERY_DATE.search(path.name) or GA4_TABLE_DAY.search(path.name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def split_due(files: list[Path], as_of: date) -> tuple[list[Path], list[Path]]:
    """(due, held): the night of `as_of` loads undated files and days before `as_of`; later
    days wait for their own night. This is what makes a backfill see, night by night, exactly
    the deliveries the nightly runs saw, even when every file is already in the landing folder.
    """
    due, held = [], []
    for path in files:
        day = delivery_date(path)
        (due if day is None or day < as_of else held).append(path)
    return due, held


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
