"""The data team's path, for real: Airflow 3 (api-server, scheduler, dag-processor) with login,
driven in headless Chromium. Trigger tonight's behavior_nightly from the UI, wait for it to
succeed, then check the tables and audience files it wrote. A screenshot of the finished run is
saved in test-artifacts/."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from microseg.airflow_local import configure, free_port, prepare, start, stop, wait_until_up
from microseg.config import PROJECT_ROOT, Settings
from microseg.ingest import ingest_paths
from microseg.transform import transform
from ml.promote import promote
from ml.train import train
from tests.helpers import query

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
TONIGHT = "events_2026-10-12.jsonl.gz"  # the delivery the triggered run ingests
AS_OF = date(2026, 10, 13)
RUN_TIMEOUT_S = 900
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def airflow(twelve_days: Path, tmp_path_factory: pytest.TempPathFactory):
    """Eleven nights already processed and a champion model; tonight's file in the landing
    folder; Airflow running on a free port with a generated admin password."""
    home = tmp_path_factory.mktemp("e2e_home")
    env = {
        "MICROSEG_HOME": str(home),
        "MICROSEG_NIGHTLY_SCHEDULE": "none",
        "MICROSEG_WEEKLY_SCHEDULE": "none",
    }
    settings = Settings.from_env(env)
    history = [p for p in sorted(twelve_days.glob("events_*")) if p.name != TONIGHT]
    ingest_paths(settings, history)
    transform(settings)
    train(settings, "purchase_propensity")
    assert promote(settings, "purchase_propensity").promoted
    settings.landing_dir.mkdir(parents=True)
    shutil.copy(twelve_days / TONIGHT, settings.landing_dir)

    local, generated = configure(
        settings,
        free_port(),
        "admin",
        None,
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        **env,
    )
    assert generated and len(local.password) >= 12  # no default or empty password
    prepare(settings, local)
    processes = start(local)
    try:
        wait_until_up(local)
        yield settings, local
    finally:
        stop(processes)
        for log in local.home.glob("*.log"):  # keep the component logs for a failed run
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(log, ARTIFACTS / f"airflow-{log.name}")


def _api(local, path: str, token: str | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{local.url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_nightly_run_triggered_in_the_browser(airflow) -> None:
    from playwright.sync_api import sync_playwright

    settings, local = airflow
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it"

    # nobody gets in without logging in
    with pytest.raises(urllib.error.HTTPError) as denied:
        _api(local, "/api/v2/dags")
    assert denied.value.code in (401, 403)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{local.url}/dags/behavior_nightly")
            page.wait_for_url("**/auth/login**", timeout=30_000)  # anonymous: log in first
            page.get_by_label("Username").fill(local.username)
            page.get_by_label("Password").fill(local.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/dags/behavior_nightly", timeout=30_000)

            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            dialog.locator("input[name=element_as_of]").fill(AS_OF.isoformat())
            dialog.get_by_role("button", name="Trigger", exact=True).click()
            page.wait_for_url("**/dags/behavior_nightly/runs/**", timeout=30_000)
            run_id = page.url.rsplit("/runs/", 1)[1]

            token = _api(
                local, "/auth/token", body={"username": local.username, "password": local.password}
            )["access_token"]
            run_path = f"/api/v2/dags/behavior_nightly/dagRuns/{run_id}"
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while (state := _api(local, run_path, token)["state"]) in ("queued", "running"):
                assert time.monotonic() < deadline, "the run did not finish in time"
                time.sleep(5)
            tasks = _api(local, f"{run_path}/taskInstances?limit=100", token)["task_instances"]
            states = {t["task_id"]: t["state"] for t in tasks}
            assert state == "success", states
            assert _api(local, run_path, token)["conf"]["as_of"] == AS_OF.isoformat()

            page.reload()
            page.get_by_text("success").first.wait_for(timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "behavior_nightly_run.png"), full_page=True)
        finally:
            browser.close()

    assert len(states) == 24 and set(states.values()) == {"success"}
    # what the run wrote, for the as-of date it was given in the UI
    assert query(
        settings, "select count(*) from raw.load_manifest where file_name = ?", [TONIGHT]
    ) == [(1,)]
    members = query(
        settings,
        "select count(distinct segment_name), count(*) from marts.segment_memberships "
        "where as_of_date = ?",
        [AS_OF],
    )[0]
    assert members[0] == 7 and members[1] > 100
    scores = query(
        settings, "select count(*) from marts.user_scores where as_of_date = ?", [AS_OF]
    )[0][0]
    assert scores > 300
    for audience in settings.export_audiences:
        csv = settings.export_dir / AS_OF.isoformat() / f"{audience}.csv"
        assert csv.exists() and len(csv.read_text().splitlines()) > 1, csv
        assert csv.with_name(csv.name + ".manifest.json").exists()
    assert settings.analytics_path.exists()
