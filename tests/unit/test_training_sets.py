"""The embargoed split of as-of dates into train, validation and test."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest

from microseg.config import PROJECT_ROOT
from microseg.errors import DataQualityError
from ml.specs import load_spec
from ml.training_sets import split_dates

SPEC = load_spec("purchase_propensity", PROJECT_ROOT / "ml/specs")  # a 7-day label
FIRST = date(2026, 9, 18)


def _dates(count: int) -> list[date]:
    return [FIRST + timedelta(days=i) for i in range(count)]


def test_splits_are_a_label_horizon_apart_and_as_new_as_that_allows() -> None:
    splits = split_dates(_dates(20), replace(SPEC, train_dates=6))
    # test on the newest date; validation 7 days before it, training 7 days before that
    assert splits["test"] == [date(2026, 10, 7)]
    assert splits["valid"] == [date(2026, 9, 30)]
    assert splits["train"] == _dates(6)  # 09-18 .. 09-23: each label window ends by 09-30
    assert max(splits["train"]) + timedelta(days=7) == min(splits["valid"])
    assert max(splits["valid"]) + timedelta(days=7) == min(splits["test"])


def test_a_longer_history_trains_on_the_newest_dates_it_may() -> None:
    splits = split_dates(_dates(30), replace(SPEC, train_dates=3, valid_dates=2, test_dates=2))
    assert splits["test"] == _dates(30)[-2:]
    assert splits["valid"] == [date(2026, 10, 8), date(2026, 10, 9)]  # 7 days before 10-16
    assert splits["train"] == [date(2026, 9, 29), date(2026, 9, 30), date(2026, 10, 1)]


def test_too_few_dates_for_the_embargo_is_one_line_with_the_need() -> None:
    assert split_dates(_dates(15), SPEC)["train"] == [FIRST]  # the least: one training date
    with pytest.raises(DataQualityError) as short:
        split_dates(_dates(14), SPEC)
    message = str(short.value)
    assert "14 labelled as-of dates" in message and "need at least 15" in message
    assert "\n" not in message
