"""Which firings become messages: consent, TTL, re-eligibility and frequency caps, with decay.

Pure functions over data frames, so that crafted cases test them exactly. The firings of one
run compete for what the caps leave: they are decided in order of priority, then decayed
relevance, then trigger name (then time and person, so that the order is total), and each is
checked against the messages already accepted: earlier runs' (their windows span runs) and this
run's so far. A message's time is its firing moment, so a re-run decides the same way.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pandas as pd
import pytz

from microseg.activation.grammar import Cap, Trigger

LN2 = math.log(2)
CANDIDATE_COLUMNS = ["trigger_name", "person_id", "session_id", "fired_at"]


def relevance(age: timedelta, half_life_minutes: int) -> float:
    """exp(-ln 2 * age / half_life): 1 at the firing moment, 1/2 a half-life later."""
    return math.exp(-LN2 * max(age.total_seconds(), 0.0) / (half_life_minutes * 60))


@cache
def country_time_zone(country: str | None) -> str:
    """The time zone of a country that keeps one UTC offset (its principal zone); UTC for a
    country spanning several offsets (US, BR) or none known."""
    zones = pytz.country_timezones.get((country or "").lower(), [])
    if not zones:
        return "UTC"
    probes = (datetime(2026, 1, 15), datetime(2026, 7, 15))
    offsets = {tuple(ZoneInfo(z).utcoffset(p) for p in probes) for z in zones}
    return zones[0] if len(offsets) == 1 else "UTC"


def _local_day(fired_at: datetime, zone: str):
    return fired_at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(zone)).date()


class _Ledger:
    """The messages accepted so far for one person, and the cap checks against them."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.messages: list[tuple[Trigger, str, datetime]] = []  # trigger, session, fired_at

    def in_scope(self, cap: Cap) -> list[tuple[str, datetime]]:
        return [(s, t) for trig, s, t in self.messages if cap.applies_to(trig)]

    def violates(self, cap: Cap, session_id: str, fired_at: datetime) -> bool:
        scoped = self.in_scope(cap)
        if cap.per == "session":
            return sum(s == session_id for s, _ in scoped) >= cap.max
        if cap.per == "day":
            day = _local_day(fired_at, self.zone)
            return sum(_local_day(t, self.zone) == day for _, t in scoped) >= cap.max
        window = timedelta(days=cap.days or 0)
        times = sorted([t for _, t in scoped if abs(t - fired_at) < window] + [fired_at])
        # every window [s, s + days) holding the new message must hold at most `max`; the
        # fullest such window starts at one of the messages in (fired_at - days, fired_at]
        return any(
            sum(start <= t < start + window for t in times) > cap.max
            for start in times
            if fired_at - window < start <= fired_at
        )

    def too_soon(self, trigger: Trigger, fired_at: datetime) -> bool:
        delay = timedelta(hours=trigger.reeligible_after_hours)
        return any(
            trig.name == trigger.name and abs(t - fired_at) < delay for trig, _, t in self.messages
        )

    def accept(self, trigger: Trigger, session_id: str, fired_at: datetime) -> None:
        self.messages.append((trigger, session_id, fired_at))


def decide(
    candidates: pd.DataFrame,
    accepted_before: pd.DataFrame,
    triggers: dict[str, Trigger],
    caps: list[Cap],
    cutoff: datetime,
    unconsented: set[tuple[str, str]],
    time_zones: dict[str, str],
) -> pd.DataFrame:
    """Each candidate firing with its relevance at the cutoff and its fate: reason None (a
    message) or not_consented:<purpose> (`unconsented` holds (person, purpose) pairs without
    consent at the cutoff), expired, re_eligibility or capped:<cap> (the most restrictive cap
    it breaks: the smallest max, then the shortest window, then the name)."""
    ledgers: dict[str, _Ledger] = {}

    def ledger(person: str) -> _Ledger:
        if person not in ledgers:
            ledgers[person] = _Ledger(time_zones.get(person, "UTC"))
        return ledgers[person]

    for row in accepted_before.itertuples(index=False):
        if row.trigger_name in triggers:
            ledger(row.person_id).accept(
                triggers[row.trigger_name], row.session_id, row.fired_at.to_pydatetime()
            )
    ordered_caps = sorted(caps, key=lambda c: (c.max, c.days or 0, c.name))
    frame = candidates[CANDIDATE_COLUMNS].copy()
    frame["relevance"] = [
        relevance(cutoff - t.to_pydatetime(), triggers[name].half_life_minutes)
        for name, t in zip(frame.trigger_name, frame.fired_at, strict=True)
    ]
    frame["priority"] = [triggers[name].priority for name in frame.trigger_name]
    frame = frame.sort_values(
        ["priority", "relevance", "trigger_name", "fired_at", "person_id"],
        ascending=[False, False, True, True, True],
        ignore_index=True,
    )
    reasons: list[str | None] = []
    for row in frame.itertuples(index=False):
        trigger = triggers[row.trigger_name]
        fired_at = row.fired_at.to_pydatetime()
        book = ledger(row.person_id)
        reason = None
        if (row.person_id, trigger.purpose) in unconsented:
            reason = f"not_consented:{trigger.purpose}"
        elif cutoff - fired_at > timedelta(minutes=trigger.ttl_minutes):
            reason = "expired"
        elif book.too_soon(trigger, fired_at):
            reason = "re_eligibility"
        elif not trigger.bypass_caps:
            broken = next(
                (
                    c
                    for c in ordered_caps
                    if c.applies_to(trigger) and book.violates(c, row.session_id, fired_at)
                ),
                None,
            )
            reason = f"capped:{broken.name}" if broken else None
        if reason is None:
            book.accept(trigger, row.session_id, fired_at)
        reasons.append(reason)
    frame["reason"] = pd.Series(reasons, dtype=object)
    return frame
