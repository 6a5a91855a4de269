"""The experiments' holdout and arms acting on decided firings (experiments/arms.py)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

import pandas as pd

from microseg.experiments.arms import apply_arms, held_out, route_arm_triggers
from microseg.experiments.assignment import bucket
from microseg.experiments.grammar import Arm, Experiment, ExperimentFile

EXPERIMENT = Experiment(
    name="cart_reminder", hypothesis="h", owner="o", target_kind="trigger",
    target="cart_abandoned", layer="l", start=date(2026, 10, 5), end=date(2026, 10, 19),
    salt="cart_reminder", primary="converted_7d", secondary=(), guardrails=(),
    arms=(Arm("control", 0.5, True, False, None), Arm("reminder", 0.5, False, True, None)),
    planned_people=16_000,
)  # fmt: skip
FILE = ExperimentFile(path=None, holdout=0.05, metrics={}, experiments=[EXPERIMENT])


def _decided(rows) -> pd.DataFrame:
    """rows: (trigger, person, fired_at, reason)."""
    frame = pd.DataFrame(rows, columns=["trigger_name", "person_id", "fired_at", "reason"])
    return frame.assign(session_id="s", relevance=1.0, priority=0)


def test_the_holdout_takes_its_share_by_the_documented_hash() -> None:
    people = pd.Series([f"per_{i:05d}" for i in range(20_000)])
    held = held_out(people, 0.05)
    assert abs(held.mean() - 0.05) < 0.005
    assert held.tolist() == [bucket("microseg_holdout", p) < 0.05 for p in people]


def test_control_withholds_would_be_messages_and_arms_are_sticky() -> None:
    people = [f"per_{i:04d}" for i in range(400)]
    day = datetime(2026, 10, 6, 12)
    rows = [("cart_abandoned", p, day, None) for p in people]
    rows += [("cart_abandoned", people[0], day + timedelta(days=1), "capped:x")]
    rows += [("binge_reader", people[1], day, None)]  # not the experiment's trigger
    rows += [("cart_abandoned", people[2], datetime(2026, 10, 20), None)]  # after its end
    decided, assignments = apply_arms(_decided(rows), FILE, known={})
    arms = {person: arm for _, person, arm, *_ in assignments}
    assert len(assignments) == len(people)  # once each, at the first firing
    control = {p for p, arm in arms.items() if arm == "control"}
    assert 150 < len(control) < 250
    first_day = decided[(decided.fired_at == day) & (decided.trigger_name == "cart_abandoned")]
    withheld = set(first_day.person_id[first_day.reason == "experiment_control:cart_reminder"])
    assert withheld == control and first_day.reason[~first_day.person_id.isin(control)].isna().all()
    assert decided.reason.iloc[-3] == "capped:x"  # already suppressed: left as it was
    assert decided.reason.iloc[-2:].isna().all()  # another trigger; after the experiment
    # a later run keeps the recorded arm, whatever the hash says
    flipped = {("cart_reminder", p): "reminder" for p in control}
    again, new = apply_arms(
        _decided([r for r in rows[: len(people)] if r[1] in control]), FILE, known=flipped
    )
    assert new == [] and again.reason.isna().all()


def test_messages_of_a_sending_arm_carry_its_content_variant() -> None:
    arms = (
        Arm("control", 0.34, True, False, None),
        Arm("gentle", 0.33, False, True, "gentle_copy"),
        Arm("discount", 0.33, False, True, "ten_percent_off"),
    )
    experiment = dataclasses.replace(EXPERIMENT, arms=arms)
    people = [f"per_{i:04d}" for i in range(300)]
    day = datetime(2026, 10, 6, 12)
    rows = [("cart_abandoned", p, day, None) for p in people]
    rows += [("cart_abandoned", people[0], day + timedelta(hours=1), "capped:x")]
    decided, assignments = apply_arms(
        _decided(rows), dataclasses.replace(FILE, experiments=[experiment]), known={}
    )
    arm_of = {person: arm for _, person, arm, *_ in assignments}
    variant_of = {a.name: a.variant for a in arms}
    first = decided.iloc[: len(people)]
    for row in first.itertuples():
        if arm_of[row.person_id] == "control":
            assert (row.reason, row.experiment, row.variant) == (
                "experiment_control:cart_reminder",
                None,
                None,
            )
        else:
            assert row.reason is None or pd.isna(row.reason)
            assert (row.experiment, row.arm, row.variant) == (
                "cart_reminder",
                arm_of[row.person_id],
                variant_of[arm_of[row.person_id]],
            )
    assert set(arm_of.values()) == {"control", "gentle", "discount"}
    capped = decided.iloc[-1]
    assert (capped.reason, capped.experiment, capped.variant) == ("capped:x", None, None)


def test_a_threshold_test_routes_each_definition_to_its_own_arm_only() -> None:
    """Arms on two definitions (product_lingerer at 5 minutes, product_lingerer_3min): a
    participant's firings of the other arm's definition are set aside before any cap, and the
    arm's own definition is silent outside the experiment and for non-participants."""
    experiment = dataclasses.replace(
        EXPERIMENT,
        name="threshold",
        salt="threshold",
        target="lingerer",
        arms=(
            Arm("five", 0.5, True, True, None),
            Arm("three", 0.5, False, True, None, trigger="lingerer_3min"),
        ),
    )
    file = dataclasses.replace(FILE, experiments=[experiment])
    people = [f"per_{i:04d}" for i in range(300)]
    day = datetime(2026, 10, 6, 12)
    rows = [(t, p, day, None) for p in people for t in ("lingerer_3min", "lingerer")]
    rows += [("lingerer_3min", people[0], datetime(2026, 10, 20), None)]  # after its end
    rows += [("lingerer_3min", people[1], day + timedelta(hours=1), None)]  # not consenting
    firings = _decided(rows).drop(columns="reason").assign(session_id=range(len(rows)))
    known: dict = {}
    decide, other_arm, silenced, assignments = route_arm_triggers(
        firings, file, known, unconsented={people[1]}
    )
    arm_of = {person: arm for _, person, arm, *_ in assignments}
    participants = set(people) - {people[1]}
    assert set(arm_of) == participants and set(arm_of.values()) == {"five", "three"}
    wanted = {"five": "lingerer", "three": "lingerer_3min", None: "lingerer"}
    assert sorted(decide.person_id) == sorted(people)
    acted = zip(decide.trigger_name, decide.person_id, strict=True)
    assert all(wanted[arm_of.get(p)] == t for t, p in acted)
    assert sorted(other_arm.person_id) == sorted(participants)
    set_aside = zip(other_arm.trigger_name, other_arm.person_id, strict=True)
    assert all(wanted[arm_of[p]] != t for t, p in set_aside)
    assert set(other_arm.reason) == {"experiment_arm:threshold"}
    assert set(silenced.trigger_name) == {"lingerer_3min"}
    assert set(silenced.reason) == {"experiment_variant:threshold"}
    assert sorted(silenced.person_id) == [people[0], people[1], people[1]]
    # the decided firings then act as the arm says: both arms send, each named in its message
    decided, new = apply_arms(
        decide.assign(reason=None, relevance=1.0, priority=0), file, known, {people[1]}
    )
    assert new == [] and decided.reason.isna().all()
    assert decided.arm.tolist() == [arm_of.get(p) for p in decided.person_id]
