"""Experiments acting on people: the global holdout, and each person's arm.

Trigger-targeted (the activation step): the holdout is decided before anything else (held-out
people get no personalization, and use no cap). An experiment's arms are applied after
consent, TTL, re-eligibility and the caps, to firings that would have been sent: a treatment
arm's goes out, a control arm's (send: false) becomes the suppression
`experiment_control:<experiment>` - so both arms are exposed under the same rules, and the
analysis compares like with like. When arms act on different definitions of the trigger (a
threshold test), each participant's firings are first routed to their arm's definition, before
any cap (route_arm_triggers).

Segment-targeted (the audience export, microseg/export.py): the members exported on a day of
the experiment take part (not the held-out, not those without consent to experiments); a
treatment arm's members are in the file with the arm's variant, a control arm's are left out
of it, and both are exposed that day (marts.segment_exposures).

A person keeps the first arm they were assigned (marts.experiment_assignments).
"""

from __future__ import annotations

from datetime import date

import pandas as pd

from microseg.experiments.assignment import arm_index, bucket
from microseg.experiments.grammar import Arm, Experiment, ExperimentFile

HOLDOUT_SALT = "microseg_holdout"
# Suppressions that are exposures, final once recorded: a control arm's withheld message, and
# the moment another arm's definition of the trigger would have acted.
EXPOSING_REASONS = ("experiment_control", "experiment_arm")
EXPOSING_SQL = "(" + " or ".join(f"reason like '{r}:%'" for r in EXPOSING_REASONS) + ")"

EXPERIMENT_DDL = (
    """create table if not exists marts.experiment_assignments (
        experiment varchar not null,
        person_id varchar not null,
        arm varchar not null,
        bucket double not null,
        trigger_name varchar,  -- the firing that assigned them (trigger-targeted)
        assigned_at timestamp not null,
        segment_name varchar,  -- the export that assigned them (segment-targeted)
        primary key (experiment, person_id)
    )""",
    # assignments from before segment-targeted experiments
    "alter table marts.experiment_assignments alter column trigger_name drop not null",
    "alter table marts.experiment_assignments add column if not exists segment_name varchar",
    """create table if not exists marts.segment_exposures (
        experiment varchar not null,
        person_id varchar not null,
        arm varchar not null,
        segment_name varchar not null,
        as_of_date date not null,  -- the export's date: exposed from its start
        exported boolean not null,  -- in the file (a treatment arm) or left out (control)
        primary key (experiment, person_id, as_of_date)
    )""",
)


def ensure_experiment_tables(con) -> None:
    con.execute("create schema if not exists marts")
    for ddl in EXPERIMENT_DDL:
        con.execute(ddl)


def held_out(person_ids: pd.Series, share: float) -> pd.Series:
    """True for the people in the global holdout (the lowest `share` of the holdout hash)."""
    return person_ids.map(lambda p: bucket(HOLDOUT_SALT, p) < share).astype(bool)


def running(
    experiments: ExperimentFile, target: str, day: date, kind: str = "trigger"
) -> Experiment | None:
    """The experiment acting on this trigger (targeted, or an arm's) or segment on that day
    (one at most: layers exclude overlap only within a layer, so the first declared wins
    across layers)."""
    return next(
        (
            e
            for e in experiments.experiments
            if e.target_kind == kind
            and e.start <= day < e.end
            and (target in e.triggers if kind == "trigger" else e.target == target)
        ),
        None,
    )


def route_arm_triggers(
    firings: pd.DataFrame,
    experiments: ExperimentFile,
    known: dict[tuple[str, str], str],
    unconsented: set[str] = frozenset(),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[tuple]]:
    """(firings to decide, firings of another arm's definition, silenced firings, new
    assignment rows), before any cap. In an experiment whose arms act on different definitions
    of a trigger (a lower threshold, say), a participant's firings of a definition that is not
    their arm's are set aside with reason experiment_arm:<experiment> (the moment the other arm
    would have acted: the activation step makes it their exposure if the caps would have let it
    through); a definition named by an arm is silent for everyone outside its experiment
    (reason experiment_variant:<experiment>)."""
    owner = {a.trigger: e for e in experiments.experiments for a in e.arms if a.trigger}
    reasons: dict[int, str] = {}
    other_arm: dict[int, str] = {}
    assignments: list[tuple] = []
    if owner:
        for row in firings.sort_values(["fired_at", "person_id"]).itertuples():
            moment = row.fired_at.to_pydatetime()
            experiment = running(experiments, row.trigger_name, moment.date())
            if experiment is None or len(experiment.triggers) == 1 or row.person_id in unconsented:
                if row.trigger_name in owner:
                    reasons[row.Index] = f"experiment_variant:{owner[row.trigger_name].name}"
                continue
            arm, position = arm_of(experiment, row.person_id, known)
            if position is not None:
                assignments.append(
                    (experiment.name, row.person_id, arm.name, position, row.trigger_name, moment)
                )
            if experiment.trigger_of(arm) != row.trigger_name:
                other_arm[row.Index] = f"experiment_arm:{experiment.name}"
    routed = firings.index.isin([*reasons, *other_arm])
    return (
        firings[~routed],
        firings.loc[list(other_arm)].assign(reason=list(other_arm.values())),
        firings.loc[list(reasons)].assign(reason=list(reasons.values())),
        assignments,
    )


def arm_of(
    experiment: Experiment, person_id: str, known: dict[tuple[str, str], str]
) -> tuple[Arm, float | None]:
    """The person's arm: the one they were assigned, else the one their hash bucket falls in
    (then also the bucket, for a new assignment row; `known` learns it)."""
    key = (experiment.name, person_id)
    position = None
    if key not in known:
        position = bucket(experiment.salt, person_id)
        known[key] = experiment.arms[arm_index(position, [a.weight for a in experiment.arms])].name
    return next(a for a in experiment.arms if a.name == known[key]), position


def apply_arms(
    decided: pd.DataFrame,
    experiments: ExperimentFile,
    known: dict[tuple[str, str], str],
    unconsented: set[str] = frozenset(),
) -> tuple[pd.DataFrame, list[tuple]]:
    """(decisions, new assignment rows): each firing of a running experiment's trigger gets
    the person's arm; would-be messages of an arm that does not send become suppressions, and
    those of an arm that sends carry the experiment, the arm and its content variant (columns
    experiment, arm, variant: the message tells the destination what to show). People in
    `unconsented` (no consent for the experiments' purpose) take part in no experiment: their
    firings are decided as if none ran."""
    assignments: list[tuple] = []
    decided = decided.reset_index(drop=True)
    reasons = decided.reason.tolist()
    treated: dict[int, tuple[str, str, str | None]] = {}
    for row in decided.sort_values(["fired_at", "person_id"]).itertuples():
        moment = row.fired_at.to_pydatetime()
        experiment = running(experiments, row.trigger_name, moment.date())
        if experiment is None or row.person_id in unconsented:
            continue
        arm, position = arm_of(experiment, row.person_id, known)
        if position is not None:
            assignments.append(
                (experiment.name, row.person_id, arm.name, position, row.trigger_name, moment)
            )
        if not pd.isna(reasons[row.Index]):
            continue  # suppressed before the arms: no exposure
        if arm.send:
            treated[row.Index] = (experiment.name, arm.name, arm.variant)
        else:  # a would-be message
            reasons[row.Index] = f"experiment_control:{experiment.name}"
    treatment = [treated.get(i, (None, None, None)) for i in decided.index]
    columns = {"reason": reasons} | {
        name: [labels[k] for labels in treatment]
        for k, name in enumerate(("experiment", "arm", "variant"))
    }
    return decided.assign(
        **{n: pd.Series(v, index=decided.index, dtype=object) for n, v in columns.items()}
    ), assignments


def expose_members(
    con, experiments: ExperimentFile, experiment: Experiment, people: list[str], as_of: date
) -> pd.DataFrame:
    """The arms of a segment's exported members on a day `experiment` targets it: (person_id,
    experiment, arm, variant, in_file) for the participants - not the held-out, not those
    without consent to experiments - whose assignments (new ones) and exposures that day are
    recorded in `con`'s open transaction. A re-run of the day records the same."""
    from microseg.privacy import consent_policy

    purpose = consent_policy().purpose_of["experiments"]
    con.register("export_members", pd.DataFrame({"person_id": people}, dtype=object))
    consented = [
        p
        for (p,) in con.execute(
            "select person_id from export_members "
            "where marts.has_consent(person_id, ?, ?::date) order by person_id",
            [purpose, as_of],
        ).fetchall()
    ]
    con.unregister("export_members")
    participants = pd.Series(consented, dtype=object)
    participants = participants[~held_out(participants, experiments.holdout)]
    known = dict(
        ((experiment.name, p), arm)
        for p, arm in con.execute(
            "select person_id, arm from marts.experiment_assignments where experiment = ?",
            [experiment.name],
        ).fetchall()
    )
    rows, assignments = [], []
    for person in participants:
        arm, position = arm_of(experiment, person, known)
        if position is not None:
            assignments.append(
                (experiment.name, person, arm.name, position, as_of, experiment.target)
            )
        rows.append(
            (person, experiment.name, arm.name, arm.variant if arm.send else None, arm.send)
        )
    if assignments:
        con.executemany(
            """insert into marts.experiment_assignments
               (experiment, person_id, arm, bucket, assigned_at, segment_name)
               values (?, ?, ?, ?, ?::timestamp, ?)""",
            assignments,
        )
    if rows:
        con.executemany(
            "insert or ignore into marts.segment_exposures values (?, ?, ?, ?, ?, ?)",
            [
                (name, person, arm, experiment.target, as_of, sent)
                for person, name, arm, _, sent in rows
            ],
        )
    columns = ["person_id", "experiment", "arm", "variant", "in_file"]
    return pd.DataFrame(rows, columns=columns, dtype=object).astype({"in_file": bool})
