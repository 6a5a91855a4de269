"""`microseg score`: score every eligible, consenting person with each model's champion.

Writes marts.user_scores (person x model x as_of_date; for a multiclass model the score is the
probability of the predicted category), each score with the three features that moved it most
(`explanation`); a re-run of the same date replaces
that date's rows for the model in one transaction, and people who opted out since are removed
from every date. A person merged into another has their rows moved to the survivor when the
identities are built (dbt model int_person_aliases). dbt reads the table back as a source, so
segments can use scores.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from microseg.config import Settings
from microseg.errors import DataQualityError, MicrosegError
from microseg.privacy import consent_policy
from microseg.warehouse import connect, features_as_of, has_table
from ml import monitoring, registry
from ml.specs import load_spec, spec_names
from ml.train import deciles
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
    explanation json,  -- the top 3 {feature, value, contribution} (ml.train.explanations)
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


def _monitor(
    settings: Settings, client, spec, version: str, tonight: pd.DataFrame, as_of: date
) -> str | None:
    """Drift of tonight's inputs and scores against the training set and the previous night,
    into marts.model_monitoring. Returns why the model must not score tonight when a subject
    reaches the spec's fail level (its rows are written all the same)."""
    ref = monitoring.training_reference(client, spec.name, version)
    if ref is None:
        return None
    night_before = as_of - timedelta(days=1)
    with connect(settings, read_only=True) as con:
        had = has_table(con, "marts", "user_scores")
        earlier = (
            con.execute(
                "select person_id, score from marts.user_scores "
                "where model_name = ? and as_of_date = ?",
                [spec.name, night_before],
            ).df()
            if had
            else pd.DataFrame(columns=["person_id", "score"])
        )
    previous = None
    if not earlier.empty:  # that night's people as scored then, with that night's features
        features = people_at(settings, spec, [night_before], labelled=False)
        previous = features.merge(earlier, on="person_id")
    rows = monitoring.compare(ref, tonight, previous, spec.monitoring)
    with connect(settings) as con:
        monitoring.write(con, rows, model=spec.name, version=version, as_of=as_of)
    failed = rows[rows.status == "fail"]
    if failed.empty:
        return None
    worst = failed.sort_values("psi", ascending=False).iloc[0]
    against = "training set" if worst.baseline == "training" else f"night of {night_before}"
    return (
        f"{spec.name} v{version}: {failed.subject.nunique()} of its inputs and score drifted "
        f"past fail_psi {spec.monitoring.fail}, most {worst.subject} (PSI {worst.psi:.2f} "
        f"against the {against}); its scores for {as_of} are not written: find what changed, "
        f"retrain it (`microseg train --model {spec.name}`, then `microseg promote`) or "
        "raise fail_psi in its spec"
    )


def score(
    settings: Settings, as_of: date | None = None, models: list[str] | None = None
) -> dict[str, int]:
    """Scores written per model. Models without a champion are skipped when not asked for; a
    model whose population drifted past its spec's fail level is refused (ml/monitoring.py)."""
    as_of = features_as_of(settings, as_of)
    client = registry.client(settings)
    names = models or [
        n
        for n in spec_names(settings.ml_specs_dir)
        if registry.version_by_alias(client, n, registry.CHAMPION)
    ]
    written, refused = {}, []
    for name in names:
        spec = load_spec(name, settings.ml_specs_dir)
        scorer = registry.load_scorer(settings, name, registry.CHAMPION)
        version = scorer.version
        people = people_at(settings, spec, [as_of], labelled=False)
        if people.empty:
            raise MicrosegError(f"{name}: nobody to score on {as_of} (no features that day)")
        inputs = scorer.inputs(people)
        scores = scorer.predict(inputs)
        why = scorer.explain(inputs, scores)
        predicted_class = None
        if scorer.classes is not None:  # multiclass: the likeliest category and its probability
            predicted_class = np.asarray(scorer.classes)[scores.argmax(axis=1)]
            scores = scores.max(axis=1)
        drifted = _monitor(settings, client, spec, version, people.assign(score=scores), as_of)
        if drifted:
            refused.append(drifted)
            continue
        rows = pd.DataFrame(
            {
                "person_id": people.person_id,
                "model_name": name,
                "model_version": version,
                "score": scores,
                "decayed_score": scores * _relevance(settings, spec, people.person_id, as_of),
                "predicted_class": predicted_class,
                "decile": deciles(scores),
                "is_above_threshold": scores >= scorer.threshold,
                "as_of_date": as_of,
                "explanation": why,
            }
        )
        with connect(settings) as con:
            con.execute("create schema if not exists marts")
            con.execute(USER_SCORES_DDL)
            added = (
                ("predicted_class", "varchar"),
                ("decayed_score", "double"),
                ("explanation", "json"),
            )
            for column, kind in added:
                con.execute(  # tables from before multiclass models, decay, explanations
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
    if refused:  # the other models' scores are written
        raise DataQualityError("; ".join(refused))
    return written
