"""Planted true effects of experiments on a trigger: the generator's answer key for analysis.

An experiment on cart_abandoned runs on the people whose cart was left in its window; the
pipeline gives each their arm by the same hash (experiments/arms.py) over the person id the
pipeline will give them (int_identities_stitched: their user id once their device is linked,
else the device). Two effects can be planted on an arm, each for a share of its people:
- a lift: the person comes back to buy - a session in a free two-hour slot within the primary
  metric's window after their first abandoned cart of the experiment, on the cart's device,
  that buys and does nothing else (a reminder that worked);
- a sample ratio mismatch: the person's abandoned carts in the experiment's dates never reach
  the warehouse (the arm's variant broke the cart tag), so the trigger never fires for them
  and the arm is exposed less often than its weight says.
The other arms, and every experiment not named, are A/A.

Drawn from their own random stream and applied before page views are built, so without
planted effects the data set is exactly what it was.
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
# one row per planted purchase (lift) or lost cart (srm, no converted_session)
EFFECT_COLUMNS = ["experiment", "arm", "effect", "person_id", "cart_session", "converted_session"]
SLOT_S = SLOT_HOURS * 3600


@dataclass(frozen=True)
class PlantedEffect:
    effect: str  # lift | srm
    experiment: Experiment
    arm: str
    share: float  # of the arm's people who buy (lift) or whose carts are lost (srm)
    holdout: float  # the experiments file's global holdout: held-out people take no part
    window_days: int  # the primary metric's window after exposure


def planted_effects(
    experiments: ExperimentFile, specs: list[tuple[str, str, str, float]]
) -> tuple[PlantedEffect, ...]:
    """(effect, experiment, arm, share) from --plant-lift / --plant-srm, checked against the
    experiments file: an experiment on cart_abandoned, one of its arms that is not the
    control, and for a lift a primary metric that is a purchase conversion."""
    by_name = {e.name: e for e in experiments.experiments}
    planted = []
    for effect, name, arm, share in specs:
        where = f"--plant-{effect} {name}:{arm}"
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
        if effect == "lift" and (primary.kind, primary.column) != ("conversion", "has_purchase"):
            raise UsageError(
                f"{where}: the generator plants purchases, and {name}'s primary metric "
                f"{primary.name} is not a purchase conversion"
            )
        planted.append(
            PlantedEffect(effect, experiment, arm, share, experiments.holdout, primary.window_days)
        )
    return tuple(planted)


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
    number = people.number.to_numpy()[sessions.person]
    linked = sessions.groupby(["person", "device"]).login_session.transform("any").to_numpy()
    shared = devices.shared.to_numpy()[sessions.device]
    keys = [
        f"user:{user_id(p)}"
        if reg and (always or link)
        else (None if sh else f"anon:{anonymous_id(seed, d)}")
        for p, d, reg, always, link, sh in zip(
            number,
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


def plant_effects(
    sessions: pd.DataFrame, people, devices, config
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions with the planted effects, one row per effect: EFFECT_COLUMNS, session numbers
    as in the returned sessions)."""
    if not config.planted_effects:
        return sessions, pd.DataFrame(columns=EFFECT_COLUMNS)
    rng = np.random.default_rng([config.seed, 13])
    sessions = sessions.copy()
    s = sessions.assign(
        person_id=pipeline_person_ids(sessions, people, devices, config.seed),
        slot=(sessions.start_s // SLOT_S).astype(int),
        day_of=(pd.Timestamp(config.start) + pd.to_timedelta(sessions.start_s, unit="s")).dt.date,
    )
    occupied = set(zip(s.person, s.slot, strict=True))
    last_slot = config.days * SLOTS_PER_DAY - 1
    effects, added = [], []
    for planted in config.planted_effects:
        experiment = planted.experiment
        in_dates = (s.day_of >= experiment.start) & (s.day_of < experiment.end)
        # abandoned carts: planted, or a checkout that came too late (thresholds.py)
        carts = s[(s.cart_abandon | s.late_checkout) & s.person_id.notna() & in_dates]
        first = carts.sort_values(["person_id", "start_s"]).drop_duplicates("person_id")
        first = first[~held_out(first.person_id, planted.holdout).to_numpy()]
        arms = np.array([arm_of(experiment, p, {})[0].name for p in first.person_id], object)
        chosen = first[(arms == planted.arm) & (rng.random(len(first)) < planted.share)]
        if planted.effect == "srm":
            lost = carts[carts.person_id.isin(chosen.person_id)]
            sessions.loc[lost.index, ["cart_abandon", "late_checkout"]] = False
            s.loc[lost.index, ["cart_abandon", "late_checkout"]] = False
            effects += [
                (experiment.name, planted.arm, "srm", p, c, None)
                for p, c in zip(lost.person_id, lost.session, strict=True)
            ]
            continue
        # a free two-hour slot after the message (15 minutes after the cart) and inside the
        # metric's window from it: a slot starts its session 1 h in, and sessions last < 1 h
        window = planted.window_days * SLOTS_PER_DAY
        offsets = rng.integers(1, window, (len(chosen), 8))
        starts = rng.uniform(3600, 4800, len(chosen))
        for row, tries, start in zip(chosen.itertuples(), offsets, starts, strict=True):
            free = [
                row.slot + k
                for k in tries
                if row.slot + k <= last_slot and (row.person, row.slot + k) not in occupied
            ]
            if not free:
                continue
            occupied.add((row.person, free[0]))
            added.append(_purchase_session(sessions.loc[row.Index], free[0] * SLOT_S + start))
            effects.append(
                (experiment.name, planted.arm, "lift", row.person_id, row.session, -len(added))
            )
    new = pd.DataFrame(added, columns=sessions.columns).assign(session=-1 - np.arange(len(added)))
    merged = pd.concat([sessions, new], ignore_index=True).sort_values(
        ["person", "start_s"], ignore_index=True
    )
    renumbered = dict(zip(merged.session, range(len(merged)), strict=True))
    merged["session"] = np.arange(len(merged))
    planted_effects = pd.DataFrame(
        [(*row[:4], renumbered[row[4]], renumbered.get(row[5])) for row in effects],
        columns=EFFECT_COLUMNS,
    ).astype({"converted_session": "Int64"})
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
