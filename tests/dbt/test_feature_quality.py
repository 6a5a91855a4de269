"""The user_features Great Expectations checkpoints run on the built features."""

from __future__ import annotations

from datetime import date

from microseg.config import Settings
from microseg.quality import validate_features
from tests.helpers import run_cli

LAST = date(2026, 10, 6)  # the small data set's last as-of date


def test_features_pass_their_suites(built: Settings) -> None:
    report = validate_features(built, LAST)
    assert report.success, report.summary()
    assert report.checked["user_features"][0] > 200  # rows validated


def test_a_shrinking_feature_table_fails_naming_the_expectation(built: Settings) -> None:
    strict = Settings.from_env(
        {"MICROSEG_HOME": str(built.home), "MICROSEG_FEATURE_MIN_ROW_RATIO": "1.5"}
    )
    report = validate_features(strict, LAST)
    assert not report.success
    assert [f.expectation for f in report.failures] == [
        "expect_column_values_to_be_between(column=row_ratio, min_value=1.5)"
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
