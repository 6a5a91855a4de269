"""From per-person values to a decision (experiments/analyze.py), on planted data."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from microseg.experiments.analyze import ONE_ARM_EXPOSURES, decide, results
from microseg.experiments.arms import ensure_experiment_tables
from microseg.experiments.grammar import Arm, Experiment, Guardrail, Metric
from microseg.experiments.plot import draw_lift

CONVERTED = Metric("converted_7d", "conversion", "has_purchase", 7)
BOUNCE = Metric("bounce_rate_7d", "mean", "is_bounce", 7)
METRICS = {m.name: m for m in (CONVERTED, BOUNCE)}
EXPERIMENT = Experiment(
    name="cart_reminder", hypothesis="h", owner="o", target_kind="trigger",
    target="cart_abandoned", layer="l", start=date(2026, 10, 5), end=date(2026, 10, 19),
    salt="cart_reminder", primary="converted_7d", secondary=(),
    guardrails=(Guardrail("bounce_rate_7d", "lower", 0.04),),
    arms=(Arm("control", 0.5, True, False, None), Arm("reminder", 0.5, False, True, None)),
    planned_people=16_000,
)  # fmt: skip
DURING, AFTER = date(2026, 10, 12), date(2026, 10, 20)


def _values(seed: int, *, convert=(0.10, 0.10), bounce=(0.30, 0.30), n=(8_000, 8_000)):
    """Per metric, (person_id, arm, y, x): planted conversion rates per arm (on average over
    the covariate), and a pre-period covariate, the same in both arms, that predicts
    conversion (so CUPED has something to remove)."""
    rng = np.random.default_rng(seed)
    arms = np.repeat(["control", "reminder"], n)
    rate = np.repeat(convert, n)
    x = rng.binomial(4, 0.25, arms.size).astype(float)  # mean 1
    y = (rng.random(arms.size) < np.clip(rate * x, 0, 1)).astype(int)
    b = (rng.random(arms.size) < np.repeat(bounce, n)).astype(float)
    people = [f"p{i}" for i in range(arms.size)]
    return {
        "converted_7d": pd.DataFrame({"person_id": people, "arm": arms, "y": y, "x": x}),
        "bounce_rate_7d": pd.DataFrame({"person_id": people, "arm": arms, "y": b, "x": 0.0}),
    }


def _decision(values, as_of=DURING, counts=None):
    frame = results(lambda m: values[m.name], EXPERIMENT, METRICS)
    arms = counts or dict(values["converted_7d"].arm.value_counts())
    return frame, decide(EXPERIMENT, frame, arms, as_of)


def test_a_planted_lift_ships_with_an_interval_around_it() -> None:
    frame, decision = _decision(_values(1, convert=(0.10, 0.13)))
    primary = frame[frame.role == "primary"].iloc[0]
    assert decision.decision == "ship reminder", decision.reasons
    assert primary.sequential_low > 0 and primary.lift_low < primary.lift < primary.lift_high
    assert primary.lift_high - primary.lift_low < primary.sequential_high - primary.sequential_low
    assert primary.variance_reduction > 0.05  # the covariate explains part of the variance
    assert primary.relative_low < primary.relative_lift < primary.relative_high
    assert primary.relative_lift > 0.15 and primary.chance_to_beat_control > 0.99
    assert bool(frame[frame.role == "guardrail"].guardrail_ok.iloc[0])


def test_every_estimate_of_a_row_is_on_the_same_adjusted_means() -> None:
    """lift = mean - control_mean and relative lift = mean / control_mean - 1, on the CUPED-
    adjusted means; the raw means are the plain averages of each arm."""
    values = _values(2, convert=(0.10, 0.12))
    frame, _ = _decision(values)
    for row in frame.itertuples():
        raw = values[row.metric].groupby("arm").y.mean()
        assert row.raw_mean == pytest.approx(raw["reminder"])
        assert row.raw_control_mean == pytest.approx(raw["control"])
        assert row.lift == pytest.approx(row.mean - row.control_mean, abs=1e-12)
        assert row.relative_lift == pytest.approx(row.mean / row.control_mean - 1, abs=1e-12)
    primary = frame[frame.role == "primary"].iloc[0]
    assert primary.variance_reduction > 0.05 and primary.mean != primary.raw_mean


def test_no_effect_keeps_running_and_ends_inconclusive() -> None:
    values = _values(2)
    assert _decision(values)[1].decision == "keep running"
    assert _decision(values, as_of=AFTER)[1].decision == "inconclusive"


def test_a_breached_guardrail_stops_the_experiment_whatever_the_lift() -> None:
    _, decision = _decision(_values(3, convert=(0.10, 0.13), bounce=(0.30, 0.40)))
    assert decision.decision == "stop for harm"
    assert decision.reasons == "guardrail breached: bounce_rate_7d"


def test_beating_control_on_a_lower_is_better_guardrail_means_being_lower() -> None:
    frame, _ = _decision(_values(3, convert=(0.10, 0.13), bounce=(0.30, 0.40)))
    guardrail = frame[frame.role == "guardrail"].iloc[0]
    assert guardrail.lift > 0.05 and guardrail.chance_to_beat_control < 0.01
    frame, _ = _decision(_values(3, bounce=(0.40, 0.30)))
    guardrail = frame[frame.role == "guardrail"].iloc[0]
    assert guardrail.lift < -0.05 and guardrail.chance_to_beat_control > 0.99


def test_an_unproven_guardrail_is_not_harm_but_holds_the_ship() -> None:
    """Few people: the guardrail's interval is wider than its margin either way."""
    values = _values(7, convert=(0.10, 0.30), n=(400, 400))
    frame, decision = _decision(values)
    assert frame[frame.role == "guardrail"].guardrail_ok.isna().all()
    assert decision.decision == "keep running"
    assert decision.reasons.startswith("reminder lifts converted_7d")


def test_a_sample_ratio_mismatch_makes_the_results_untrustworthy() -> None:
    values = _values(4, convert=(0.10, 0.13), n=(8_400, 7_600))  # planned 50/50
    _, decision = _decision(values)
    assert decision.decision == "untrustworthy" and decision.srm_p_value < 0.001


def test_nobody_mature_yet_keeps_running() -> None:
    empty = {name: frame.iloc[:0] for name, frame in _values(5).items()}
    frame, decision = _decision(empty, counts={"control": 10, "reminder": 12})
    assert decision.decision == "keep running"
    assert decision.reasons == "no exposed person's window has passed yet"
    assert frame.lift.isna().all()


def test_holm_adjusts_across_primary_and_secondary() -> None:
    two = replace(EXPERIMENT, secondary=("bounce_rate_7d",), guardrails=())
    values = _values(6, convert=(0.10, 0.11))
    frame = results(lambda m: values[m.name], two, METRICS)
    assert (frame.adjusted_p_value >= frame.p_value).all()
    assert frame.adjusted_p_value.max() <= 1


def test_the_lift_picture_waits_for_a_lift_and_replaces_itself_whole(tmp_path) -> None:
    out = tmp_path / "experiments" / "e.png"
    assert draw_lift(pd.DataFrame(columns=["as_of_date", "arm", "lift"]), EXPERIMENT, out) is None
    assert not out.exists()
    nights = pd.to_datetime(["2026-10-10", "2026-10-11", "2026-10-12"])
    points = pd.DataFrame({"as_of_date": nights, "arm": "treatment", "lift": [0.02, 0.03, 0.025]})
    points = points.assign(
        lift_low=points.lift - 0.01, lift_high=points.lift + 0.01,
        sequential_low=points.lift - 0.03, sequential_high=points.lift + 0.03,
    )  # fmt: skip
    assert draw_lift(points, EXPERIMENT, out) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["e.png"]  # nothing left aside


def test_only_people_acted_on_as_one_arm_while_it_ran_are_analyzed() -> None:
    """Merged people can carry two arms: sent and withheld, sent two arms' variants, or
    exported as two arms; and a control person first reached after the end got the message
    like anyone (not as control)."""
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute(
        """create table marts.experiment_exposures as select * from (values
           ('e', 'sent_once', 'reminder', timestamp '2026-10-06 10:00', 't'),
           ('e', 'two_variants', 'reminder', timestamp '2026-10-06 10:00', 't'),
           ('e', 'withheld_then_sent', 'control', timestamp '2026-10-06 10:00', 't'),
           ('e', 'withheld_once', 'control', timestamp '2026-10-06 10:00', 't'),
           ('e', 'first_sent_after_the_end', 'control', timestamp '2026-10-20 10:00', 't'),
           ('e', 'exported_once', 'reminder', timestamp '2026-10-06 00:00', null),
           ('e', 'exported_as_two_arms', 'control', timestamp '2026-10-06 00:00', null))
           as x (experiment, person_id, arm, exposed_at, trigger_name)"""
    )
    ensure_experiment_tables(con)  # a segment's exports: left out one day, in the file the next
    con.execute(
        """insert into marts.segment_exposures values
           ('e', 'exported_once', 'reminder', 's', '2026-10-06', true),
           ('e', 'exported_as_two_arms', 'control', 's', '2026-10-06', false),
           ('e', 'exported_as_two_arms', 'reminder', 's', '2026-10-07', true)"""
    )
    con.execute(
        """create table marts.activation_outbox as select person_id, 't' as trigger_name,
               fired_at, case when arm is null then '{}' else json_object(
                   'experiment', json_object('name', 'e', 'arm', arm)) end as payload
           from (values
               ('sent_once', timestamp '2026-10-06 10:00', 'reminder'),
               ('two_variants', timestamp '2026-10-06 10:00', 'reminder'),
               ('two_variants', timestamp '2026-10-07 10:00', 'discount'),
               ('withheld_then_sent', timestamp '2026-10-07 10:00', null),
               ('withheld_once', timestamp '2026-10-20 10:00', null),
               ('first_sent_after_the_end', timestamp '2026-10-20 10:00', null))
           as x (person_id, fired_at, arm)"""
    )  # withheld_once's message came after the experiment ended
    con.execute(
        """create table marts.trigger_suppressions as select * from (values
           ('withheld_then_sent', timestamp '2026-10-06 10:00', 'experiment_control:e'),
           ('withheld_once', timestamp '2026-10-06 10:00', 'experiment_control:e'))
           as x (person_id, fired_at, reason)"""
    )
    window = {"experiment": "e", "start": date(2026, 10, 5), "end": date(2026, 10, 19)}
    kept = con.execute(f"select person_id from ({ONE_ARM_EXPOSURES}) order by 1", window)
    assert [p for (p,) in kept.fetchall()] == ["exported_once", "sent_once", "withheld_once"]
