"""The lift of each arm over time, as a picture beside the analysis.

One PNG per experiment (`$MICROSEG_HOME/experiments/<name>.png`), redrawn by every analysis from
marts.experiment_results: the primary metric's CUPED-adjusted lift over control per as-of date,
with the always-valid 95% confidence sequence (what the nightly decision reads) as a band and the
fixed-horizon 95% interval as whiskers. Zero is marked: a band wholly above it is a winner.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd

from microseg.experiments.grammar import Experiment

LIFT_OVER_TIME = """
select as_of_date, arm, lift, lift_low, lift_high, sequential_low, sequential_high, n, control_n
from marts.experiment_results
where experiment = ? and metric = ? and role = 'primary' and lift is not null
  and as_of_date <= ?
order by arm, as_of_date
"""


def lift_over_time(con, experiment: Experiment, as_of: date) -> pd.DataFrame:
    """The primary metric's lift per treatment arm and as-of date, up to `as_of`."""
    return con.execute(LIFT_OVER_TIME, [experiment.name, experiment.primary, as_of]).df()


def draw_lift_on(axes, points: pd.DataFrame, experiment: Experiment) -> None:
    """Draw the lift over time on matplotlib axes (the PNG below, and the activation notebook)."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (arm, rows) in enumerate(points.groupby("arm", sort=True)):
        days, color = pd.to_datetime(rows.as_of_date), colors[index % len(colors)]
        axes.vlines(  # a bar per night, joined into a band across nights
            days, rows.sequential_low, rows.sequential_high, linewidth=10, alpha=0.25,
            color=color, label=f"{arm}: always-valid 95% (decides)",
        )  # fmt: skip
        axes.fill_between(days, rows.sequential_low, rows.sequential_high, alpha=0.12, color=color)
        axes.errorbar(
            days, rows.lift,
            yerr=[rows.lift - rows.lift_low, rows.lift_high - rows.lift],
            marker="o", capsize=3, color=color, label=f"{arm}: lift, fixed-horizon 95%",
        )  # fmt: skip
    first, last = pd.to_datetime(points.as_of_date).agg(["min", "max"])
    axes.set_xlim(first - pd.Timedelta(days=1), last + pd.Timedelta(days=1))
    axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, (last - first).days // 8)))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_title(f"{experiment.name}: {experiment.primary}, each arm against control")
    axes.set_xlabel("as-of date (people whose metric window has passed)")
    axes.set_ylabel(f"lift in {experiment.primary} (absolute)")
    axes.legend(loc="best", fontsize="small")


def draw_lift(points: pd.DataFrame, experiment: Experiment, out: Path) -> Path | None:
    """Write the picture (written aside, then renamed); None while no arm has a lift yet."""
    if points.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.8), dpi=100)
    draw_lift_on(axes, points, experiment)
    figure.autofmt_xdate()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    aside = out.with_name(f".{out.name}.partial")
    figure.savefig(aside, format="png", metadata={"Software": None})
    plt.close(figure)
    os.replace(aside, out)
    return out
