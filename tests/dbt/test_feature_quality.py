"""The user_features Great Expectations checkpoints run on the built features."""

from __future__ import annotations

import shutil
from datetime import date

import duckdb

from microseg.config import Settings
from microseg.quality import FEATURE_VOLUME_SQL, validate_features
from tests.helpers import run_cli

LAST = date(2026, 10, 6)  # the small data set's last as-of date


def test_features_pass_their_suites(built: Settings) -> None:
    report = validate_features(built, LAST)
    assert report.success, report.summary()
    assert report.checked["user_features"][0] > 200  # rows validated


def test_a_shrinking_feature_table_fails_naming_the_expectation(built: Settings, tmp_path) -> None:
    """A night that lost a third of its people's feature rows (a copy of the warehouse) fails
    the volume expectation at the default ratio, naming it and the observed ratio."""
    shutil.copy(built.warehouse_path, tmp_path)
    shrunk = Settings.from_env({"MICROSEG_HOME": str(tmp_path)})
    with duckdb.connect(str(shrunk.warehouse_path)) as con:
        before = con.execute(FEATURE_VOLUME_SQL, [LAST]).fetchone()[3]
        con.execute(
            "delete from marts.fct_user_features_daily "
            "where as_of_date = ? and hash(person_id) % 3 = 0",
            [LAST],
        )
        after = con.execute(FEATURE_VOLUME_SQL, [LAST]).fetchone()[3]
    assert before >= shrunk.feature_min_row_ratio > after  # the table did shrink past the bar
    report = validate_features(shrunk, LAST)
    assert not report.success
    bar = shrunk.feature_min_row_ratio
    assert [f.expectation for f in report.failures] == [
        f"expect_column_values_to_be_between(column=row_ratio, min_value={bar})"
    ]


def test_a_date_without_features_fails_the_suite_and_the_cli_names_the_newest(
    built: Settings,
) -> None:
    """The suite still stops a night whose transform wrote no features for its date; asked on
    the command line, a date past the newest features is refused before any suite runs."""
    report = validate_features(built, date(2030, 1, 1))
    assert "expect_table_row_count_to_be_between(min_value=1): observed 0" in report.summary()
    result = run_cli("validate", "--features", "--as-of", "2030-01-01", home=built.home)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: no features for 2030-01-01: the newest as-of date is 2026-10-06"
    )
