"""`make airflow`: Airflow 3 on this machine, as the data team runs it, with login required.

api-server (UI and REST) on 127.0.0.1, scheduler and dag-processor; the LocalExecutor, and
the metadata in PostgreSQL (microseg.serve.postgres: SQLite locks the whole database on each
write, so a CLI backfill beside the scheduler fails there), under $MICROSEG_HOME/airflow.
Login goes through the simple auth manager with one admin user: the password comes from
MICROSEG_AIRFLOW_PASSWORD or is generated on first start, printed once and kept in the
passwords file (never an anonymous admin). The scheduler
serves no task logs over the network (its log server binds every interface): with the
LocalExecutor the api-server reads them from disk. The browser test starts the same
processes on a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from microseg.config import PROJECT_ROOT, Settings, disable_telemetry, restrict_new_files
from microseg.errors import UsageError
from microseg.orchestration import WRITER_POOL
from microseg.serve import postgres
from microseg.serve.local import (
    LOOPBACK,
    LocalServer,
    free_port,
    serve_until_interrupted,
    start,
    stop,
    stored_secret,
    wait_for_http,
    write_private,
)

# component -> its command line (the scheduler without its network log server)
COMPONENTS = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
}


def configure(
    settings: Settings, port: int, username: str, password: str | None, **extra_env: str
) -> tuple[LocalServer, postgres.LocalPostgres, bool]:
    """The environment of every Airflow process and its metadata database (written to
    AIRFLOW_HOME/env.sh for the CLI); returns (airflow, database, password_was_generated)."""
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    password, generated = stored_secret(passwords, username, password)
    database = postgres.cluster(home)
    env = {
        **os.environ,
        "MICROSEG_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.url(),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database.url("psycopg_async"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{LOOPBACK}:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOOPBACK}:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        **extra_env,
    }
    _write_shell_env(home / "env.sh", env)
    return LocalServer(home, port, username, password, env), database, generated


# never written to env.sh: keys and passwords that belong apart from the data (the privacy
# key above all) or that only the servers' own logins need
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN")


def _write_shell_env(path: Path, env: dict[str, str]) -> None:
    """Airflow's and microseg's variables as `export` lines, so the `airflow` CLI in a shell
    (`source $MICROSEG_HOME/airflow/env.sh`) reaches the same database as the running
    components (a new port each start); 0600: its database URL holds that password."""
    lines = [
        f"export {name}={shlex.quote(value)}"
        for name, value in sorted(env.items())
        if name.startswith(("AIRFLOW", "MICROSEG_")) and not SECRET_NAME.search(name)
    ]
    write_private(path, "\n".join(lines) + "\n")


def start_database(airflow: LocalServer, database: postgres.LocalPostgres) -> subprocess.Popen:
    """PostgreSQL up with Airflow's database in it (log: AIRFLOW_HOME/postgres.log)."""
    return postgres.start_server(database, airflow.home / "postgres.log")


def prepare(airflow: LocalServer) -> None:
    """The metadata database and the writer pool."""
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    for command in (
        ["db", "migrate"],
        ["pools", "set", WRITER_POOL, "1", "DuckDB: one process on the warehouse"],
    ):
        subprocess.run(
            [airflow_bin, *command],
            env=airflow.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def start_components(airflow: LocalServer) -> list[subprocess.Popen]:
    """Start the three components; their logs go to AIRFLOW_HOME/<component>.log."""
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    return [
        start([airflow_bin, *COMPONENTS[name]], airflow.env, airflow.home / f"{name}.log")
        for name in COMPONENTS
    ]


def health_url(airflow: LocalServer) -> str:
    return f"{airflow.url}/api/v2/monitor/health"


def wait_until_up(airflow: LocalServer, timeout: float = 180) -> None:
    wait_for_http(health_url(airflow), timeout)


def main() -> int:
    """Run until Ctrl-C; a setting, PostgreSQL or migration problem is one line (exit 2/1)."""
    disable_telemetry()
    try:
        settings = Settings.from_env()
        restrict_new_files(settings)
        airflow, database, generated = configure(
            settings, settings.airflow_port, settings.airflow_user, settings.airflow_password
        )
        server = start_database(airflow, database)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    processes = [server]
    try:
        prepare(airflow)
        processes += start_components(airflow)
        return serve_until_interrupted(
            "Airflow",
            airflow,
            processes,  # PostgreSQL too: Airflow cannot outlive it
            generated=generated,
            health_url=health_url(airflow),
            logs=f"{airflow.home}/*.log",
        )
    except subprocess.CalledProcessError as exc:
        print(
            f"error: airflow {' '.join(exc.cmd[1:3])} failed (exit {exc.returncode}); run it "
            f"by hand after `source {airflow.home / 'env.sh'}` to see why",
            file=sys.stderr,
        )
        return 1
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
