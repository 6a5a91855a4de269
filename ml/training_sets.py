"""Point-in-time training sets: features as of D, label from [D, D + horizon).

Both come from marts.fct_user_features_daily: the features row at D only uses facts final
before D, and the label reads the row at D + horizon, whose window covers exactly
[D, D + horizon). No feature is re-derived here.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from microseg.config import Settings
from microseg.errors import DataQualityError, MicrosegError
from microseg.privacy import consent_policy
from microseg.warehouse import connect
from ml.specs import FAIRNESS_GROUPS, Spec


def labelled_dates(settings: Settings, spec: Spec) -> list[date]:
    """The newest `spec.as_of_dates` as-of dates whose label window has fully happened."""
    with connect(settings, read_only=True) as con:
        rows = con.execute(
            """
            select distinct as_of_date from marts.fct_user_features_daily
            where as_of_date + ?::integer
                  <= (select max(as_of_date) from marts.fct_user_features_daily)
            order by as_of_date desc limit ?
            """,
            [spec.horizon_days, spec.as_of_dates],
        ).fetchall()
    return sorted(row[0] for row in rows)


def people_at(settings: Settings, spec: Spec, dates: list[date], *, labelled: bool) -> pd.DataFrame:
    """Eligible, consenting people on each date with their features (and label if asked):
    consent for the scores' purpose, for training as for scoring."""
    purpose = consent_policy().purpose_of["scores"]
    features = ", ".join(f"features.{c}" for c in spec.features)
    label_join = (
        f"join ({spec.label_relation}) as labels on labels.person_id = features.person_id "
        "and labels.as_of_date = features.as_of_date"
        if labelled
        else ""
    )
    label = ", labels.label" if labelled else ""
    sql = f"""
        select
            features.person_id, features.as_of_date, {features}{label},
            {", ".join(f"features.{c}" for c in FAIRNESS_GROUPS)}
        from marts.fct_user_features_daily features
        {label_join}
        where features.as_of_date in (select unnest(?::date[]))
          and ({spec.eligible_sql})
          and marts.has_consent(features.person_id, ?, features.as_of_date)
        order by features.as_of_date, features.person_id
    """
    with connect(settings, read_only=True) as con:
        try:
            frame = con.execute(sql, [dates, purpose]).df()
        except duckdb.CatalogException as exc:  # no features before the first dbt build
            raise MicrosegError(f"cannot read features: {str(exc).splitlines()[0]}") from None
    for column in spec.features:
        if column in spec.categorical:
            frame[column] = frame[column].astype("string")
        else:
            frame[column] = frame[column].astype("float64")
    return frame


def training_set(settings: Settings, spec: Spec) -> pd.DataFrame:
    """Labelled rows with a `split` column: train (oldest), valid, test (newest dates)."""
    dates = labelled_dates(settings, spec)
    needed = spec.test_dates + spec.valid_dates + 1
    if len(dates) < needed:
        raise DataQualityError(
            f"{spec.name}: {len(dates)} labelled as-of dates (a {spec.horizon_days}-day label "
            f"needs that much history after each date); at least {needed} are needed"
        )
    frame = people_at(settings, spec, dates, labelled=True)
    test_from = dates[-spec.test_dates]
    valid_from = dates[-spec.test_dates - spec.valid_dates]
    frame["split"] = "train"
    frame.loc[frame.as_of_date >= pd.Timestamp(valid_from), "split"] = "valid"
    frame.loc[frame.as_of_date >= pd.Timestamp(test_from), "split"] = "test"
    return frame
