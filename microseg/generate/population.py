"""People (archetype, latent propensity, registration, consent) and their devices."""

from __future__ import annotations

import numpy as np
import pandas as pd

from microseg.generate.world import (
    ARCHETYPES,
    CATEGORIES,
    COUNTRIES,
    COUNTRY_SHARE,
    HUMAN_SHARE,
    PROPENSITY_LOGIT,
    REGISTERED_P,
)

MARKETING_DECLINE_PERCENT = 15  # of people, whose consent events never grant marketing


def declines_marketing(person: np.ndarray) -> np.ndarray:
    """Who answers every consent prompt with marketing: false. A hash of the person rather
    than a draw, so adding it moved no other random value of the world."""
    return (np.asarray(person, dtype=np.int64) * 2654435761) % 100 < MARKETING_DECLINE_PERCENT


def draw_people(rng: np.random.Generator, users: int, first_number: int = 0) -> pd.DataFrame:
    """`users` people and their bots (one in 200). `person` indexes the arrays drawn for them;
    `number` is what user ids and ground truth keys carry (a cohort's follow the previous
    cohort's people)."""
    n_bots = max(1, users // 200)
    archetype = np.concatenate(
        [rng.choice(5, size=users, p=HUMAN_SHARE), np.full(n_bots, ARCHETYPES.index("bot"))]
    )
    n = len(archetype)
    logit = PROPENSITY_LOGIT[archetype] + rng.normal(0, 0.9, n)
    propensity = 1 / (1 + np.exp(-logit))
    registered = rng.random(n) < REGISTERED_P[archetype]
    affinity = rng.dirichlet(np.full(len(CATEGORIES), 0.6), size=n)
    opt_out = (rng.random(n) < 0.05) & (archetype != ARCHETYPES.index("bot"))
    return pd.DataFrame(
        {
            "person": np.arange(n),
            "number": first_number + np.arange(n),
            "archetype": archetype,
            "propensity": propensity,
            "registered": registered,
            "country": rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARE),
            "favorite_category": affinity.argmax(axis=1),
            "affinity": list(affinity),
            "opt_out": opt_out,
            "regrant": opt_out & (rng.random(n) < 0.2),
        }
    )


def draw_devices(
    rng: np.random.Generator, people: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Devices and who uses them. Registered people have 1-3 devices; 3% share one at home."""
    n_own = np.where(people.registered, 1 + rng.binomial(2, 0.35, len(people)), 1)
    owner = np.repeat(people.person.to_numpy(), n_own)
    devices = pd.DataFrame(
        {
            "device": np.arange(len(owner)),
            "owner": owner,
            "device_type": rng.choice(3, size=len(owner), p=[0.55, 0.35, 0.10]),
        }
    )
    usage = devices.rename(columns={"owner": "person"})[["device", "person"]]
    registered = people.person[people.registered & (people.archetype != 5)].to_numpy()
    sharers = rng.permutation(registered)[: 2 * int(len(registered) * 0.015)].reshape(-1, 2)
    first_device = devices.groupby("owner").device.min()
    shared = pd.DataFrame(
        {"device": first_device.loc[sharers[:, 0]].to_numpy(), "person": sharers[:, 1]}
    )
    usage = pd.concat([usage, shared], ignore_index=True)
    devices["shared"] = devices.device.isin(shared.device)
    return devices, usage.sort_values(["person", "device"], ignore_index=True)
