"""For the terminal: what one run did (`microseg activate`), and what the triggers did per
day (`microseg activation report`, from marts.activation_report)."""

from __future__ import annotations

import json
from datetime import date, timedelta

from microseg.activation.run import ActivationRun
from microseg.config import Settings

REPORT_COLUMNS = (
    "fired", "sent", "failed", "pending", "expired", "not_consented", "re_eligibility", "capped",
    "holdout", "experiment_control", "other_definition",
)  # fmt: skip


def print_run(run: ActivationRun) -> None:
    window = f"{run.window.start:%Y-%m-%d %H:%M} to {run.window.cutoff:%Y-%m-%d %H:%M} UTC"
    note = " (dry run: nothing queued or sent)" if run.dry_run else ""
    if run.reused_evaluation:
        note = " (firings from the segments step's dbt build)"
    print(f"triggers fired {window}{note}:")
    width = max(map(len, run.fired), default=0)
    for name, fired in sorted(run.fired.items()):
        print(f"  {name:<{width}}  {fired:>6,} fired")
    print(
        f"messages: {run.queued:,}; suppressed: "
        + (", ".join(f"{n:,} {reason}" for reason, n in sorted(run.suppressed.items())) or "none")
    )
    for destination, statuses in run.delivered.items():
        done = (
            ", ".join(f"{n:,} {status}" for status, n in sorted(statuses.items())) or "nothing new"
        )
        print(f"  -> {destination}: {done}")


def report_rows(settings: Settings, as_of: date | None) -> list[dict]:
    from microseg.errors import UsageError
    from microseg.warehouse import connect, has_table, require_warehouse

    require_warehouse(settings)
    with connect(settings, read_only=True) as con:
        if not has_table(con, "marts", "activation_report"):
            raise UsageError("no activation yet: run `microseg activate` first")
        where, params = "", []
        if as_of is not None:
            where, params = "where fired_on = ?", [as_of - timedelta(days=1)]
        cursor = con.execute(
            f"select * from marts.activation_report {where} "
            "order by fired_on, trigger_name, channel",
            params,
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def print_report(settings: Settings, as_of: date | None) -> None:
    rows = report_rows(settings, as_of)
    if not rows:
        print("no firings" + (f" on {as_of - timedelta(days=1)}" if as_of else ""))
        return
    width = max(len(r["trigger_name"]) for r in rows)
    print(
        f"{'fired on':<10}  {'trigger':<{width}}  {'channel':<7}  "
        + "  ".join(f"{c:>8}" for c in REPORT_COLUMNS)
        + "  capped by"
    )
    for r in rows:
        capped_by = (
            json.loads(r["capped_by"]) if isinstance(r["capped_by"], str) else r["capped_by"]
        )
        print(
            f"{r['fired_on']!s:<10}  {r['trigger_name']:<{width}}  {r['channel']:<7}  "
            + "  ".join(f"{r[c]:>8,}" for c in REPORT_COLUMNS)
            + "  "
            + (", ".join(f"{k} {v}" for k, v in sorted(capped_by.items())) or "-")
        )
