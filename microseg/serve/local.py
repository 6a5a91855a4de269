"""What every local UI server shares: a free loopback port, a password generated once and
kept 0600, its processes started in their own session and stopped with their children."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LocalServer:
    """Where a local UI server keeps its files, how to reach it and log in, its environment."""

    home: Path
    port: int
    username: str
    password: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def stored_secret(path: Path, key: str, given: str | None) -> tuple[str, bool]:
    """The secret for `key`: `given` if set, else the one kept in the JSON file at `path`,
    else a new random one; returns (secret, whether it was generated now). The file is
    written 0600: it holds what a browser needs to log in."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    secret, generated = given or stored.get(key), False
    if secret is None:
        secret, generated = secrets.token_urlsafe(12), True
    write_private(path, json.dumps({**stored, key: secret}))
    return secret, generated


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds a password), whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def as_account(user: str | None) -> dict:
    """subprocess arguments that run a child as `user`, with that account's group and no
    others (root's supplementary groups stay behind); none for the current user."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "cwd": "/"}


def start(
    command: list[str], env: dict[str, str], log: Path, user: str | None = None
) -> subprocess.Popen:
    """Start a server process in its own session (stop() signals it and its workers), as
    `user` if given (root starting a server that refuses root)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_account(user),
        )


def wait_for_http(url: str, timeout: float = 180) -> None:
    """Until `url` answers at all (a 401 is an answer: the login is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"nothing answered on {url} within {timeout:.0f} s")


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


def serve_until_interrupted(
    name: str,
    server: LocalServer,
    processes: list[subprocess.Popen],
    *,
    generated: bool,
    health_url: str,
    logs: str,
) -> int:
    """Once the server answers, say where to log in (a generated password once), then wait:
    0 after Ctrl-C, 1 when one of its processes exits; the processes are stopped either way."""
    try:
        wait_for_http(health_url)
        print(f"{name} UI: {server.url}  (user {server.username})")
        if generated:
            print(f"generated password, shown once: {server.password}")
        print(f"logs: {logs}; Ctrl-C stops it")
        while all(p.poll() is None for p in processes):
            time.sleep(2)
        print(f"a {name} process exited; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)
