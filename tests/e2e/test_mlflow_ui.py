"""`make mlflow-ui`: the MLflow server behind its basic-auth app, for real. Nobody reads runs,
models or per-person explanation files without logging in, and it listens on 127.0.0.1 only."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from microseg.config import Settings
from microseg.serve.local import free_port, start, stop, wait_for_http
from microseg.serve.mlflow_ui import configure, server_command
from tests.helpers import listening_addresses

pytestmark = pytest.mark.slow


def _call(url: str, credentials: tuple[str, str] | None = None, body: dict | None = None):
    headers = {"Content-Type": "application/json"}
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read() or b"{}")


def test_mlflow_ui_requires_a_login_and_listens_on_loopback_only(tmp_path) -> None:
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    server, generated = configure(settings, free_port())
    assert generated and len(server.password) >= 12
    assert (server.home / "passwords.json").stat().st_mode & 0o777 == 0o600
    process = start(server_command(server, settings), server.env, tmp_path / "mlflow.log")
    try:
        wait_for_http(server.url)
        search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=10"
        create = f"{server.url}/api/2.0/mlflow/experiments/create"
        for url, body in ((search, None), (create, {"name": "intruder"}), (server.url, None)):
            with pytest.raises(urllib.error.HTTPError) as denied:
                _call(url, body=body)
            assert denied.value.code == 401, url
        with pytest.raises(urllib.error.HTTPError) as wrong:
            _call(search, (server.username, "not-the-password"))
        assert wrong.value.code == 401

        admin = (server.username, server.password)
        assert _call(create, admin, {"name": "made_by_admin"})[0] == 200
        status, found = _call(search, admin)
        assert status == 200
        assert "made_by_admin" in {e["name"] for e in found["experiments"]}
        addresses = listening_addresses([process.pid])
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    finally:
        stop([process])
    # a second start keeps the password and says nothing new
    again, generated = configure(settings, free_port())
    assert not generated and again.password == server.password
