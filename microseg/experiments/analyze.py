"""`microseg experiment analyze`: each experiment's arms against control, per metric, as of D.

People count once they are exposed (marts.experiment_exposures) and their metric window has
passed by D (exposed_at + window_days <= D), so a nightly result never mixes finished and
unfinished windows. People acted on as two arms while the experiment ran (both sent and
withheld its trigger's message: people assigned different arms who merged into one) are left
out, as tools that meet a user in several variations do. Each metric's value before exposure
(28 days) is the CUPED covariate. Results go to marts.experiment_results (experiment x arm x
metric x as_of_date) and a decision per experiment to marts.experiment_decisions; re-running a
date replaces that date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from microseg.config import Settings
from microseg.experiments.grammar import Experiment, ExperimentFile, Metric
from microseg.experiments.plot import draw_lift, lift_over_time
from microseg.experiments.stats import (
    SRM_ALPHA,
    adjusted_p_values,
    chance_to_beat_control,
    confidence_sequence_halfwidth,
    cuped,
    proportion_z_test,
    relative_lift,
    srm_p_value,
    welch_t_test,
)

PRE_PERIOD_DAYS = 28
ALPHA = 0.05

RESULTS_DDL = """create table if not exists marts.experiment_results (
    as_of_date date not null,
    experiment varchar not null,
    arm varchar not null,
    metric varchar not null,
    role varchar not null,              -- primary | secondary | guardrail
    n integer not null,
    mean double,                        -- CUPED-adjusted, as every estimate below
    control_n integer not null,
    control_mean double,
    raw_mean double,                    -- the plain averages per person
    raw_control_mean double,
    lift double,                        -- absolute: mean - control_mean
    standard_error double,
    lift_low double,                    -- fixed-horizon 95% interval
    lift_high double,
    sequential_low double,              -- always-valid 95% confidence sequence
    sequential_high double,
    relative_lift double,
    relative_low double,
    relative_high double,
    p_value double,
    adjusted_p_value double,            -- Holm across arms x primary and secondary metrics
    variance_reduction double,          -- CUPED: 1 - var(adjusted) / var(raw)
    chance_to_beat_control double,
    guardrail_ok boolean,               -- guardrails: non-inferior within the margin
    primary key (as_of_date, experiment, arm, metric)
)"""
DECISIONS_DDL = """create table if not exists marts.experiment_decisions (
    as_of_date date not null,
    experiment varchar not null,
    decision varchar not null,  -- ship ARM | keep running | stop for harm | inconclusive | ...
    reasons varchar not null,
    srm_p_value double,
    exposed integer not null,
    primary key (as_of_date, experiment)
)"""


@dataclass(frozen=True)
class Decision:
    experiment: str
    decision: str
    reasons: str
    srm_p_value: float | None
    exposed: int
    plot: Path | None = None  # the lift over time, once an arm has one
    primary: tuple[str, ...] = ()  # each arm's estimate on the primary metric, for a reader


def _aggregate(metric: Metric, column: str) -> str:
    if metric.kind == "conversion":
        return f"coalesce(bool_or(s.{column}), false)::integer"
    if metric.kind == "sum":
        return f"coalesce(sum(s.{column}), 0)::double"
    return f"avg(s.{column}::double)"


# The exposures analyzed (parameters $experiment, $start, $end): people first acted on while
# the experiment ran (after its end, a former control person gets the message like anyone),
# as one arm - not both sent and withheld the message, and sent no message naming another arm.
ONE_ARM_EXPOSURES = """
    select e.* from marts.experiment_exposures e
    where e.experiment = $experiment
      and e.exposed_at >= $start::timestamp and e.exposed_at < $end::timestamp
      and not (
          exists (select 1 from marts.activation_outbox o
                  where o.person_id = e.person_id and o.trigger_name = e.trigger_name
                    and o.fired_at >= $start::timestamp and o.fired_at < $end::timestamp)
          and exists (select 1 from marts.trigger_suppressions s
                      where s.person_id = e.person_id
                        and s.reason = 'experiment_control:' || $experiment
                        and s.fired_at >= $start::timestamp and s.fired_at < $end::timestamp))
      and not exists (
          select 1 from marts.activation_outbox o
          where o.person_id = e.person_id
            and (o.payload ->> '$.experiment.name') = $experiment
            and (o.payload ->> '$.experiment.arm') <> e.arm)
      and not exists (
          select 1 from marts.segment_exposures x
          where x.person_id = e.person_id and x.experiment = $experiment and x.arm <> e.arm)"""


def _window(experiment: Experiment) -> dict:
    return {"experiment": experiment.name, "start": experiment.start, "end": experiment.end}


def person_values(con, experiment: Experiment, metric: Metric, as_of: date) -> pd.DataFrame:
    """(person_id, arm, y, x): the metric in the window after exposure and in the 28 days
    before it, for exposed people whose window has passed by the as-of date."""
    params = {**_window(experiment), "as_of": as_of, "days": metric.window_days}
    mature = f"""select person_id, arm, exposed_at from ({ONE_ARM_EXPOSURES})
                 where exposed_at + to_days($days) <= $as_of::timestamp"""
    if metric.kind == "opted_out":
        return con.execute(
            f"""select e.person_id, e.arm,
                       coalesce(p.is_opted_out and p.consent_updated_at >= e.exposed_at
                                and p.consent_updated_at < e.exposed_at + to_days($days),
                                false)::integer as y,
                       0 as x
                from ({mature}) e join marts.dim_persons p using (person_id)""",
            params,
        ).df()
    column = metric.column
    window = (
        "s.session_start_at >= e.exposed_at and s.session_start_at < e.exposed_at + to_days($days)"
    )
    before = (
        "s.session_start_at >= e.exposed_at - to_days($pre) and s.session_start_at < e.exposed_at"
    )
    return con.execute(
        f"""select e.person_id, e.arm,
                   (select {_aggregate(metric, column)} from marts.fct_sessions s
                    where s.person_id = e.person_id and {window}) as y,
                   (select {_aggregate(metric, column)} from marts.fct_sessions s
                    where s.person_id = e.person_id and {before}) as x
            from ({mature}) e""",
        {**params, "pre": PRE_PERIOD_DAYS},
    ).df()


def compare(values: pd.DataFrame, experiment: Experiment, metric: Metric) -> list[dict]:
    """One result row per treatment arm: the arm against control on this metric."""
    control = next(a.name for a in experiment.arms if a.control)
    values = values.dropna(subset=["y"]).assign(x=lambda v: v.x.fillna(0.0))
    rows = []
    for arm in (a.name for a in experiment.arms if not a.control):
        pair = values[values.arm.isin([arm, control])]
        t, c = pair.arm == arm, pair.arm == control
        row = {"arm": arm, "metric": metric.name, "n": int(t.sum()), "control_n": int(c.sum())}
        if row["n"] < 2 or row["control_n"] < 2:
            rows.append(row)
            continue
        y = pair.y.to_numpy(dtype=float)
        if np.ptp(y) == 0:  # everyone the same (no one opted out): nothing to test
            same = dict.fromkeys(("mean", "control_mean", "raw_mean", "raw_control_mean"), y[0])
            same = {**same, "standard_error": 0.0}
            zero = ("lift", "lift_low", "lift_high", "sequential_low", "sequential_high")
            row.update(same, **dict.fromkeys(zero, 0.0))
            rows.append(row)
            continue
        adjusted, _, reduction = cuped(y, pair.x.to_numpy(dtype=float))
        yt, yc, at, ac = (
            y[t.to_numpy()],
            y[c.to_numpy()],
            adjusted[t.to_numpy()],
            adjusted[c.to_numpy()],
        )
        if metric.kind in ("conversion", "opted_out") and reduction < 1e-12:
            test = proportion_z_test(yt.sum(), yt.size, yc.sum(), yc.size)
        else:
            test = welch_t_test(
                at.mean(), at.var(ddof=1), at.size, ac.mean(), ac.var(ddof=1), ac.size
            )
        halfwidth = confidence_sequence_halfwidth(
            test.standard_error, yt.size + yc.size, experiment.planned_people
        )
        # the adjusted means: lift = mean - control_mean, relative lift = their ratio - 1
        relative = relative_lift(
            at.mean(), at.var(ddof=1), at.size, ac.mean(), ac.var(ddof=1), ac.size
        )
        chance, _ = chance_to_beat_control(test.difference, test.standard_error)
        row.update(
            mean=float(at.mean()), control_mean=float(ac.mean()),
            raw_mean=float(yt.mean()), raw_control_mean=float(yc.mean()),
            lift=float(test.difference),
            standard_error=float(test.standard_error),
            lift_low=float(test.low), lift_high=float(test.high),
            sequential_low=float(test.difference - halfwidth),
            sequential_high=float(test.difference + halfwidth),
            relative_lift=float(relative[0]), relative_low=float(relative[1]),
            relative_high=float(relative[2]), p_value=float(test.p_value),
            variance_reduction=float(reduction), chance_to_beat_control=float(chance),
        )  # fmt: skip
        rows.append(row)
    return rows


def _judge_guardrail(frame: pd.DataFrame, guardrail) -> pd.DataFrame:
    """Non-inferiority on the always-valid interval: guardrail_ok is true once the harmful
    side is shown within the margin, false once harm beyond the margin is shown, and null
    while neither is (uncertainty is not harm)."""
    at = (frame.role == "guardrail") & (frame.metric == guardrail.metric) & frame.lift.notna()
    sign = 1.0 if guardrail.better == "lower" else -1.0  # the direction of harm
    half = (frame.sequential_high[at] - frame.sequential_low[at]) / 2
    harm = sign * frame.lift[at]
    status = np.where(
        harm + half <= guardrail.margin, True, np.where(harm - half > guardrail.margin, False, None)
    )
    frame = frame.assign(guardrail_ok=frame.guardrail_ok.astype(object))
    frame.loc[at, "guardrail_ok"] = pd.Series(status, index=frame.index[at], dtype=object)
    if guardrail.better == "lower":  # beating control on this metric means being below it
        frame.loc[at, "chance_to_beat_control"] = 1 - frame.chance_to_beat_control[at]
    return frame


def decide(
    experiment: Experiment, rows: pd.DataFrame, arm_counts: dict[str, int], as_of: date
) -> Decision:
    """Ship, keep running, stop for harm, inconclusive or untrustworthy, with the reasons."""
    exposed = int(sum(arm_counts.values()))
    counts = np.array([arm_counts.get(a.name, 0) for a in experiment.arms])
    srm = float(srm_p_value(counts, [a.weight for a in experiment.arms])) if exposed else None

    def verdict(decision: str, reasons: str) -> Decision:
        return Decision(experiment.name, decision, reasons, srm, exposed)

    if srm is not None and srm < SRM_ALPHA:
        return verdict(
            "untrustworthy",
            f"sample ratio mismatch (p = {srm:.2g}): exposures {counts.tolist()} do not match "
            "the weights; find out why before reading any lift",
        )
    harmed = rows[(rows.role == "guardrail") & (rows.guardrail_ok == False)]  # noqa: E712
    if len(harmed):
        breached = ", ".join(sorted(set(harmed.metric)))
        return verdict("stop for harm", f"guardrail breached: {breached}")
    primary = rows[(rows.role == "primary") & rows.lift.notna()]
    if primary.empty:
        return verdict("keep running", "no exposed person's window has passed yet")
    winners = primary[primary.sequential_low > 0]
    guardrails = rows[rows.role == "guardrail"]
    unproven = sorted(set(guardrails.metric[guardrails.guardrail_ok.isna()]))
    if len(winners) and unproven:
        best = winners.sort_values("lift", ascending=False).iloc[0]
        ended = as_of >= experiment.end
        return verdict(
            "inconclusive" if ended else "keep running",
            f"{best.arm} lifts {experiment.primary} {best.relative_lift:+.1%}, but "
            f"{', '.join(unproven)} not yet shown within the margin",
        )
    if len(winners):
        best = winners.sort_values("lift", ascending=False).iloc[0]
        return verdict(
            f"ship {best.arm}",
            f"{experiment.primary} {best.relative_lift:+.1%} ({best.relative_low:+.1%} to "
            f"{best.relative_high:+.1%}); the confidence sequence excludes no effect and the "
            "guardrails hold",
        )
    if (primary.sequential_high < 0).all():
        return verdict(
            "stop for harm", f"every arm lowers {experiment.primary} (confidence sequence below 0)"
        )
    if as_of >= experiment.end:
        return verdict(
            "inconclusive",
            f"ended with no arm distinguishable from control on {experiment.primary}",
        )
    people = int(primary.n.sum() + primary.control_n.iloc[0])
    return verdict(
        "keep running",
        f"{people:,} people so far; no arm distinguishable from control on "
        f"{experiment.primary} yet",
    )


def primary_lines(rows: pd.DataFrame) -> tuple[str, ...]:
    """Each arm against control on the primary metric, in one line: the means, the lift with
    its fixed-horizon interval and the always-valid one the daily decision reads."""
    primary = rows[(rows.role == "primary") & rows.lift.notna()]
    return tuple(
        f"{r.arm} vs control on {r.metric}: {r.mean:.3g} vs {r.control_mean:.3g} "
        f"({r.n:,} and {r.control_n:,} people), lift {r.lift:+.3g}: 95% CI {r.lift_low:+.3g} "
        f"to {r.lift_high:+.3g} at a fixed horizon, {r.sequential_low:+.3g} to "
        f"{r.sequential_high:+.3g} looking every day"
        for r in primary.itertuples()
    )


def results(
    values_of: Callable[[Metric], pd.DataFrame], experiment: Experiment, metrics: dict[str, Metric]
) -> pd.DataFrame:
    """Every treatment arm against control on the primary, secondary and guardrail metrics,
    with Holm-adjusted p-values (primary and secondary) and the guardrails judged;
    `values_of(metric)` gives the per-person (arm, y, x) of a metric."""
    roles = [(experiment.primary, "primary")]
    roles += [(m, "secondary") for m in experiment.secondary]
    roles += [(g.metric, "guardrail") for g in experiment.guardrails]
    rows = [
        {**row, "role": role}
        for name, role in roles
        for row in compare(values_of(metrics[name]), experiment, metrics[name])
    ]
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    tested = frame.role.isin(["primary", "secondary"]) & frame.p_value.notna()
    if tested.any():
        frame.loc[tested, "adjusted_p_value"] = adjusted_p_values(frame.p_value[tested])
    for guardrail in experiment.guardrails:
        frame = _judge_guardrail(frame, guardrail)
    return frame


def analyze(
    settings: Settings, experiments: ExperimentFile, as_of: date, names: list[str] | None = None
) -> list[Decision]:
    """Analyze the experiments (all, or those named) as of D into the two marts."""
    from microseg.errors import UsageError
    from microseg.experiments.arms import ensure_experiment_tables
    from microseg.warehouse import connect, has_table

    decisions = []
    with connect(settings) as con:
        if not has_table(con, "marts", "experiment_exposures"):
            raise UsageError(
                "no exposures yet: run `microseg activate` (it builds marts.experiment_exposures)"
            )
        ensure_experiment_tables(con)  # segment_exposures: who was exported as which arm
        con.execute(RESULTS_DDL)
        for column in ("raw_mean", "raw_control_mean"):  # tables from before they existed
            con.execute(
                f"alter table marts.experiment_results add column if not exists {column} double"
            )
        con.execute(DECISIONS_DDL)
        for experiment in experiments.experiments:
            if names and experiment.name not in names:
                continue
            frame = results(
                lambda m, e=experiment: person_values(con, e, m, as_of),
                experiment,
                experiments.metrics,
            )
            arm_counts = dict(
                con.execute(
                    f"select arm, count(*) from ({ONE_ARM_EXPOSURES}) "
                    "where exposed_at < $as_of group by all",
                    {**_window(experiment), "as_of": as_of},
                ).fetchall()
            )
            decision = decide(experiment, frame, arm_counts, as_of)
            key = [as_of, experiment.name]
            con.execute("begin")
            for table in ("experiment_results", "experiment_decisions"):
                con.execute(
                    f"delete from marts.{table} where as_of_date = ? and experiment = ?", key
                )
            if len(frame):
                con.register("results", frame.assign(as_of_date=as_of, experiment=experiment.name))
                con.execute("insert into marts.experiment_results by name select * from results")
                con.unregister("results")
            con.execute(
                "insert into marts.experiment_decisions values (?, ?, ?, ?, ?, ?)",
                [*key, decision.decision, decision.reasons, decision.srm_p_value, decision.exposed],
            )
            con.execute("commit")
            plot = draw_lift(
                lift_over_time(con, experiment, as_of),
                experiment,
                settings.experiment_plots_dir / f"{experiment.name}.png",
            )
            decisions.append(replace(decision, plot=plot, primary=primary_lines(frame)))
    return decisions


RESULT_COLUMNS = (
    "arm", "metric", "role", "n", "mean", "control_n", "control_mean", "raw_mean",
    "raw_control_mean", "lift", "standard_error",
    "lift_low",
    "lift_high", "sequential_low", "sequential_high", "relative_lift", "relative_low",
    "relative_high", "p_value", "adjusted_p_value", "variance_reduction",
    "chance_to_beat_control", "guardrail_ok",
)  # fmt: skip
