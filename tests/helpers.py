"""Test helpers: run the CLI like a user, read the warehouse, snapshot tables."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

from microseg.config import PROJECT_ROOT, Settings

# The tables of the dbt marts. Not here, the views: element_heatmap_daily and
# person_behavior_vectors (published), person_outcomes and person_category_outcomes (not): a
# view names its warehouse's catalog, so comparing it across two attached warehouses would
# read one side twice.
MARTS = (
    "dim_persons",
    "fct_sessions",
    "fct_page_views",
    "fct_element_interactions",
    "fct_session_micro_behaviors",
    "fct_person_category_daily",
    "fct_person_item_interactions",
    "fct_user_features_daily",
    "consent_ledger",
    "consent_periods",
)
PUBLISHED_VIEWS = ("element_heatmap_daily", "person_behavior_vectors")


def champion_copy(champion_home: Path, home: Path) -> dict[str, str]:
    """A private copy of the champion's warehouse at `home`, read with the champion's MLflow
    registry: the environment for Settings.from_env (or run_cli)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(champion_home / "warehouse.duckdb", home)
    registry = Settings.from_env({"MICROSEG_HOME": str(champion_home)}).mlflow_tracking_uri
    return {"MICROSEG_HOME": str(home), "MICROSEG_MLFLOW_TRACKING_URI": registry}


def short_window_experiments(folder: Path) -> Path:
    """experiments.yml with its trigger experiments running over the generated October days
    (the threshold test from the third) and 1-day metric windows, so a few nights give a
    lift."""
    document = yaml.safe_load((PROJECT_ROOT / "experiments.yml").read_text())
    for metric in document["metrics"]:
        metric["window_days"] = 1
    starts = {"cart_reminder": "2026-10-01", "lingerer_threshold": "2026-10-03"}
    for experiment in document["experiments"]:
        if experiment["name"] in starts:
            experiment.update(start=starts[experiment["name"]], end="2026-10-10")
    path = folder / "experiments.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def run_cli(
    *args: str, home: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `microseg` in a subprocess exactly as a user would, against MICROSEG_HOME=home."""
    env = {**os.environ, **(env or {}), "MICROSEG_HOME": str(home)}
    env.pop("MICROSEG_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "microseg.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def query(settings: Settings, sql: str, params: list | dict | None = None) -> list[tuple]:
    """Read the warehouse in a short read-only connection."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def table_snapshot(settings: Settings) -> dict[str, list[tuple]]:
    """Full, ordered content of the raw layer (wall-clock columns left out)."""
    return {
        "events": query(settings, "select * from raw.events order by event_id"),
        "quarantine": query(
            settings, "select * from raw.events_quarantine order by source_file, source_line"
        ),
        "manifest": query(
            settings,
            "select * exclude (loaded_at, file_path) from raw.load_manifest order by file_name",
        ),
    }


# How a ground-truth person is keyed after stitching: registered people by their user id,
# anonymous people by their one device (see int_identities_stitched).
TRUTH_PEOPLE = """
create or replace temp view truth_people as
select p.*,
       'per_' || left(md5(case when p.is_registered then 'user:' || p.user_id
                               else 'anon:' || p.anonymous_ids[1] end), 24) as person_id
from '{truth}/people.parquet' p
where len(p.anonymous_ids) > 0
"""


# Whether a person had withdrawn personalization as of a date (its midnight), by the consent
# events the generator wrote: an opt-out (at the start of its session) before it and no
# re-grant between (truth_people.is_opted_out: the opt-out that still stands).
TRUTH_OPTED_OUT_ON = """
create or replace temp view truth_withdrawals as
select p.person_id as withdrawn_person_id, o.session_start_at as withdrawn_at,
       (select min(r.session_start_at) from truth_sessions r
        where r.person_key = o.person_key and r.consent_regrant
          and r.session_start_at > o.session_start_at) as regranted_at
from truth_sessions o join truth_people p using (person_key)
where o.consent_opt_out;
-- the view's columns are named apart, so that an unqualified argument names the caller's
create or replace temp macro truth_opted_out_on(person, as_of) as (
    exists (
        select 1 from truth_withdrawals
        where withdrawn_person_id = person and withdrawn_at < as_of
          and (regranted_at is null or regranted_at >= as_of)
    )
)
"""


def truth_connection(settings: Settings, dataset: Path) -> duckdb.DuckDBPyConnection:
    """A read-only warehouse connection with the generator's ground truth as temp views
    (truth_people keyed by the pipeline's person_id, truth_sessions) and the temp macro
    truth_opted_out_on(person_id, as_of)."""
    connection = duckdb.connect(str(settings.warehouse_path), read_only=True)
    truth = dataset / "ground_truth"
    connection.execute(TRUTH_PEOPLE.format(truth=truth))
    connection.execute(
        f"create temp view truth_sessions as select * from '{truth}/sessions.parquet'"
    )
    connection.execute(TRUTH_OPTED_OUT_ON)
    return connection


# Columns that record when or where a load happened rather than what it loaded.
WALL_CLOCK_COLUMNS = {
    "raw.load_manifest": ("loaded_at", "file_path"),
    "marts.activation_deliveries": ("recorded_at",),
    "marts.activation_dead_letters": ("recorded_at",),
    "marts.activation_runs": ("finished_at",),
    "marts.person_merges": ("moved_at",),
    "marts.trigger_evaluations": ("evaluated_at",),
    # when staging's run began, carried with the event's staged columns
    "staging.stg_events": ("staged_at",),
    "intermediate.int_late_events": ("staged_at",),
    "intermediate.int_events_paged": ("staged_at",),
    "intermediate.int_identity_links": ("linked_through_staged_at",),
}


def storage_version(path: Path) -> str:
    """The storage format DuckDB wrote the file in ("v1.5.0+": readable from that DuckDB on)."""
    with duckdb.connect() as con:
        con.execute(f"attach '{path}' as file (read_only)")
        return con.execute(
            "select tags['storage_version'] from duckdb_databases() where database_name = 'file'"
        ).fetchone()[0]


def newest_storage_version(tmp_path: Path) -> str:
    """What the installed DuckDB's newest storage format is called, read off a new file."""
    with duckdb.connect() as con:
        con.execute(f"attach '{tmp_path / 'newest.duckdb'}' as file (storage_version 'latest')")
    return storage_version(tmp_path / "newest.duckdb")


def warehouse_differences(
    left: Settings, right: Settings, *, doubles: int | None = None
) -> dict[str, tuple[int, int]]:
    """Every table of two warehouses compared row for row (as multisets, wall-clock columns
    left out; with `doubles`, DOUBLE columns rounded to that many decimals): {table: (rows only
    in left, rows only in right)} for the tables that differ; a table missing on one side
    counts all its rows."""
    con = duckdb.connect()
    con.execute(f"attach '{left.warehouse_path}' as l (read_only)")
    con.execute(f"attach '{right.warehouse_path}' as r (read_only)")
    tables = {
        side: {
            f"{schema}.{table}"
            for schema, table in con.execute(
                "select schema_name, table_name from duckdb_tables() where database_name = ?",
                [side],
            ).fetchall()
        }
        for side in ("l", "r")
    }
    differences = {}
    for table in sorted(tables["l"] | tables["r"]):
        if table not in tables["r"] or table not in tables["l"]:
            side = "l" if table in tables["l"] else "r"
            rows = con.execute(f"select count(*) from {side}.{table}").fetchone()[0]
            differences[table] = (rows, 0) if side == "l" else (0, rows)
            continue
        schema, name = table.split(".")
        columns = ", ".join(
            f'round("{column}", {doubles}) as "{column}"'
            if doubles is not None and data_type == "DOUBLE"
            else f'"{column}"'
            for column, data_type in con.execute(
                "select column_name, data_type from information_schema.columns where "
                "table_catalog = 'l' and table_schema = ? and table_name = ? "
                "order by ordinal_position",
                [schema, name],
            ).fetchall()
            if column not in WALL_CLOCK_COLUMNS.get(table, ())
        )
        only = [
            con.execute(
                f"select count(*) from (select {columns} from {a}.{table} "
                f"except all select {columns} from {b}.{table})"
            ).fetchone()[0]
            for a, b in (("l", "r"), ("r", "l"))
        ]
        if any(only):
            differences[table] = (only[0], only[1])
    con.close()
    return differences


def listening_addresses(root_pids: list[int]) -> set[str]:
    """The local addresses of every TCP socket in LISTEN state held by these processes or
    their descendants (read from /proc, as `ss -ltnp` would show them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = set(), list(root_pids)
    while todo:
        pid = todo.pop()
        if pid not in pids:
            pids.add(pid)
            todo += children.get(pid, [])
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                addresses.add(_address(local))
    return addresses


def _address(hex_address: str) -> str:
    """/proc/net/tcp's little-endian hex "0100007F:1F90" as "127.0.0.1:8080"."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        shown = ".".join(str(b) for b in reversed(raw))
    else:  # IPv6: four little-endian 32-bit words
        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
        shown = str(ipaddress.IPv6Address(b"".join(words)))
    return f"{shown}:{int(port, 16)}"
