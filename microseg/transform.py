"""`microseg transform`: run the dbt project (dbt build) against the working warehouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from microseg.config import Settings
from microseg.errors import DataQualityError, MicrosegError
from microseg.lake import export_raw, require_java, serve_spark_build
from microseg.warehouse import (
    connect,
    ensure_raw_layer,
    has_table,
    require_warehouse,
    warehouse_busy_error,
)

EXAMPLE_ROWS = 3  # offending rows shown for a failed data test
RUN_VALUES_VARIABLE = "MICROSEG_DBT_RUN_VALUES"  # names run_dbt's run_values file for dbt

MART_COUNTS = (
    ("marts.dim_persons", "people"),
    ("marts.fct_sessions", "sessions"),
    ("marts.fct_page_views", "page views"),
    ("marts.fct_user_features_daily", "person-day feature rows"),
)


def run_dbt(
    settings: Settings,
    command: str,
    *args: str,
    run_values: dict[str, Any] | None = None,
    schemas: dict[str, str] | None = None,
    engine: str = "duckdb",
) -> list[str]:
    """Run dbt in a child process with this project's profile; return its output lines, or
    raise one line naming each failed node (with example rows for a failed data test).

    Every run passes the same --vars (the settings' overrides; `schemas` only when a trial
    moves a step's models out of marts), so dbt parses the project again only when it changed;
    what changes from one run of a step to the next (its date, window, plan) goes in
    `run_values`, a JSON file the models read while they run (macros/run_values.sql).
    `engine` is the profile's output: transform builds on settings.engine; every other step
    acts on the DuckDB warehouse, which serves the last build (microseg/lake.py).

    A child process, because dbt-duckdb keeps its DuckDB instance open in the process that ran
    it, which would lock later steps of the same run out of the warehouse. profiles.yml reads
    the resolved home and DuckDB settings from the environment (Settings.dbt_env). dbt's own
    output goes to settings.dbt_log, whose path every error names.
    """
    project = str(settings.dbt_project_dir)
    dbt = Path(sys.executable).with_name("dbt")
    env = {**os.environ, **settings.dbt_env}
    env.pop(RUN_VALUES_VARIABLE, None)
    log = settings.dbt_log
    log_dir = log.parent
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
        str(log_dir),
        "--target",
        engine,
        "--vars",
        json.dumps(settings.dbt_vars | (schemas or {}), sort_keys=True),
        *args,
    ]
    results = settings.dbt_target_dir / "run_results.json"
    results.unlink(missing_ok=True)  # a stale one would name another run's failures
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", suffix=".json", prefix="run_values_", dir=log_dir
    ) as values:  # one file per run: two runs of a step never read each other's
        json.dump(run_values or {}, values)
        values.flush()
        env[RUN_VALUES_VARIABLE] = values.name
        proc = subprocess.run(
            command_line, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    log.write_text(proc.stdout, "utf-8")
    lines = proc.stdout.splitlines()
    if proc.returncode == 0:
        return lines
    if any("Could not set lock on file" in line for line in lines):
        raise warehouse_busy_error(settings.warehouse_path)
    failed = failed_nodes(settings.dbt_target_dir, settings=settings)
    if not failed:
        raise MicrosegError(f"dbt {command} could not run: {_startup_error(lines)} (log: {log})")
    listed = "; ".join(failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    # only failed data tests are the data's fault (not retried); a failed model may be anything
    only_tests = len(failed_nodes(settings.dbt_target_dir, tests_only=True)) == len(failed)
    error = DataQualityError if only_tests else MicrosegError
    raise error(f"dbt {command} failed: {listed}{more} (log: {log})")


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _examples(settings: Settings, compiled_sql: str) -> str:
    """A few rows a failed data test returned (its compiled query, re-run read-only)."""
    try:
        with connect(settings, read_only=True) as con:
            cursor = con.execute(f"select * from ({compiled_sql}) limit {EXAMPLE_ROWS}")
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
    except (duckdb.Error, MicrosegError):
        return ""
    shown = [" ".join(f"{n}={v}" for n, v in zip(names, row, strict=True)) for row in rows]
    return "e.g. " + " | ".join(shown) if shown else ""


def failed_nodes(
    target_dir: Path, *, tests_only: bool = False, settings: Settings | None = None
) -> list[str]:
    """One line per failed node of the last dbt run in `target_dir` (only its data tests with
    `tests_only`): a failed data test names its model and column, the test, a few offending
    rows (when `settings` says where the warehouse is) and the fix its `meta.fix` gives."""
    results = _read_json(target_dir / "run_results.json").get("results", [])
    nodes = _read_json(target_dir / "manifest.json").get("nodes", {})
    failed = []
    for result in results:
        if result.get("status") not in ("error", "fail"):
            continue
        unique_id = result["unique_id"]
        if tests_only and not unique_id.startswith("test."):
            continue
        node = nodes.get(unique_id, {})
        attached = (node.get("attached_node") or "").split(".")[-1]
        if unique_id.startswith("test.") and attached:
            test = (node.get("test_metadata") or {}).get("name") or unique_id.split(".")[2]
            column = f".{node['column_name']}" if node.get("column_name") else ""
            parts = [f"{attached}{column}: data test {test} failed ({result.get('failures')} rows)"]
            if settings is not None and result.get("compiled_code"):
                parts.append(_examples(settings, result["compiled_code"]))
            fix = ((node.get("config") or {}).get("meta") or {}).get("fix")
            parts.append(f"fix: {fix}" if fix else "")
            failed.append(", ".join(p for p in parts if p))
            continue
        name = unique_id.split(".", 2)[-1]
        message = _headline(result.get("message") or "")
        failed.append(f"{name} ({result['status']}: {message})")
    return failed


# Models their own steps build, for one date or window: `microseg segments`, `microseg activate`
STEP_MODELS = ("path:models/segments", "path:models/activation")
# After a Spark build, the models DuckDB builds itself on the tables Spark's build served: the
# views (Spark's live in its own catalog) and the two whose post-hooks act on DuckDB (aliases
# re-key the tables Python steps wrote, consent periods create the has_consent macro)
DUCKDB_AFTER_SPARK = ("config.materialized:view", "int_person_aliases", "consent_periods")


def transform(settings: Settings, *, full_refresh: bool = False) -> dict[str, int]:
    """dbt build (models and their data tests); returns the row count of each mart.

    dbt unit tests are development tests (they need the models to exist already); the test
    suite runs them with `dbt test --select test_type:unit`, production runs leave them out.
    """
    require_warehouse(settings)  # dbt would otherwise create an empty one
    ensure_raw_layer(settings)  # raw tables a newer version reads (after an upgrade)
    full_refresh = full_refresh or engine_switched(settings)
    on_spark = settings.engine == "spark"
    if on_spark:
        require_java()
        export_raw(settings)  # Spark reads raw as Parquet (microseg/lake.py)
    with connect(settings, read_only=True) as con:
        merges_before = _last_merge(con)
    not_steps = ["--exclude", *STEP_MODELS]
    run_dbt(
        settings,
        "build",
        "--exclude-resource-type",
        "unit_test",
        *not_steps,
        *(["--full-refresh"] if full_refresh else []),
        engine=settings.engine,
    )
    if on_spark:
        serve_spark(settings)  # which records the build as Spark's
    else:
        _built_on(settings).write_text("duckdb", "utf-8")
    with connect(settings, read_only=True) as con:
        counts = {
            label: con.execute(f"select count(*) from {table}").fetchone()[0]
            for table, label in MART_COUNTS
        }
        counts["late events waiting for a full refresh"] = con.execute(
            "select count(*) from intermediate.int_late_events"
        ).fetchone()[0]
        counts["merged people whose records moved to the person they joined"] = con.execute(
            "select count(distinct former_person_id) from marts.person_merges "
            "where moved_at > coalesce(?, '-infinity'::timestamp)",
            [merges_before],
        ).fetchone()[0]
    return counts


def serve_spark(settings: Settings) -> None:
    """After a Spark build: its tables served to DuckDB, then the models DuckDB builds itself."""
    serve_spark_build(settings)
    run_dbt(settings, "run", "--select", *DUCKDB_AFTER_SPARK, "--exclude", *STEP_MODELS)
    _built_on(settings).write_text("spark", "utf-8")


def _built_on(settings: Settings) -> Path:
    """The file naming the engine that built the warehouse's tables last."""
    return settings.home / "dbt" / "built_on"


def engine_switched(settings: Settings) -> bool:
    """True when the last build was on the other engine: the next one is then a full build.
    Each engine builds incrementally on its own tables: DuckDB's incremental models refuse
    the column types of tables served from Spark (text where DuckDB has JSON), and Spark's
    own tables miss the nights DuckDB built since."""
    built_on = _built_on(settings)
    return built_on.exists() and built_on.read_text("utf-8") != settings.engine


def _last_merge(con) -> datetime | None:
    """When the identities build last moved a merged person's records (marts.person_merges)."""
    if not has_table(con, "marts", "person_merges"):
        return None
    return con.execute("select max(moved_at) from marts.person_merges").fetchone()[0]
