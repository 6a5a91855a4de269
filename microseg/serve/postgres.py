"""PostgreSQL for Airflow's metadata, run by `make airflow` on the loopback.

Debian's server binaries, one cluster per MICROSEG_HOME, initialized on first start with a
generated password (kept 0600 in AIRFLOW_HOME/postgres_password.json) and password authentication
for every connection; the server listens on 127.0.0.1 only and has no Unix socket. PostgreSQL
refuses to run as root, so under root it runs as Debian's `postgres` user, and its cluster
lives in that user's home (it cannot reach folders under a 0700 MICROSEG_HOME): `postgres` in
AIRFLOW_HOME then links to it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from microseg.errors import ConfigError
from microseg.serve.local import (
    LOOPBACK,
    as_account,
    free_port,
    start,
    stop,
    stored_secret,
    write_private,
)

ROLE = "airflow"
DATABASE = "airflow"
SERVER_USER = "postgres"  # Debian's: owns the server when microseg runs as root
PASSWORD_FILE = "postgres_password.json"  # in AIRFLOW_HOME


@dataclass(frozen=True)
class LocalPostgres:
    """A cluster: where its files are, the OS user the server runs as, how to reach it."""

    data_dir: Path
    run_as: str | None  # None: the current user
    port: int
    password: str

    def url(self, driver: str = "psycopg") -> str:
        """SQLAlchemy's URL of Airflow's database (driver psycopg_async for the async engine)."""
        return f"postgresql+{driver}://{ROLE}:{self.password}@{LOOPBACK}:{self.port}/{DATABASE}"

    def connect(self, dbname: str = DATABASE) -> psycopg.Connection:
        """An autocommit connection as the `airflow` role (the only one the cluster has)."""
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=ROLE,
            password=self.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )


def server_binaries() -> Path:
    """The newest of Debian's PostgreSQL server folders, else the one initdb is found in."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    initdb = str(found[-1]) if found else shutil.which("initdb")
    if initdb is None:
        raise ConfigError(
            "PostgreSQL's server is not installed (Airflow keeps its metadata in it): "
            "`make airflow` installs Debian's postgresql"
        )
    return Path(initdb).parent


def cluster(airflow_home: Path) -> LocalPostgres:
    """This home's cluster on a free port, its password from the passwords file."""
    password, _ = stored_secret(airflow_home / PASSWORD_FILE, ROLE, None)
    if os.geteuid() != 0:
        return LocalPostgres(airflow_home / "postgres", None, free_port(), password)
    link = airflow_home / "postgres"
    try:
        server_home = Path(pwd.getpwnam(SERVER_USER).pw_dir)
    except KeyError:
        raise ConfigError(
            f"PostgreSQL refuses to run as root and there is no '{SERVER_USER}' user to run it "
            "as: `make airflow` installs Debian's postgresql, which creates it"
        ) from None
    digest = hashlib.sha256(str(airflow_home.resolve()).encode()).hexdigest()[:12]
    data_dir = server_home / "microseg" / digest
    if not link.is_symlink():
        link.symlink_to(data_dir)
    return LocalPostgres(data_dir, SERVER_USER, free_port(), password)


def _give_to_server_user(pg: LocalPostgres, path: Path) -> None:
    """The server's files belong to the account it runs as."""
    if pg.run_as:
        account = pwd.getpwnam(pg.run_as)
        os.chown(path, account.pw_uid, account.pw_gid)


def _initdb(pg: LocalPostgres) -> None:
    """A new cluster whose only role is `airflow`, with scram passwords everywhere."""
    for folder in (pg.data_dir.parent, pg.data_dir):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _give_to_server_user(pg, folder)
    password_file = pg.data_dir.parent / f".{pg.data_dir.name}.password"
    write_private(password_file, pg.password)
    _give_to_server_user(pg, password_file)
    try:
        subprocess.run(
            [
                str(server_binaries() / "initdb"),
                f"--pgdata={pg.data_dir}",
                f"--username={ROLE}",
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            text=True,
            **as_account(pg.run_as),
        )
    except subprocess.CalledProcessError as failed:
        raise ConfigError(f"initdb failed: {failed.stderr.strip().splitlines()[-1]}") from None
    finally:
        password_file.unlink()


def start_server(pg: LocalPostgres, log: Path, timeout: float = 60) -> subprocess.Popen:
    """Start the server (initializing the cluster the first time) and wait until Airflow's
    database accepts the password; stop it with local.stop."""
    if not (pg.data_dir / "PG_VERSION").exists():
        _initdb(pg)
    process = start(
        [
            str(server_binaries() / "postgres"),
            "-D",
            str(pg.data_dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"port={pg.port}",
            "-c",
            "unix_socket_directories=",
        ],
        {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        log,
        user=pg.run_as,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with pg.connect("postgres") as connection:
                exists = connection.execute(
                    "select 1 from pg_database where datname = %s", [DATABASE]
                ).fetchone()
                if not exists:
                    connection.execute(f"create database {DATABASE} owner {ROLE}")
            return process
        except psycopg.OperationalError as exc:
            refused = "password authentication failed" in str(exc)
            if refused or process.poll() is not None or time.monotonic() > deadline:
                stop([process])
                raise ConfigError(
                    f"PostgreSQL refused the password in {PASSWORD_FILE} (the cluster in "
                    f"{pg.data_dir} was made with another one)"
                    if refused
                    else f"PostgreSQL did not start; see {log}"
                ) from None
            time.sleep(0.5)


def remove(pg: LocalPostgres) -> None:
    """Delete the cluster's files (the server must be stopped)."""
    shutil.rmtree(pg.data_dir, ignore_errors=True)
