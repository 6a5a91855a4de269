"""`microseg score`: score every eligible, consenting person with each model's champion.

Writes marts.user_scores (person x model x as_of_date; for a multiclass model the score is the
probability of the predicted category); a re-run of the same date replaces
that date's rows for the model in one transaction, and people who opted out since are removed
from every date. A person merged into another has their rows moved to the survivor when the
identities are built (dbt model int_person_aliases). dbt reads the table back as a source, so
segments can use scores.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.privacy import consent_policy
from microseg.warehouse import connect, features_as_of
from ml import registry
from ml.specs import load_spec, spec_names
from ml.train import deciles, predict
from ml.training_sets import people_at

USER_SCORES_DDL = """
create table if not exists marts.user_scores (
    person_id varchar not null,
    model_name varchar not null,
    model_version varchar not null,
    score double not null,
    decayed_score double,
    predicted_class varchar,
    decile integer not null,
    is_above_threshold boolean not null,
    as_of_date date not null,
    primary key (person_id, model_name, as_of_date)
)"""


def _relevance(settings: Settings, spec, person_ids: pd.Series, as_of: date) -> np.ndarray:
    """exp(-ln 2 * days since the last session / half-life) with the spec's
    decay_half_life_days (1 without one, or for someone without a session): the score to act
    on fades as the behavior it was computed from goes stale."""
    if spec.decay_half_life_days is None:
        return np.ones(len(person_ids))
    with connect(settings, read_only=True) as con:
        days = (
            con.execute(
                "select person_id, days_since_last_session from marts.fct_user_features_daily "
                "where as_of_date = ?",
                [as_of],
            )
            .df()
            .set_index("person_id")
            .days_since_last_session.reindex(person_ids)
            .fillna(0)
            .to_numpy(dtype=float)
        )
    return np.exp(-np.log(2) * days / spec.decay_half_life_days)


def score(
    settings: Settings, as_of: date | None = None, models: list[str] | None = None
) -> dict[str, int]:
    """Scores written per model. Models without a champion are skipped when not asked for."""
    as_of = features_as_of(settings, as_of)
    client = registry.client(settings)
    names = models or [
        n
        for n in spec_names(settings.ml_specs_dir)
        if registry.version_by_alias(client, n, registry.CHAMPION)
    ]
    written = {}
    for name in names:
        spec = load_spec(name, settings.ml_specs_dir)
        booster, version, classes = registry.load_booster(settings, name, registry.CHAMPION)
        people = people_at(settings, spec, [as_of], labelled=False)
        if people.empty:
            raise MicrosegError(f"{name}: nobody to score on {as_of} (no features that day)")
        scores = predict(booster, people)
        predicted_class = None
        if classes is not None:  # multiclass: the likeliest category and its probability
            predicted_class = np.asarray(classes)[scores.argmax(axis=1)]
            scores = scores.max(axis=1)
        rows = pd.DataFrame(
            {
                "person_id": people.person_id,
                "model_name": name,
                "model_version": version,
                "score": scores,
                "decayed_score": scores * _relevance(settings, spec, people.person_id, as_of),
                "predicted_class": predicted_class,
                "decile": deciles(scores),
                "is_above_threshold": scores >= spec.activation_threshold,
                "as_of_date": as_of,
            }
        )
        with connect(settings) as con:
            con.execute("create schema if not exists marts")
            con.execute(USER_SCORES_DDL)
            for column, kind in (("predicted_class", "varchar"), ("decayed_score", "double")):
                con.execute(  # tables from before multiclass models, before decay
                    f"alter table marts.user_scores add column if not exists {column} {kind}"
                )
            con.execute("begin")
            con.execute(
                "delete from marts.user_scores where model_name = ? and as_of_date = ?",
                [name, as_of],
            )
            con.register("new_scores", rows)
            con.execute("insert into marts.user_scores by name select * from new_scores")
            con.execute(  # consent first, on every date
                "delete from marts.user_scores "
                "where not marts.has_consent(person_id, ?, as_of_date)",
                [consent_policy().purpose_of["scores"]],
            )
            con.execute("commit")
        written[name] = len(rows)
    return written
