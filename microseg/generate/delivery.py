"""Delivery mess: late sessions, duplicate deliveries, the received day of each event."""

from __future__ import annotations

import numpy as np
import pandas as pd


def draw_deliveries(rng, ev: pd.DataFrame, s: pd.DataFrame, days: int) -> pd.DataFrame:
    """Receive times (late sessions arrive days later) and duplicate deliveries.

    Nothing is received after the last day's file closes: every event lands in some file.
    """
    window_end = days * 86400 - 0.001
    late = s.late_days.to_numpy()[ev.session]
    received = (
        ev.t
        + rng.exponential(1.5, len(ev))
        + late * 86400
        + rng.uniform(0, 3600, len(ev)) * (late > 0)
    )
    ev["received_t"] = np.minimum(received, window_end)
    ev["duplicate_of"] = -1
    dup = ev.sample(frac=0.008, random_state=int(rng.integers(1 << 31)))
    retried = np.minimum(dup.received_t + rng.uniform(1, 90, len(dup)), window_end)
    dup = dup.assign(duplicate_of=dup.seq, received_t=retried)
    return pd.concat([ev, dup], ignore_index=True)


def day_of(seconds: np.ndarray) -> np.ndarray:
    return (seconds // 86400).astype(int)
