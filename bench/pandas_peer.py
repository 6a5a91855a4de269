"""The pandas peer of `make bench`: what a data team would otherwise write in a notebook.

Vectorized pandas over the same gzipped JSON Lines dumps: parse (lines that are not JSON are
skipped), drop repeated event_ids, 30-minute sessions per person (user id, else device), and
the user features of one day over the 28 days before it. It does far less than microseg (no
contract checks, quarantine, identity stitching, session cap, incremental state, tests), which
is the point: microseg's ingest + full build should still be no slower.

Usage: python bench/pandas_peer.py AS_OF FILE...   (prints one JSON line: rows, people)
"""

from __future__ import annotations

import gzip
import json
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import yaml

COLUMNS = ["event_id", "event_type", "event_at", "anonymous_id", "user_id", "page_type"]
# the same business constants as the dbt project, from their one source
VARS = yaml.safe_load((Path(__file__).parents[1] / "dbt_project" / "dbt_project.yml").read_text())[
    "vars"
]
PLACEHOLDERS = set(VARS["identity_blocklist"])
SESSION_GAP = pd.Timedelta(minutes=VARS["session_timeout_minutes"])


def _parsed(line: str) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def read_events(paths: list[str]) -> pd.DataFrame:
    frames = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as lines:
            records = [e for e in map(_parsed, lines) if e is not None]
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        frame["revenue"] = [
            (e.get("properties") or {}).get("revenue")
            if isinstance(e.get("properties"), dict)
            else None
            for e in records
        ]
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    events["event_at"] = pd.to_datetime(
        events["event_at"], utc=True, errors="coerce", format="ISO8601"
    )
    events["revenue"] = pd.to_numeric(events["revenue"], errors="coerce")
    return events.dropna(subset=["event_id", "event_at"])


def sessionize(events: pd.DataFrame) -> pd.DataFrame:
    events = events.drop_duplicates("event_id")
    user = events["user_id"].astype(object).str.strip()
    usable = user.notna() & ~user.str.lower().isin(PLACEHOLDERS)
    events = events.assign(person=user.where(usable, events["anonymous_id"]))
    events = events.dropna(subset=["person"]).sort_values(["person", "event_at", "event_id"])
    new_person = events["person"].ne(events["person"].shift())
    gap = events["event_at"].diff().gt(SESSION_GAP)
    events["session"] = (new_person | gap).astype("int64").cumsum()
    return events


def user_features(events: pd.DataFrame, as_of: date) -> pd.DataFrame:
    end = pd.Timestamp(as_of, tz="UTC")
    window = events[(events["event_at"] >= end - timedelta(days=28)) & (events["event_at"] < end)]
    window = window.assign(
        is_page_view=window["event_type"].eq("page_view"),
        is_purchase=window["event_type"].eq("purchase"),
    )
    sessions = window.groupby(["person", "session"]).agg(
        started=("event_at", "min"), ended=("event_at", "max")
    )
    sessions["seconds"] = (sessions["ended"] - sessions["started"]).dt.total_seconds()
    per_person = sessions.groupby("person").agg(
        sessions_28d=("seconds", "size"), avg_session_s=("seconds", "mean")
    )
    counts = window.groupby("person").agg(
        events_28d=("event_id", "size"),
        page_views_28d=("is_page_view", "sum"),
        purchases_28d=("is_purchase", "sum"),
        revenue_28d=("revenue", "sum"),
        last_seen=("event_at", "max"),
    )
    features = per_person.join(counts)
    features["days_since_seen"] = (end - features.pop("last_seen")).dt.days
    return features


def main(argv: list[str]) -> int:
    as_of, paths = date.fromisoformat(argv[0]), argv[1:]
    events = sessionize(read_events(paths))
    features = user_features(events, as_of)
    print(json.dumps({"rows": len(events), "people": len(features)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
