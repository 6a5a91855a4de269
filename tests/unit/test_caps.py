"""Frequency caps, re-eligibility, TTL and decay on crafted firings (caps.decide, exactly)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pandas as pd
import pytest

from microseg.activation.caps import country_time_zone, decide, relevance
from microseg.activation.grammar import Cap, Trigger

CUTOFF = datetime(2026, 10, 10)


def trigger(name: str, *, channel="email", priority=0, tags=("t",), bypass=False, ttl=10**6,
            reeligible=0, half_life=60) -> Trigger:  # fmt: skip
    return Trigger(
        name=name, title=name, owner="o", purpose="marketing", channel=channel,
        priority=priority, tags=tags, ttl_minutes=ttl, reeligible_after_hours=reeligible,
        half_life_minutes=half_life, bypass_caps=bypass, payload=("evidence",),
        destinations=("files",), variant=None, definition_hash="h", plan={}, score_models=(),
    )  # fmt: skip


def firings(*rows) -> pd.DataFrame:
    """rows: (trigger, person, session, fired_at)."""
    return pd.DataFrame(rows, columns=["trigger_name", "person_id", "session_id", "fired_at"])


def fates(decided: pd.DataFrame) -> dict[tuple[str, datetime], str | None]:
    return {
        (r.trigger_name, r.fired_at.to_pydatetime()): r.reason
        for r in decided.itertuples(index=False)
    }


def run(candidates, triggers, caps, *, before=None, zones=None, unconsented=()):
    by_name = {t.name: t for t in triggers}
    return decide(
        candidates,
        before if before is not None else firings(),
        by_name,
        caps,
        CUTOFF,
        set(unconsented),
        zones or {},
    )


def test_two_per_session_keeps_the_highest_priority_then_most_relevant() -> None:
    t = datetime(2026, 10, 9, 20)
    triggers = [trigger("low", priority=1), trigger("high", priority=5), trigger("mid", priority=3),
                trigger("mid_late", priority=3)]  # fmt: skip
    decided = run(
        firings(
            ("low", "p", "s1", t),
            ("high", "p", "s1", t + timedelta(minutes=1)),
            ("mid", "p", "s1", t + timedelta(minutes=2)),
            ("mid_late", "p", "s1", t + timedelta(minutes=3)),  # same priority, fresher
            ("low", "p", "s2", t + timedelta(hours=1)),  # another session: its own budget
        ),
        triggers,
        [Cap("two_per_session", 2, "session", None, None, None)],
    )
    assert fates(decided) == {
        ("high", t + timedelta(minutes=1)): None,
        ("mid_late", t + timedelta(minutes=3)): None,
        ("mid", t + timedelta(minutes=2)): "capped:two_per_session",
        ("low", t): "capped:two_per_session",
        ("low", t + timedelta(hours=1)): None,
    }


def test_a_day_is_the_persons_calendar_day_across_utc_midnight() -> None:
    """Berlin is UTC+2 in October: 21:30 UTC on the 8th is 23:30 there, 22:30 UTC is 00:30 on
    the 9th: two Berlin days, one UTC day; 23:30 UTC falls on Berlin's 9th too."""
    a, b, c = (
        datetime(2026, 10, 8, 21, 30),
        datetime(2026, 10, 8, 22, 30),
        datetime(2026, 10, 8, 23, 30),
    )
    cap = [Cap("one_a_day", 1, "day", None, None, None)]
    triggers = [trigger("x"), trigger("y"), trigger("z")]
    candidates = firings(("x", "p", "s1", a), ("y", "p", "s2", b), ("z", "p", "s3", c))
    berlin = run(candidates, triggers, cap, zones={"p": country_time_zone("DE")})
    assert country_time_zone("DE") == "Europe/Berlin"
    # the 9th (Berlin) has one slot: the fresher firing takes it
    assert fates(berlin) == {("x", a): None, ("y", b): "capped:one_a_day", ("z", c): None}
    utc = run(candidates, triggers, cap)  # unknown zone: UTC, all three on the 8th
    assert sorted(fates(utc).values(), key=str) == [None, "capped:one_a_day", "capped:one_a_day"]


def test_a_rolling_window_counts_earlier_nights_and_is_exact_at_its_edge() -> None:
    cap = [Cap("three_a_week", 3, "rolling", 7, None, "commerce")]
    triggers = [trigger("buy", tags=("commerce",)), trigger("read", tags=("content",))]
    start = datetime(2026, 10, 1, 12)
    before = firings(*(("buy", "p", f"s{i}", start + timedelta(days=i)) for i in range(3)))
    inside = start + timedelta(days=6, hours=23)  # 3 sends in the 7 days before it
    edge = start + timedelta(days=7)  # the first send has left the window
    decided = run(
        firings(("buy", "p", "s8", inside), ("read", "p", "s9", inside)), triggers, cap,
        before=before,
    )  # fmt: skip
    assert fates(decided) == {("buy", inside): "capped:three_a_week", ("read", inside): None}
    decided = run(firings(("buy", "p", "s8", edge)), triggers, cap, before=before)
    assert fates(decided) == {("buy", edge): None}


def test_most_restrictive_cap_is_named_and_bypass_still_counts() -> None:
    t = datetime(2026, 10, 9, 10)
    caps = [
        Cap("five_a_day", 5, "day", None, None, None),
        Cap("one_email_a_day", 1, "day", None, "email", None),
    ]
    triggers = [trigger("urgent", bypass=True, priority=9), trigger("promo", priority=1),
                trigger("push", channel="push")]  # fmt: skip
    decided = run(
        firings(("urgent", "p", "s1", t), ("promo", "p", "s2", t + timedelta(hours=1)),
                ("push", "p", "s3", t + timedelta(hours=2))),
        triggers, caps,
    )  # fmt: skip
    assert fates(decided) == {
        ("urgent", t): None,  # bypasses the caps, and counts toward them
        ("promo", t + timedelta(hours=1)): "capped:one_email_a_day",
        ("push", t + timedelta(hours=2)): None,
    }


def test_consent_ttl_and_re_eligibility() -> None:
    t = datetime(2026, 10, 9, 22)
    triggers = [trigger("cart", ttl=120, reeligible=24), trigger("old", ttl=30)]
    decided = run(
        firings(
            ("cart", "p", "s1", t + timedelta(minutes=30)),
            ("cart", "p", "s2", t + timedelta(minutes=50)),  # 20 min after: too soon
            ("old", "p", "s1", t),  # 2 h before the cutoff, TTL 30 min
            ("cart", "gone", "s3", t + timedelta(minutes=40)),
            ("cart", "other", "s4", t + timedelta(minutes=40)),
        ),
        triggers,
        [],
        unconsented={("gone", "marketing"), ("other", "personalization")},
    )
    assert fates(decided)[("cart", t + timedelta(minutes=50))] is None  # fresher one first
    assert fates(decided)[("cart", t + timedelta(minutes=30))] == "re_eligibility"
    assert fates(decided)[("old", t)] == "expired"
    reasons = {r.person_id: r.reason for r in decided.itertuples() if r.session_id in ("s3", "s4")}
    assert reasons == {"gone": "not_consented:marketing", "other": None}  # the trigger's purpose


@pytest.mark.parametrize("age_minutes, expected", [(0, 1.0), (60, 0.5), (120, 0.25)])
def test_relevance_halves_every_half_life(age_minutes: int, expected: float) -> None:
    assert math.isclose(relevance(timedelta(minutes=age_minutes), 60), expected)


def test_countries_spanning_offsets_fall_back_to_utc() -> None:
    assert country_time_zone("US") == "UTC"
    assert country_time_zone("IN") == "Asia/Kolkata"
    assert country_time_zone(None) == "UTC"
