"""`make airflow`: Airflow 3 on this machine, as the data team runs it, with login required.

api-server (UI and REST) on 127.0.0.1, scheduler and dag-processor; SQLite metadata and the
LocalExecutor under $MICROSEG_HOME/airflow. Login goes through the simple auth manager with
one admin user: the password comes from MICROSEG_AIRFLOW_PASSWORD or is generated on first
start, printed once and kept in the passwords file (never an anonymous admin). The browser
test starts the same processes on a free port.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from microseg.config import PROJECT_ROOT, Settings, disable_telemetry
from microseg.orchestration import WRITER_POOL

COMPONENTS = ("api-server", "scheduler", "dag-processor")


@dataclass(frozen=True)
class LocalAirflow:
    """Where a local Airflow lives and how to reach it."""

    home: Path
    port: int
    username: str
    password: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure(
    settings: Settings, port: int, username: str, password: str | None, **extra_env: str
) -> tuple[LocalAirflow, bool]:
    """The environment of every Airflow process; returns (airflow, password_was_generated)."""
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    stored = json.loads(passwords.read_text()) if passwords.exists() else {}
    generated = False
    if password is None:
        password = stored.get(username)
        if password is None:
            password, generated = secrets.token_urlsafe(12), True
    passwords.write_text(json.dumps({**stored, username: password}))
    passwords.chmod(0o600)
    env = {
        **os.environ,
        "MICROSEG_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        **extra_env,
    }
    return LocalAirflow(home, port, username, password, env), generated


def prepare(airflow: LocalAirflow) -> None:
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


def start(airflow: LocalAirflow) -> list[subprocess.Popen]:
    """Start the three components; their logs go to AIRFLOW_HOME/<component>.log."""
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    processes = []
    for component in COMPONENTS:
        log = (airflow.home / f"{component}.log").open("ab")
        processes.append(
            subprocess.Popen(
                [airflow_bin, component],
                env=airflow.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() signals the component and its workers
            )
        )
    return processes


def wait_until_up(airflow: LocalAirflow, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{airflow.url}/api/v2/monitor/health", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Airflow did not answer on {airflow.url} within {timeout:.0f} s")


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> int:
    disable_telemetry()
    settings = Settings.from_env()
    airflow, generated = configure(
        settings, settings.airflow_port, settings.airflow_user, settings.airflow_password
    )
    prepare(airflow)
    processes = start(airflow)
    try:
        wait_until_up(airflow)
        print(f"Airflow UI: {airflow.url}  (user {airflow.username})")
        if generated:
            print(f"generated password, shown once: {airflow.password}")
        print(f"logs: {airflow.home}/*.log; Ctrl-C stops every component")
        while all(p.poll() is None for p in processes):
            time.sleep(2)
        print("an Airflow component exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
