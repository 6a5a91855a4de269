"""Point-in-time training sets: features as of D, label from [D, D + horizon).

Both come from marts.fct_user_features_daily: the features row at D only uses facts final
before D, and the label reads the row at D + horizon, whose window covers exactly
[D, D + horizon). No feature is re-derived here. Train, validation and test dates are kept a
label horizon apart (the embargo), so no row's label window reaches into a later split.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pandas as pd

from microseg.config import Settings
from microseg.errors import DataQualityError, MicrosegError
from microseg.privacy import consent_policy
from microseg.warehouse import connect
from ml.specs import FAIRNESS_GROUPS, Spec


def labelled_dates(settings: Settings, spec: Spec) -> list[date]:
    """The as-of dates whose label window has fully happened, oldest first."""
    with connect(settings, read_only=True) as con:
        rows = con.execute(
            """
            select distinct as_of_date from marts.fct_user_features_daily
            where as_of_date + ?::integer
                  <= (select max(as_of_date) from marts.fct_user_features_daily)
            order by as_of_date
            """,
            [spec.horizon_days],
        ).fetchall()
    return [row[0] for row in rows]


def split_dates(dates: list[date], spec: Spec) -> dict[str, list[date]]:
    """Test on the newest labelled dates, validation on the newest whose label windows end by
    the first test date, training on the newest whose windows end by the first validation
    date: a training label never covers a day validation or test is labelled on, nor does a
    validation label a test day (the embargo, one label horizon)."""
    embargo = timedelta(days=spec.horizon_days)
    test = dates[-spec.test_dates :]
    valid = [d for d in dates if test and d + embargo <= test[0]][-spec.valid_dates :]
    train = [d for d in dates if valid and d + embargo <= valid[0]][-spec.train_dates :]
    if len(test) < spec.test_dates or len(valid) < spec.valid_dates or not train:
        needed = spec.test_dates + spec.valid_dates + 1 + 2 * (spec.horizon_days - 1)
        raise DataQualityError(
            f"{spec.name}: {len(dates)} labelled as-of dates (a {spec.horizon_days}-day label "
            f"needs that much history after each date); {spec.test_dates} test, "
            f"{spec.valid_dates} validation and at least 1 training date, each split a "
            f"{spec.horizon_days}-day embargo from the next, need at least {needed}"
        )
    return {"train": train, "valid": valid, "test": test}


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
    """Labelled rows with a `split` column: train (oldest), valid, test (newest dates); the
    dates inside an embargo are left out."""
    splits = split_dates(labelled_dates(settings, spec), spec)
    frame = people_at(
        settings, spec, [d for dates in splits.values() for d in dates], labelled=True
    )
    frame["split"] = frame.as_of_date.dt.date.map(
        {d: split for split, dates in splits.items() for d in dates}
    )
    return frame
