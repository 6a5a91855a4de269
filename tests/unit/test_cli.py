"""The command line: help, usage errors and settings errors are one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from microseg.config import Settings
from microseg.errors import ConfigError
from tests.helpers import run_cli


def test_help_lists_the_commands(tmp_path) -> None:
    proc = run_cli("--help", home=tmp_path)
    assert proc.returncode == 0
    for command in ("generate", "ingest", "validate"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--out", "x", "--users", "0"], "0 must be at least 1"),
        (["generate", "--out", "x", "--start", "soon"], "'soon' is not a date"),
        (["validate", "--as-of", "2026-13-01"], "is not a date"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors(tmp_path, args, message) -> None:
    proc = run_cli(*args, home=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_output_cut_short_by_its_reader_ends_quietly(tmp_path) -> None:
    """`microseg ... | head`: the reader is gone before the command prints (its end of the
    pipe closed at once); no traceback and no "internal error", SIGPIPE's 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "microseg.cli", "experiment", "power", "--baseline", "0.1",
         "--mde", "0.1", "--daily", "1000"],
        env={**os.environ, "MICROSEG_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == ""


def test_bad_setting_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MICROSEG_QUARANTINE_RATE_MAX", "lots")
    proc = run_cli("validate", home=tmp_path)
    assert proc.returncode == 2  # configuration
    assert proc.stderr.strip() == "error: MICROSEG_QUARANTINE_RATE_MAX='lots' is not a number"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MICROSEG_QUARANTINE_RATE_MAX": "2"}, "must be between 0 and 1"),
        ({"MICROSEG_MAX_LINE_BYTES": "10"}, "must be at least 1024"),
        ({"MICROSEG_EVENT_AT_FLOOR": "01/01/2000"}, "is not an ISO date"),
        ({"MICROSEG_RAW_RETENTION_DAYS": "0"}, "must be a whole number of days, at least 1"),
        ({"MICROSEG_QUARANTINE_RETENTION_DAYS": "2.5"}, "must be a whole number of days"),
        ({"MICROSEG_DUCKDB_MEMORY_LIMIT": "lots"}, "must be a size such as 4GB"),
        ({"MICROSEG_DUCKDB_THREADS": "0"}, "must be at least 1"),
        ({"MICROSEG_SESSION_SOURCE": "cookie"}, "='cookie' must be 'inactivity' or 'client'"),
        ({"MICROSEG_MISSING_DELIVERY": "ignore"}, "='ignore' must be 'warn' or 'error'"),
        ({"MICROSEG_ENGINE": "snowflake"}, "='snowflake' must be 'duckdb' or 'spark'"),
        ({"MICROSEG_SPARK_DRIVER_MEMORY": "2 GB"}, "must be a JVM size such as 2g"),
    ],
)
def test_settings_are_checked(env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_defaults(tmp_path) -> None:
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path)})
    assert settings.warehouse_path == tmp_path / "warehouse.duckdb"
    assert settings.analytics_path == tmp_path / "analytics.duckdb"
    assert settings.landing_dir == tmp_path / "landing"
    assert settings.expectations_dir.name == "expectations"


def test_generate_reports_what_it_wrote(tmp_path) -> None:
    proc = run_cli(
        "generate", "--out", str(tmp_path / "out"), "--users", "20", "--days", "1", home=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "in 1 jsonl.gz files" in proc.stdout
    assert (tmp_path / "out" / "ground_truth" / "files.csv").exists()


@pytest.mark.parametrize(
    ("lift", "error"),
    [
        ("newsletter_teaser:teaser=0.5", "plants effects only of experiments on the trigger"),
        ("cart_reminder:control=0.5", "cart_reminder has no treatment arm 'control'"),
        ("nope:reminder=0.5", "has no experiment 'nope'"),
        ("cart_reminder:reminder=1.5", "1.5 must be between 0 and 1"),
        ("cart_reminder=0.5", "is not EXPERIMENT:ARM=SHARE"),
    ],
)
def test_a_planted_lift_must_name_a_treatment_arm_of_a_cart_experiment(
    tmp_path, lift: str, error: str
) -> None:
    args = ("generate", "--out", str(tmp_path / "out"), "--users", "20", "--plant-lift", lift)
    proc = run_cli(*args, home=tmp_path)
    assert proc.returncode == 2 and error in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("group_read", "file_mode", "dir_mode"), [("", 0o600, 0o700), ("true", 0o640, 0o750)]
)
def test_files_under_home_are_private_unless_shared_with_the_group(
    tmp_path, dataset_factory, group_read, file_mode, dir_mode
) -> None:
    """They hold the behavior of identifiable people: once created 0644 (world-readable)."""
    home = tmp_path / "home"
    env = {"MICROSEG_GROUP_READ": group_read}
    proc = run_cli("ingest", str(dataset_factory(users=20, days=1)), home=home, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("validate", "--as-of", "2026-10-02", home=home, env=env)
    assert proc.returncode == 0, proc.stderr
    written = [home, *home.rglob("*")]
    assert len(written) > 20  # the warehouse, GX's results and Data Docs
    modes = {p.stat().st_mode & 0o777 for p in written if p.is_file()}
    assert modes == {file_mode}
    assert {p.stat().st_mode & 0o777 for p in written if p.is_dir()} == {dir_mode}
