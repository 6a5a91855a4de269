"""Ground truth beside the dumps (never read by the pipeline): people, sessions, files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from microseg.generate.delivery import day_of
from microseg.generate.world import ARCHETYPES, CATEGORIES, COUNTRIES, GeneratorConfig


def write_truth(
    truth: Path,
    config: GeneratorConfig,
    people: pd.DataFrame,
    devices: pd.DataFrame,
    sessions: pd.DataFrame,
    events: pd.DataFrame,
    delivered: pd.DataFrame,
    accounting: pd.DataFrame,
) -> None:
    """What the generator planted, for tests: people, sessions and per-file accounting."""
    epoch = pd.Timestamp(config.start)
    anon = pd.Series(
        [
            "anon_" + hashlib.md5(f"{config.seed}:device:{d}".encode()).hexdigest()[:20]
            for d in range(len(devices))
        ]
    )  # one per device, not per event
    # devices a person actually used (an owned device with no session never shows up)
    used = sessions[["person", "device"]].drop_duplicates().sort_values(["person", "device"])
    used = used.assign(anonymous_id=anon.to_numpy()[used.device])
    ids = used.groupby("person").anonymous_id.agg(list)
    users_per_device = used.groupby("device").person.nunique()
    shared_ids = anon[users_per_device.index[users_per_device >= 2]]
    # consent as the events say it (a planned opt-out needs a later session to happen in)
    opted_out = people.person.isin(sessions.person[sessions.consent_opt_out]).to_numpy()
    regranted = people.person.isin(sessions.person[sessions.consent_regrant]).to_numpy()
    people_out = pd.DataFrame(
        {
            "person_key": [f"p{p:07d}" for p in people.person],
            "user_id": np.where(people.registered, [f"user_{p:07d}" for p in people.person], None),
            "archetype": np.array(ARCHETYPES)[people.archetype],
            "true_purchase_propensity": people.propensity,
            "country": np.array(COUNTRIES)[people.country],
            "favorite_category": np.array(CATEGORIES)[people.favorite_category],
            "is_registered": people.registered,
            "is_bot": people.archetype == ARCHETYPES.index("bot"),
            "is_opted_out": opted_out & ~regranted,
            "ever_opted_out": opted_out,
            "anonymous_ids": ids.reindex(people.person).to_numpy(),
        }
    )
    span = events.groupby("session").t.agg(["min", "max", "size"])
    flags = [
        "bounce",
        "subscribe_curious",
        "deep_read",
        "product_hesitation",
        "cart_abandon",
        "purchase",
        "login_session",
        "is_bot",
    ]
    sessions_out = sessions[["session", "person", "device", "late_days", *flags]].copy()
    sessions_out["person_key"] = people_out.person_key.to_numpy()[sessions.person]
    sessions_out["anonymous_id"] = anon.to_numpy()[sessions.device]
    sessions_out["session_start_at"] = epoch + pd.to_timedelta(span["min"].to_numpy(), unit="s")
    sessions_out["session_end_at"] = epoch + pd.to_timedelta(span["max"].to_numpy(), unit="s")
    sessions_out["n_events"] = span["size"].to_numpy()
    dup_day = day_of(delivered.received_t[delivered.duplicate_of >= 0].to_numpy())
    dups = pd.Series(dup_day).value_counts()
    accounting["rows_duplicate"] = dups.reindex(range(len(accounting)), fill_value=0).to_numpy()
    accounting["rows_loaded"] = (
        accounting.rows_read - accounting.rows_duplicate - accounting.rows_quarantined
    )
    people_out.to_parquet(truth / "people.parquet", index=False)
    sessions_out.drop(columns=["person", "device"]).to_parquet(
        truth / "sessions.parquet", index=False
    )
    pd.Series(shared_ids.to_numpy(), name="anonymous_id").to_frame().to_parquet(
        truth / "shared_devices.parquet", index=False
    )
    accounting.to_csv(truth / "files.csv", index=False)
