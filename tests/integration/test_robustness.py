"""What a real site sends in its first week must not stop the night or empty an audience in
silence: unlisted device types, quiet days, trial segment files."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from microseg.pipeline import run_nightly
from tests.helpers import query

pytestmark = pytest.mark.slow

NIGHT = date(2026, 10, 3)  # the night after dataset_factory's two days (10-01, 10-02)
SENT_DEVICE_TYPES = {"mobile": "iOS", "desktop": "smart_fridge", "tablet": "Android"}


def _rewrite_device_types(path: Path) -> dict[str, str]:
    """Replace the device type of every event in a .jsonl.gz dump as a native app or an
    unknown device would send it; returns event_id -> the value sent."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    sent: dict[str, str] = {}
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:  # the generator's malformed lines stay as they are
            out.append(line)
            continue
        if isinstance(event, dict) and event.get("device_type") in SENT_DEVICE_TYPES:
            event["device_type"] = SENT_DEVICE_TYPES[event["device_type"]]
            sent[str(event.get("event_id"))] = event["device_type"]
        out.append(json.dumps(event))
    path.write_bytes(gzip.compress(("\n".join(out) + "\n").encode()))
    return sent


def test_unlisted_device_types_run_through_a_whole_night(settings, dataset_factory) -> None:
    """`ios` from a Segment mobile library once failed fct_sessions' accepted_values test and
    stopped the build; now aliases map to the canonical value and the rest to `other`."""
    shutil.copytree(dataset_factory(users=80, days=2), settings.landing_dir)
    sent = _rewrite_device_types(settings.landing_dir / "events_2026-10-02.jsonl.gz")
    assert set(sent.values()) == set(SENT_DEVICE_TYPES.values())
    lines: list[str] = []
    run_nightly(settings, NIGHT, report=lines.append)

    assert any(line.startswith("segments: ") for line in lines)
    # raw keeps what was sent; staging holds the canonical value
    staged = dict(
        query(
            settings,
            "select r.device_type, any_value(s.device_type) from raw.events r "
            "join staging.stg_events s using (event_id) "
            "where r.device_type in ('iOS', 'smart_fridge', 'Android') group by 1",
        )
    )
    assert staged == {"iOS": "mobile", "smart_fridge": "other", "Android": "mobile"}
    devices = {
        row[0] for row in query(settings, "select distinct device_type from marts.fct_sessions")
    }
    assert devices == {"mobile", "desktop", "tablet", "other"}
    on_day_two = query(
        settings,
        "select count(*) from marts.segment_memberships where as_of_date = ?",
        [NIGHT],
    )
    assert on_day_two[0][0] > 0
