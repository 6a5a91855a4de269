"""`microseg experiment power`: how many people an experiment needs, and how long that takes."""

from __future__ import annotations

import math

from microseg.config import Settings
from microseg.errors import UsageError
from microseg.experiments.stats import people_per_arm


def daily_people(settings: Settings) -> float | None:
    """People with a session per day, on average over the warehouse's latest 28 days."""
    from microseg.warehouse import connect, has_table

    if not settings.warehouse_path.exists():
        return None
    with connect(settings, read_only=True) as con:
        if not has_table(con, "marts", "fct_sessions"):
            return None
        return con.execute(
            """select avg(people) from (
                   select session_start_at::date as day, count(distinct person_id) as people
                   from marts.fct_sessions
                   where session_start_at >= (select max(session_start_at) from marts.fct_sessions)
                                             - interval 28 day
                   group by all)"""
        ).fetchone()[0]


def power_lines(
    settings: Settings,
    baseline: float,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    cuped_r2: float = 0.0,
    arms: int = 2,
    daily: float | None = None,
) -> list[str]:
    if not baseline * (1 + mde) < 1:
        raise UsageError(f"--baseline {baseline} with --mde {mde} would exceed a rate of 1")
    per_arm = people_per_arm(baseline, mde, alpha, power, cuped_r2)
    lines = [
        f"to detect {baseline:.2%} -> {baseline * (1 + mde):.2%} (a {mde:+.0%} relative change) "
        f"with {power:.0%} power at alpha {alpha} (two-sided)"
        + (f", CUPED r^2 {cuped_r2}" if cuped_r2 else "")
        + ":",
        f"  {per_arm:,} people per arm, {per_arm * arms:,} in all ({arms} arms)",
    ]
    traffic = daily if daily is not None else daily_people(settings)
    if traffic:
        source = "--daily" if daily is not None else "people with a session per day, last 28 days"
        days = math.ceil(per_arm * arms / traffic)
        lines.append(f"  {days:,} days at {traffic:,.0f} eligible people a day ({source})")
    else:
        lines.append("  days: no traffic known (no warehouse yet); give --daily PEOPLE")
    return lines
