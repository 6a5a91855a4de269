"""What a real site sends in its first week must not stop the night or empty an audience in
silence: unlisted device types, quiet days, trial segment files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import date
from pathlib import Path

import pytest

from microseg.config import Settings
from microseg.errors import DataQualityError, NothingToRunError
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


def test_quiet_days_carry_features_forward_and_far_nights_have_nothing_to_build(
    settings, dataset_factory
) -> None:
    """A night after days without events once failed at the feature checkpoint ("observed
    0"); the first scheduled Airflow run, long after the demo data, failed the same way."""
    shutil.copytree(dataset_factory(users=80, days=2), settings.landing_dir)
    run_nightly(settings, NIGHT, report=lambda _line: None)
    quiet_night = date(2026, 10, 5)  # 10-03 and 10-04 had no events

    strict = Settings.from_env({**os.environ, "MICROSEG_MISSING_DELIVERY": "error"})
    with pytest.raises(DataQualityError, match="no events on 2026-10-03, 2026-10-04"):
        run_nightly(strict, quiet_night, report=lambda _line: None)

    lines: list[str] = []
    run_nightly(settings, quiet_night, report=lines.append)
    assert any(
        "warning: no events on 2026-10-03, 2026-10-04 (a missing delivery?): features carried "
        "forward to 2026-10-05" in line
        for line in lines
    )
    per_day = dict(
        query(
            settings,
            "select as_of_date, count(*) from marts.fct_user_features_daily "
            "where as_of_date >= ? group by 1",
            [NIGHT],
        )
    )
    assert per_day[quiet_night] == per_day[NIGHT] > 0  # everybody is still there
    carried = query(
        settings,
        "select count(*) from marts.fct_user_features_daily a "
        "join marts.fct_user_features_daily b using (person_id) "
        "where a.as_of_date = ? and b.as_of_date = ? "
        "and a.sessions_28d = b.sessions_28d and a.purchases_28d = b.purchases_28d",
        [NIGHT, quiet_night],
    )
    assert carried == [(per_day[NIGHT],)]
    assert (settings.export_dir / "2026-10-05" / "cart_abandoners.csv").exists()

    with pytest.raises(
        NothingToRunError,
        match=r"nothing to build for 2026-10-20: no events in "
        r"the 7 days before it \(the newest is on 2026-10-02",
    ):
        run_nightly(settings, date(2026, 10, 20), report=lambda _line: None)
    assert query(settings, "select max(as_of_date) from marts.fct_user_features_daily") == [
        (quiet_night,)
    ]
