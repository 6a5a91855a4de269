"""The data team's path, for real: Airflow 3 (api-server, scheduler, dag-processor) with login
and its metadata in PostgreSQL, driven in headless Chromium. Trigger a night of
behavior_nightly from the UI and check what it wrote (a screenshot of the finished run is saved
in test-artifacts/); then backfill the next date with `airflow backfill create` from a shell
beside the running scheduler and compare every table with the same night run without Airflow;
then clear a task and check that the re-run changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from microseg.config import PROJECT_ROOT, Settings
from microseg.ingest import delivery_date, ingest_paths
from microseg.pipeline import run_nightly
from microseg.serve import postgres
from microseg.serve.airflow_ui import (
    configure,
    prepare,
    start_components,
    start_database,
    wait_until_up,
)
from microseg.serve.local import free_port, stop
from microseg.transform import transform
from tests.helpers import listening_addresses, query, warehouse_differences

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
DAG_ID = "behavior_nightly"
# its tasks: ingest, validate_raw, 3 dbt layers, validate_features, score (and beside it
# request_retraining), cluster, recommend, segments, activate, experiments, export_audiences,
# expire, publish
NIGHTLY_TASKS = 16
LOADED_BEFORE = date(2026, 10, 9)  # deliveries of earlier days are loaded before Airflow starts
UI_AS_OF = date(2026, 10, 10)  # the night triggered in the UI loads the 10-09 delivery
# then a backfill runs this night (one: the UI's night before it already shows a night building
# on the one before; each night through Airflow takes about 2.5 minutes here)
BACKFILL_NIGHT = date(2026, 10, 11)
RUN_TIMEOUT_S = 900
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def registry(champion_home: Path) -> str:
    """An MLflow registry whose purchase_propensity champion was trained on eight weeks
    (the nights below only score with it; their eight days are too few for a 7-day label and
    its embargo)."""
    return Settings.from_env({"MICROSEG_HOME": str(champion_home)}).mlflow_tracking_uri


@pytest.fixture(scope="module")
def airflow(twelve_days: Path, registry: str, tmp_path_factory: pytest.TempPathFactory):
    """Days before 10-09 processed; the 10-09 and 10-10 deliveries waiting in the landing
    folder; Airflow running on a free port with a generated admin password and a PostgreSQL
    of its own, configured as `make airflow` configures it: the DAG starts paused and the
    scheduler creates its scheduled runs (for today, long after these deliveries)."""
    home = tmp_path_factory.mktemp("e2e_home")
    env = {"MICROSEG_HOME": str(home), "MICROSEG_MLFLOW_TRACKING_URI": registry}
    settings = Settings.from_env(env)
    dumps = sorted(twelve_days.glob("events_*"))
    ingest_paths(settings, [p for p in dumps if delivery_date(p) < LOADED_BEFORE])
    transform(settings)
    settings.landing_dir.mkdir(parents=True)
    for dump in dumps:
        if LOADED_BEFORE <= delivery_date(dump) < BACKFILL_NIGHT:
            shutil.copy(dump, settings.landing_dir)

    local, database, generated = configure(settings, free_port(), "admin", None, **env)
    assert generated and len(local.password) >= 12  # no default or empty password
    server = start_database(local, database)
    processes = []
    try:
        prepare(local)
        processes = start_components(local)
        wait_until_up(local)
        yield settings, local, env, [server, *processes]
    finally:
        stop(processes)
        stop([server])
        postgres.remove(database)
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


def _token(local) -> str:
    credentials = {"username": local.username, "password": local.password}
    return _api(local, "/auth/token", body=credentials)["access_token"]


def _finish(local, token: str, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict]:
    """Wait for a run to end; its task instances by task id."""
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (state := _api(local, run_path, token)["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline, f"{run_id} did not finish in time"
        time.sleep(5)
    tasks = _api(local, f"{run_path}/taskInstances?limit=100", token)["task_instances"]
    by_id = {t["task_id"]: t for t in tasks}
    assert state == "success", {t: i["state"] for t, i in by_id.items()}
    return by_id


def _only_files(route, remote: list[str]) -> None:
    """Let the page load local files only; note anything it asks of the network."""
    if route.request.url.startswith("file:"):
        route.continue_()
    else:
        remote.append(route.request.url)
        route.abort()


def _scheduled_run(local, token: str, timeout_s: float = 180) -> str:
    """The id of the scheduled run the scheduler creates once the DAG is unpaused."""
    deadline = time.monotonic() + timeout_s
    path = f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled&limit=10"
    while not (runs := _api(local, path, token)["dag_runs"]):
        assert time.monotonic() < deadline, "the unpaused DAG got no scheduled run"
        time.sleep(3)
    [run] = runs
    return run["dag_run_id"]


def _exports(settings: Settings, as_of: date) -> dict[str, str]:
    folder = settings.export_dir / as_of.isoformat()
    return {p.name: p.read_text() for p in sorted(folder.glob("*.csv"))}


def test_nightly_run_triggered_in_the_browser(airflow) -> None:
    from playwright.sync_api import sync_playwright

    settings, local, _env, processes = airflow
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
            page.goto(f"{local.url}/dags/{DAG_ID}")
            page.wait_for_url("**/auth/login**", timeout=30_000)  # anonymous: log in first
            page.get_by_label("Username").fill(local.username)
            page.get_by_label("Password").fill(local.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/dags/{DAG_ID}", timeout=30_000)

            # the README's first-run path: the paused DAG is triggered with an as_of, the
            # dialog's defaults left as they are (it unpauses the DAG on trigger)
            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            dialog.locator("input[name=element_as_of]").fill(UI_AS_OF.isoformat())
            dialog.get_by_role("button", name="Trigger", exact=True).click()
            page.wait_for_url(f"**/dags/{DAG_ID}/runs/**", timeout=30_000)
            run_id = page.url.rsplit("/runs/", 1)[1]

            token = _token(local)
            states = {t: i["state"] for t, i in _finish(local, token, run_id).items()}
            # unpausing let the scheduler start today's run, weeks after the newest delivery:
            # it has nothing to build, loads nothing and ends without a failure
            scheduled = _scheduled_run(local, token)
            skipped = {t: i["state"] for t, i in _finish(local, token, scheduled).items()}
            run = _api(local, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token)
            assert run["conf"]["as_of"] == UI_AS_OF.isoformat()
            # the champion (trained on the first dates) drifted past retrain_psi: the run
            # updated the asset models_weekly is scheduled on
            drift = _api(
                local,
                "/api/v2/assets/events?source_dag_id=behavior_nightly"
                "&source_task_id=request_retraining",
                token,
            )["asset_events"]

            page.reload()
            page.get_by_text("success").first.wait_for(timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "behavior_nightly_run.png"), full_page=True)

            # where a failure sends people: the Data Docs, read with the network off
            offline = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
            remote: list[str] = []
            offline.route("**/*", lambda route: _only_files(route, remote))
            docs = offline.new_page()
            docs.goto(settings.data_docs_index.as_uri())
            rows = docs.locator("#section-1-content-block-2-1-body-table tbody tr")
            rows.first.wait_for(timeout=30_000)
            listed = rows.count()
            suites = docs.locator("#section-1-content-block-2-1-body-table").inner_text()
            docs.screenshot(path=str(ARTIFACTS / "data_docs_offline.png"), full_page=True)
        finally:
            browser.close()

    # the UI, the scheduler, its executor's workers: nothing listens beyond the loopback
    addresses = listening_addresses([p.pid for p in processes])
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    validations = list((settings.gx_dir / "uncommitted" / "validations").rglob("*.json"))
    assert listed == len(validations) == 4  # raw events, manifest, features, feature volume
    assert all(name in suites for name in ("raw_events", "raw_load_manifest", "user_features"))
    assert remote == []  # every script, stylesheet and image came from the site itself
    assert len(states) == NIGHTLY_TASKS and set(states.values()) == {"success"}
    assert len(skipped) == NIGHTLY_TASKS and set(skipped.values()) == {"skipped"}
    assert [(e["uri"], e["source_run_id"]) for e in drift] == [("microseg://model-drift/", run_id)]
    # what the run wrote, for the as-of date it was given in the UI: it loaded the one
    # delivery due by then and held the later ones for their own nights
    assert query(
        settings, "select max(file_name) from raw.load_manifest where status = 'loaded'"
    ) == [("events_2026-10-09.jsonl.gz",)]
    members = query(
        settings,
        "select count(distinct segment_name), count(*) from marts.segment_memberships "
        "where as_of_date = ?",
        [UI_AS_OF],
    )[0]
    assert members[0] == 7 and members[1] > 100
    scores = query(
        settings, "select count(*) from marts.user_scores where as_of_date = ?", [UI_AS_OF]
    )[0][0]
    assert scores > 300
    for audience in settings.export_audiences:
        csv = settings.export_dir / UI_AS_OF.isoformat() / f"{audience}.csv"
        assert csv.exists() and len(csv.read_text().splitlines()) > 1, csv
        assert csv.with_name(csv.name + ".manifest.json").exists()
    assert settings.analytics_path.exists()


def test_backfill_writes_what_the_nightly_runs_wrote_and_clearing_changes_nothing(
    airflow, tmp_path: Path
) -> None:
    settings, local, env, _processes = airflow
    # The reference: the same warehouse, then the nightly run of that date without Airflow,
    # given the deliveries that had arrived by then. It runs while Airflow runs the backfill,
    # on a copy of the warehouse and of the registry (both write model runs).
    registry = tmp_path / "registry.db"
    shutil.copy(env["MICROSEG_MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"), registry)
    nightly = Settings.from_env(
        {
            **env,
            "MICROSEG_HOME": str(tmp_path / "nightly"),
            "MICROSEG_MLFLOW_TRACKING_URI": f"sqlite:///{registry}",
        }
    )
    shutil.copytree(
        settings.home, nightly.home, ignore=shutil.ignore_patterns("airflow", "landing", "dbt")
    )
    nightly.landing_dir.mkdir()
    landed = sorted(settings.landing_dir.iterdir())

    # The same night as an Airflow backfill, created from a shell beside the running
    # scheduler as the README says (max active runs 1, the UI form's default); the run dates
    # itself from its logical date (no as_of param).
    airflow_cli = Path(sys.executable).with_name("airflow")
    created = subprocess.run(
        [
            "bash",
            "-c",
            f"source {local.home / 'env.sh'} && {airflow_cli} backfill create --dag-id {DAG_ID}"
            f" --from-date {BACKFILL_NIGHT} --to-date {BACKFILL_NIGHT}T23:59 --max-active-runs 1",
        ],
        env={"PATH": os.environ["PATH"], "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr[-2000:]
    for dump in landed:
        shutil.copy(dump, nightly.landing_dir)
    run_nightly(nightly, BACKFILL_NIGHT, report=lambda _line: None)

    token = _token(local)
    runs = _api(local, f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill&limit=10", token)
    [run] = runs["dag_runs"]
    assert run["logical_date"][:10] == BACKFILL_NIGHT.isoformat()
    assert not (run["conf"] or {}).get("as_of")
    tasks = _finish(local, token, run["dag_run_id"])
    assert len(tasks) == NIGHTLY_TASKS

    # the night wrote something to compare
    assert query(
        settings,
        "select count(distinct segment_name) from marts.segment_memberships where as_of_date = ?",
        [BACKFILL_NIGHT],
    ) == [(7,)]
    assert query(
        settings,
        "select count(*) > 300 from marts.user_scores where as_of_date = ?",
        [BACKFILL_NIGHT],
    ) == [(True,)]
    assert _exports(settings, BACKFILL_NIGHT) == _exports(nightly, BACKFILL_NIGHT) != {}
    assert warehouse_differences(settings, nightly) == {}

    # Clear the segments of the night, with everything downstream of it (what the UI's
    # "Clear" offers): the scheduler re-runs them for the same date and the tables stay the
    # same. (Each step's own re-run is tested beside it; this is Airflow's part.)
    cleared = _api(
        local,
        f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
        token,
        body={
            "dry_run": False,
            "dag_run_id": run["dag_run_id"],
            "task_ids": ["segments"],
            "include_downstream": True,
            "only_failed": False,
        },
    )
    cleared_ids = {t["task_id"] for t in cleared["task_instances"]}
    downstream = ["activate", "experiments", "export_audiences", "expire", "publish"]
    assert cleared_ids == {"segments", *downstream}
    before = {t: i["try_number"] for t, i in tasks.items()}
    after = {
        t: i["try_number"] for t, i in _finish(local, _token(local), run["dag_run_id"]).items()
    }
    assert {t for t in after if after[t] > before[t]} == cleared_ids
    assert warehouse_differences(settings, nightly) == {}
    assert _exports(settings, BACKFILL_NIGHT) == _exports(nightly, BACKFILL_NIGHT)


def test_activation_batch_triggered_in_the_browser(airflow, twelve_days: Path) -> None:
    """Marketing's path: a micro-batch of the activation DAG, triggered from the UI with a
    cutoff; it loads the delivery landed for that day and fires the triggers of the morning."""
    from playwright.sync_api import sync_playwright

    settings, local, _env, _processes = airflow
    cutoff = f"{BACKFILL_NIGHT}T12:00:00"
    [landed] = twelve_days.glob(f"events_{BACKFILL_NIGHT}.*")
    shutil.copy(landed, settings.landing_dir)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{local.url}/dags/activation")
            page.wait_for_url("**/auth/login**", timeout=30_000)
            page.get_by_label("Username").fill(local.username)
            page.get_by_label("Password").fill(local.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/dags/activation", timeout=30_000)
            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            dialog.locator("input[name=element_cutoff]").fill(cutoff)
            dialog.get_by_role("button", name="Trigger", exact=True).click()
            page.wait_for_url("**/dags/activation/runs/**", timeout=30_000)
            run_id = page.url.rsplit("/runs/", 1)[1]
            states = {
                t: i["state"]
                for t, i in _finish(local, _token(local), run_id, "activation").items()
            }
            page.reload()
            page.get_by_text("success").first.wait_for(timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "activation_run.png"), full_page=True)
        finally:
            browser.close()
    # unpausing also lets the scheduler start a batch for now, which may load the file first
    assert states["activate"] == "success" and set(states.values()) <= {"success", "skipped"}
    assert query(
        settings, "select status from raw.load_manifest where file_name = ?", [landed.name]
    ) == [("loaded",)]
    window = query(
        settings,
        "select window_start, fired, queued from marts.activation_runs where cutoff = ?",
        [cutoff.replace("T", " ")],
    )
    assert [w[0].isoformat() for w in window] == [f"{BACKFILL_NIGHT}T00:00:00"]
    fired = query(
        settings,
        "select count(*) from marts.trigger_firings where fired_at >= ? and fired_at < ?",
        [f"{BACKFILL_NIGHT} 00:00:00", cutoff.replace("T", " ")],
    )[0][0]
    assert fired == window[0][1] > 0 and window[0][2] > 0
    assert list(
        (settings.activation_dir / "crm_files").glob(f"{BACKFILL_NIGHT}T0000_*/manifest.json")
    )
