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
from pathlib import Path

from microseg.config import Settings, disable_telemetry, restrict_new_files
from microseg.serve.local import (
    LOOPBACK,
    LocalServer,
    serve_until_interrupted,
    start,
    stored_secret,
)


def server_command(server: LocalServer, settings: Settings) -> list[str]:
    """`mlflow server` with the basic-auth app, on the loopback only."""
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
        str(server.port),
        "--workers",
        "1",
    ]


def configure(settings: Settings, port: int) -> tuple[LocalServer, bool]:
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
    return LocalServer(home, port, username, password, env), generated


def main() -> int:
    disable_telemetry()
    settings = Settings.from_env()
    restrict_new_files(settings)
    server, generated = configure(settings, settings.mlflow_port)
    log = server.home / "server.log"
    process = start(server_command(server, settings), server.env, log)
    return serve_until_interrupted(
        "MLflow", server, [process], generated=generated, health_url=server.url, logs=str(log)
    )


if __name__ == "__main__":
    sys.exit(main())
