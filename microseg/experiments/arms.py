"""Experiments acting on the activation step: the global holdout, and each person's arm.

The holdout is decided before anything else (held-out people get no personalization, and use
no cap). An experiment's arms are applied after consent, TTL, re-eligibility and the caps, to
firings that would have been sent: a treatment arm's goes out, a control arm's (send: false)
becomes the suppression `experiment_control:<experiment>` - so both arms are exposed under the
same rules, and the analysis compares like with like. A person keeps the first arm they were
assigned (marts.experiment_assignments).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from microseg.experiments.assignment import arm_index, bucket
from microseg.experiments.grammar import Experiment, ExperimentFile

HOLDOUT_SALT = "microseg_holdout"

ASSIGNMENTS_DDL = """create table if not exists marts.experiment_assignments (
    experiment varchar not null,
    person_id varchar not null,
    arm varchar not null,
    bucket double not null,
    trigger_name varchar not null,
    assigned_at timestamp not null,
    primary key (experiment, person_id)
)"""


def held_out(person_ids: pd.Series, share: float) -> pd.Series:
    """True for the people in the global holdout (the lowest `share` of the holdout hash)."""
    return person_ids.map(lambda p: bucket(HOLDOUT_SALT, p) < share).astype(bool)


def running(experiments: ExperimentFile, trigger: str, moment: datetime) -> Experiment | None:
    """The experiment targeting this trigger at that moment (one at most: layers exclude
    overlap only within a layer, so the first declared wins across layers)."""
    day = moment.date()
    return next(
        (
            e
            for e in experiments.experiments
            if e.target_kind == "trigger" and e.target == trigger and e.start <= day < e.end
        ),
        None,
    )


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
        experiment = running(experiments, row.trigger_name, moment)
        if experiment is None or row.person_id in unconsented:
            continue
        key = (experiment.name, row.person_id)
        if key not in known:
            position = bucket(experiment.salt, row.person_id)
            known[key] = experiment.arms[
                arm_index(position, [a.weight for a in experiment.arms])
            ].name
            assignments.append((*key, known[key], position, row.trigger_name, moment))
        arm = next(a for a in experiment.arms if a.name == known[key])
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
