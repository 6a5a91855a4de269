"""Planted true effects of experiments on a trigger: the generator's answer key for analysis.

An experiment on cart_abandoned runs on the people whose cart was left in its window; the
pipeline gives each their arm by the same hash (experiments/arms.py) over the person id the
pipeline will give them (int_identities_stitched: their user id once their device is linked,
else the device). A planted lift L on an arm brings, with chance L, each of the arm's people
back to buy: a session in a free two-hour slot within the primary metric's window after their
first abandoned cart of the experiment, on the cart's device, that buys and does nothing else
(a reminder that worked). The other arms, and every experiment not named, are A/A.

Drawn from their own random stream and added before page views are built, so without planted
lifts the data set is exactly what it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from microseg.errors import UsageError
from microseg.experiments.arms import arm_of, held_out
from microseg.experiments.grammar import Experiment, ExperimentFile
from microseg.generate.world import SLOT_HOURS, SLOTS_PER_DAY

PLANTED_TRIGGER = "cart_abandoned"  # the trigger whose firings the generator plants as sessions
EFFECT_COLUMNS = ["experiment", "arm", "person_id", "cart_session", "converted_session"]
SLOT_S = SLOT_HOURS * 3600


@dataclass(frozen=True)
class PlantedLift:
    experiment: Experiment
    arm: str
    lift: float  # added chance of a purchase within the primary metric's window
    holdout: float  # the experiments file's global holdout: held-out people take no part
    window_days: int  # the primary metric's window after exposure


def planted_lifts(
    experiments: ExperimentFile, specs: list[tuple[str, str, float]]
) -> tuple[PlantedLift, ...]:
    """--plant-lift's (experiment, arm, share) checked against the experiments file: an
    experiment on cart_abandoned whose primary metric is a purchase, and one of its arms that
    is not the control."""
    by_name = {e.name: e for e in experiments.experiments}
    lifts = []
    for name, arm, share in specs:
        where = f"--plant-lift {name}:{arm}"
        experiment = by_name.get(name)
        if experiment is None:
            raise UsageError(f"{where}: {experiments.path} has no experiment {name!r}")
        if (experiment.target_kind, experiment.target) != ("trigger", PLANTED_TRIGGER):
            raise UsageError(
                f"{where}: the generator plants effects only of experiments on the trigger "
                f"{PLANTED_TRIGGER} ({name} targets {experiment.target_kind} "
                f"{experiment.target})"
            )
        if arm not in {a.name for a in experiment.arms if not a.control}:
            raise UsageError(f"{where}: {name} has no treatment arm {arm!r}")
        primary = experiments.metrics[experiment.primary]
        if (primary.kind, primary.column) != ("conversion", "has_purchase"):
            raise UsageError(
                f"{where}: the generator plants purchases, and {name}'s primary metric "
                f"{primary.name} is not a purchase conversion"
            )
        lifts.append(PlantedLift(experiment, arm, share, experiments.holdout, primary.window_days))
    return tuple(lifts)


def anonymous_id(seed: int, device: int) -> str:
    """The device's anonymous id, as the dumps write it (files.py builds the same in SQL)."""
    return "anon_" + hashlib.md5(f"{seed}:device:{device}".encode()).hexdigest()[:20]


def user_id(person: int) -> str:
    return f"user_{person:07d}"


def pipeline_person_ids(sessions: pd.DataFrame, people, devices, seed: int) -> pd.Series:
    """The person id the pipeline gives each session once all of the data is loaded: the
    user's when the session is logged in or its device was ever logged into by its registered
    owner, the device's when anonymous (none for anonymous sessions on shared devices, whose
    person depends on who else logged in there)."""
    registered = people.registered.to_numpy()[sessions.person]
    linked = sessions.groupby(["person", "device"]).login_session.transform("any").to_numpy()
    shared = devices.shared.to_numpy()[sessions.device]
    keys = [
        f"user:{user_id(p)}"
        if reg and (always or link)
        else (None if sh else f"anon:{anonymous_id(seed, d)}")
        for p, d, reg, always, link, sh in zip(
            sessions.person,
            sessions.device,
            registered,
            sessions.always_logged_in,
            linked,
            shared,
            strict=True,
        )
    ]
    return pd.Series(
        [None if k is None else "per_" + hashlib.md5(k.encode()).hexdigest()[:24] for k in keys],
        index=sessions.index,
        dtype=object,
    )


def plant_lifts(
    sessions: pd.DataFrame, people, devices, config
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions with the planted purchase sessions, one row per planted purchase:
    EFFECT_COLUMNS, session numbers as in the returned sessions)."""
    if not config.planted_lifts:
        return sessions, pd.DataFrame(columns=EFFECT_COLUMNS)
    rng = np.random.default_rng([config.seed, 13])
    s = sessions.assign(
        person_id=pipeline_person_ids(sessions, people, devices, config.seed),
        slot=(sessions.start_s // SLOT_S).astype(int),
    )
    occupied = set(zip(s.person, s.slot, strict=True))
    last_slot = config.days * SLOTS_PER_DAY - 1
    effects, added = [], []
    for planted in config.planted_lifts:
        experiment = planted.experiment
        day = (pd.Timestamp(config.start) + pd.to_timedelta(s.start_s, unit="s")).dt.date
        carts = s[
            s.cart_abandon
            & s.person_id.notna()
            & (day >= experiment.start)
            & (day < experiment.end)
        ].sort_values(["person_id", "start_s"])
        first = carts.drop_duplicates("person_id")
        first = first[~held_out(first.person_id, planted.holdout).to_numpy()]
        arms = np.array([arm_of(experiment, p, {})[0].name for p in first.person_id], object)
        treated = first[(arms == planted.arm) & (rng.random(len(first)) < planted.lift)]
        # a free two-hour slot after the message (15 minutes after the cart) and inside the
        # metric's window from it: a slot starts its session 1 h in, and sessions last < 1 h
        window = planted.window_days * SLOTS_PER_DAY
        offsets = rng.integers(1, window, (len(treated), 8))
        starts = rng.uniform(3600, 4800, len(treated))
        for row, tries, start in zip(treated.itertuples(), offsets, starts, strict=True):
            free = [
                row.slot + k
                for k in tries
                if row.slot + k <= last_slot and (row.person, row.slot + k) not in occupied
            ]
            if not free:
                continue
            occupied.add((row.person, free[0]))
            added.append(_purchase_session(s.loc[row.Index], free[0] * SLOT_S + start))
            effects.append((experiment.name, planted.arm, row.person_id, row.session))
    if not added:
        return sessions, pd.DataFrame(columns=EFFECT_COLUMNS)
    new = pd.DataFrame(added)[sessions.columns].assign(session=-1 - np.arange(len(added)))
    merged = pd.concat([sessions, new], ignore_index=True).sort_values(
        ["person", "start_s"], ignore_index=True
    )
    renumbered = dict(zip(merged.session, range(len(merged)), strict=True))
    merged["session"] = np.arange(len(merged))
    planted_effects = pd.DataFrame(
        [
            (name, arm, person_id, renumbered[cart], renumbered[-1 - k])
            for k, (name, arm, person_id, cart) in enumerate(effects)
        ],
        columns=EFFECT_COLUMNS,
    )
    return merged.astype(sessions.dtypes.to_dict()), planted_effects


def _purchase_session(cart_session: pd.Series, start_s: float) -> pd.Series:
    """A session of the cart's person on the cart's device that buys and does nothing else."""
    session = cart_session.copy()
    for column, value in session.items():
        if isinstance(value, bool | np.bool_) and column != "always_logged_in":
            session[column] = False
    session["purchase"] = True
    session["start_s"] = start_s
    session["day"] = int(start_s // 86400)
    session[["late_days", "channel", "campaign"]] = 0
    return session
