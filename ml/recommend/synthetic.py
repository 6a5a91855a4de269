"""Interactions with a known latent structure at any size, for `make bench` and tests of the
recommenders alone (the event generator makes the realistic ones, through the pipeline)."""

from __future__ import annotations

import numpy as np
import pandas as pd

DIMS = 8
GROUPS = 5  # taste groups: people of a group like similar items
_CHUNK = 4096  # users drawn at once (chunk x items logits in memory)


def latent_interactions(
    users: int, items: int, per_user: int, days: int = 30, seed: int = 0
) -> pd.DataFrame:
    """(user, item, time, weight, group): each user's `per_user` distinct items, drawn without
    replacement with probability softmax(taste . factors + popularity) (Gumbel top-k), at
    uniform times over `days` days, weight 1-3."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, GROUPS, users)
    tastes = rng.normal(0, 1, (GROUPS, DIMS))[group] + rng.normal(0, 0.3, (users, DIMS))
    factors = rng.normal(0, 1, (items, DIMS))
    popularity = rng.normal(0, 0.7, items)
    chosen = np.empty((users, per_user), dtype=np.int64)
    for start in range(0, users, _CHUNK):
        part = slice(start, min(start + _CHUNK, users))
        logits = 2.5 * tastes[part] @ factors.T / np.sqrt(DIMS) + popularity
        keys = logits + rng.gumbel(size=logits.shape)
        chosen[part] = np.argpartition(-keys, per_user - 1, axis=1)[:, :per_user]
    n = users * per_user
    start = pd.Timestamp("2026-10-01")
    return pd.DataFrame(
        {
            "user": np.repeat(np.arange(users), per_user),
            "item": chosen.ravel(),
            "time": start + pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s"),
            "weight": rng.integers(1, 4, n).astype(float),
            "group": np.repeat(group, per_user),
        }
    )
