"""`make mlflow-ui`: the MLflow UI (runs, plots, registry, per-person explanation files) behind
MLflow's basic-auth app, on 127.0.0.1 only.

The admin password comes from MICROSEG_MLFLOW_PASSWORD or is generated on the first start,
printed once and kept 0600 under $MICROSEG_HOME/mlflow-auth (users and permissions live in
basic_auth.db there). MLflow sets the admin password only when it creates the admin user, so
a later change goes through its update-password API, not the setting.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from microseg.config import Settings, disable_telemetry, restrict_new_files
from microseg.serve.local import LOOPBACK, start, stop, stored_secret, wait_for_http


@dataclass(frozen=True)
class LocalMlflow:
    """Where a local MLflow server lives and how to log in to it."""

    home: Path
    port: int
    username: str
    password: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self, settings: Settings) -> list[str]:
        return [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]


def configure(settings: Settings, port: int) -> tuple[LocalMlflow, bool]:
    """The auth configuration and environment; returns (server, password_was_generated)."""
    home = settings.home / "mlflow-auth"
    home.mkdir(parents=True, exist_ok=True)
    username = settings.mlflow_user
    password, generated = stored_secret(home / "passwords.json", username, settings.mlflow_password)
    secret_key, _ = stored_secret(home / "flask_secret_key.json", "key", None)
    config = home / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{home / 'basic_auth.db'}\n"
        f"admin_username = {username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
    }
    return LocalMlflow(home, port, username, password, env), generated


def main() -> int:
    disable_telemetry()
    settings = Settings.from_env()
    restrict_new_files(settings)
    server, generated = configure(settings, settings.mlflow_port)
    process = start(server.command(settings), server.env, server.home / "server.log")
    try:
        wait_for_http(server.url)
        print(f"MLflow UI: {server.url}  (user {server.username})")
        if generated:
            print(f"generated password, shown once: {server.password}")
        print(f"log: {server.home / 'server.log'}; Ctrl-C stops the server")
        while process.poll() is None:
            time.sleep(2)
        print("the MLflow server exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop([process])


if __name__ == "__main__":
    sys.exit(main())
