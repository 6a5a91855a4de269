"""`microseg transform`: run the dbt project (dbt build) against the working warehouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.warehouse import connect, require_warehouse

MART_COUNTS = (
    ("marts.dim_persons", "people"),
    ("marts.fct_sessions", "sessions"),
    ("marts.fct_page_views", "page views"),
    ("marts.fct_user_features_daily", "person-day feature rows"),
)


def run_dbt(settings: Settings, command: str, *args: str) -> None:
    """Run dbt in a child process with this project's profile; raise naming each failed node.

    A child process, because dbt-duckdb keeps its DuckDB instance open in the process that ran
    it, which would lock later steps of the same run out of the warehouse. profiles.yml reads
    MICROSEG_HOME, so the resolved home is handed over through it.
    """
    project = str(settings.dbt_project_dir)
    dbt = Path(sys.executable).with_name("dbt")
    env = {**os.environ, "MICROSEG_HOME": str(settings.home)}
    command_line = [
        str(dbt),
        "--no-use-colors",
        *command.split(),  # "build", "docs generate", ...
        "--project-dir",
        project,
        "--profiles-dir",
        project,
        "--target-path",
        str(settings.dbt_target_dir),
        "--log-path",
        str(settings.home / "dbt" / "logs"),
        *args,
    ]
    results = settings.dbt_target_dir / "run_results.json"
    results.unlink(missing_ok=True)  # a stale one would name another run's failures
    # dbt's progress goes to our stdout as it happens; the tail is kept for the error line
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        command_line, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
    if proc.returncode == 0:
        return
    failed = failed_nodes(results)
    if not failed:
        raise MicrosegError(f"dbt {command} could not run: {_startup_error(list(tail))}")
    listed = "; ".join(failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    raise MicrosegError(f"dbt {command} failed: {listed}{more}")


def _startup_error(lines: list[str]) -> str:
    """The message dbt printed after "Encountered an error:" (compilation, parsing, profile)."""
    text = [
        line.split("  ", 1)[-1].strip() if line[:2].isdigit() else line.strip() for line in lines
    ]
    text = [line for line in text if line]
    for i, line in enumerate(text):
        if line.startswith("Encountered an error"):
            detail = [t for t in text[i + 1 :] if not t.startswith(">")]
            return " ".join(detail[:2])[:300] or line
    return (text or ["no output"])[-1][:300]


def _headline(message: str) -> str:
    """The informative line of a dbt message (dbt puts "X Error in model y (path)" first)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and " Error in " in lines[0]:
        return lines[1][:300]
    return (lines or [""])[0][:300]


def failed_nodes(run_results: Path, *, tests_only: bool = False) -> list[str]:
    """'node (status: first line of message)' for each failed node of the last dbt run
    (only its data tests with `tests_only`)."""
    try:
        results = json.loads(run_results.read_text("utf-8"))["results"]
    except (OSError, ValueError, KeyError):
        return []
    failed = []
    for result in results:
        if result.get("status") not in ("error", "fail"):
            continue
        if tests_only and not result["unique_id"].startswith("test."):
            continue
        node = result["unique_id"].split(".", 2)[-1]
        message = _headline(result.get("message") or "")
        failed.append(f"{node} ({result['status']}: {message})")
    return failed


def transform(settings: Settings, *, full_refresh: bool = False) -> dict[str, int]:
    """dbt build (models and their data tests); returns the row count of each mart.

    dbt unit tests are development tests (they need the models to exist already); the test
    suite runs them with `dbt test --select test_type:unit`, production runs leave them out.
    """
    require_warehouse(settings)  # dbt would otherwise create an empty one
    run_dbt(
        settings,
        "build",
        "--exclude-resource-type",
        "unit_test",
        "--exclude",
        "path:models/segments",  # `microseg segments` builds these, for one as-of date
        "--vars",
        json.dumps({"late_arrival_hours": settings.late_arrival_hours}),
        *(["--full-refresh"] if full_refresh else []),
    )
    with connect(settings, read_only=True) as con:
        counts = {
            label: con.execute(f"select count(*) from {table}").fetchone()[0]
            for table, label in MART_COUNTS
        }
        counts["late events waiting for a full refresh"] = con.execute(
            "select count(*) from intermediate.int_late_events"
        ).fetchone()[0]
    return counts
