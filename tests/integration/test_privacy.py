"""Erasure, proven the way an auditor would: every byte under MICROSEG_HOME, every table."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from microseg.config import Settings
from microseg.export import export_audience
from microseg.ingest import ingest_paths
from microseg.privacy.erase import Request, erase, person_id_of
from microseg.publish import publish
from microseg.segments import run_segments
from microseg.transform import transform
from microseg.warehouse import FILE_ACCOUNTING_SQL
from ml import registry
from tests.helpers import newest_storage_version, query, run_cli, storage_version

NIGHT = date(2026, 10, 4)


def _files_holding(home: Path, needles: set[str]) -> set[str]:
    """Files under `home` whose bytes (gzip: decompressed) contain any needle."""
    found = set()
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if any(n.encode() in data for n in needles):
            found.add(str(path.relative_to(home)))
    return found


@pytest.fixture
def home(built: Settings, small_dataset: Path, tmp_path: Path) -> Settings:
    """The built warehouse with its dumps in landing, a night of segments, an audience CSV
    and the analysts' snapshot: every kind of copy erasure must reach."""
    root = tmp_path / "home"
    shutil.copytree(small_dataset, root / "landing", ignore=shutil.ignore_patterns("ground_*"))
    shutil.copy(built.warehouse_path, root / "warehouse.duckdb")
    settings = Settings.from_env({"MICROSEG_HOME": str(root)})
    ingest_paths(settings, [settings.landing_dir])  # the manifest now names these copies
    run_segments(settings, NIGHT)
    return settings


def test_erased_people_leave_every_byte_and_never_load_again(home: Settings, tmp_path) -> None:
    person, user_id, devices = query(
        home,
        """select p.person_id, p.user_id, p.anonymous_ids from marts.dim_persons p
           join marts.segment_memberships m using (person_id)
           where m.segment_name = 'cart_abandoners' and m.as_of_date = ? and p.devices >= 2
             and marts.has_consent(p.person_id, 'marketing', m.as_of_date)
           order by p.person_id limit 1""",
        [NIGHT],
    )[0]
    assert person == person_id_of(f"user:{user_id}")  # the same id dbt gives them
    export = home.export_dir / "cart_abandoners.csv"
    export_audience(home, "cart_abandoners", export, as_of=NIGHT)
    publish(home)
    needles = {person, user_id, *devices}
    before = _files_holding(home.home, needles)
    assert {"exports/cart_abandoners.csv"} < before and any("landing/" in f for f in before)
    their_events = tmp_path / "redelivered.jsonl"
    originals = tmp_path / "originals"  # the source re-sends a dump exactly as it was
    shutil.copytree(home.landing_dir, originals)
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        con.execute(
            f"""copy (select * exclude (source_file, source_line) from raw.events
                      where user_id = ? or anonymous_id in (select unnest(?::varchar[])))
                to '{their_events}' (format json)""",
            [user_id, devices],
        )

    result = run_cli("erase", "--user-id", user_id, "--reason", "ticket 7", home=home.home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"erased 1 person(s), {1 + len(devices)} id(s): ")

    assert _files_holding(home.home, needles) == set()  # warehouse, snapshot, CSV, dumps
    # rewritten in the newest storage format (an older warehouse is converted)
    assert storage_version(home.warehouse_path) == newest_storage_version(tmp_path)
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        columns = con.execute(
            """select table_schema || '.' || table_name, column_name from information_schema.columns
               where column_name in ('person_id', 'user_id', 'anonymous_id', 'identifier')
                 and table_schema <> 'privacy'"""
        ).fetchall()
        for table, column in columns:
            assert con.execute(
                f"select count(*) from {table} where {column} in (select unnest(?::varchar[]))",
                [sorted(needles)],
            ).fetchone() == (0,), f"{table}.{column}"
        # the load manifest still adds up: their rows are counted as erased
        assert con.execute(
            f"select count(*) from ({FILE_ACCOUNTING_SQL}) where rows_unaccounted <> 0 "
            "or events_not_in_manifest <> 0 or quarantine_rows_not_in_manifest <> 0"
        ).fetchone() == (0,)
        log = con.execute(
            "select reason, identifiers, people, rows_deleted from privacy.erasure_log"
        ).fetchall()
    assert [(r, i, p) for r, i, p, _ in log] == [("ticket 7", 1 + len(devices), 1)]
    assert json.loads(log[0][3])["raw.events"] > 0
    manifest = json.loads(export.with_name(export.name + ".manifest.json").read_text())
    rows = export.read_text().count("\n") - 1
    assert manifest["rows"] == rows
    assert manifest["sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()

    # their old events delivered again load nothing; the night's files stay as loaded
    loaded = ingest_paths(home, [their_events])[0]
    assert loaded.rows_read > 0 and loaded.rows_loaded == 0 == loaded.rows_quarantined
    assert loaded.rows_erased == loaded.rows_read
    assert {r.status for r in ingest_paths(home, [home.landing_dir])} == {"skipped"}
    assert {r.status for r in ingest_paths(home, [originals])} == {"skipped"}  # as delivered
    # again: nothing more to do, and it says so
    again = run_cli("erase", "--user-id", user_id, home=home.home)
    assert again.returncode == 0 and " 0 rows from 0 tables" in again.stdout


def test_unknown_people_and_bad_requests_are_one_line_errors(built: Settings, tmp_path) -> None:
    (tmp_path / "home").mkdir()
    shutil.copy(built.warehouse_path, tmp_path / "home" / "warehouse.duckdb")
    result = run_cli("erase", "--person", "per_nobody", home=tmp_path / "home")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: no person per_nobody in the warehouse (see marts.dim_persons)"
    ]
    assert run_cli("erase", home=tmp_path / "home").returncode == 2


def test_erasure_waits_for_the_step_holding_the_warehouse(built: Settings, tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(built.warehouse_path, home / "warehouse.duckdb")
    hold = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
        "print('held', flush=True); time.sleep(8)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(home / "warehouse.duckdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = run_cli("erase", "--anonymous-id", "anon_x", "--wait-minutes", "0", home=home)
        assert busy.returncode == 1 and "in use by another process" in busy.stderr
        waited = run_cli("erase", "--anonymous-id", "anon_x", "--wait-minutes", "1", home=home)
        assert waited.returncode == 0, waited.stderr
        assert holder.poll() is not None  # it ran once the holder had finished
    finally:
        holder.kill()
        holder.wait()


EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
FULL_IP = re.compile(rb"\b198\.51\.\d{1,3}\.(?!0\b)\d{1,3}\b")  # the generator's client IPs


def test_with_pseudonymization_no_clear_email_or_ip_is_stored(dataset_factory, tmp_path) -> None:
    dumps = dataset_factory()
    sent = b"".join(gzip.decompress(p.read_bytes()) for p in dumps.glob("*.jsonl.gz"))
    assert EMAIL.search(sent) and FULL_IP.search(sent) and b"?email=" in sent  # they come in
    home = tmp_path / "home"
    private = {"MICROSEG_PSEUDONYMIZE": "properties.email,user_id"}
    refused = run_cli("ingest", str(dumps), home=home, env=private)
    assert refused.returncode == 2 and refused.stderr.startswith(
        "error: MICROSEG_PSEUDONYMIZE is set but MICROSEG_PRIVACY_KEY is not"
    )
    private["MICROSEG_PRIVACY_KEY"] = "test key, kept outside MICROSEG_HOME"
    result = run_cli("ingest", str(dumps), home=home, env=private)
    assert result.returncode == 0, result.stderr
    settings = Settings.from_env({"MICROSEG_HOME": str(home), **private})
    stored = query(
        settings,
        """select count(*), count(distinct user_id),
                  count(*) filter (where user_id like 'user_%' or page_url like '%@%'
                                   or properties::varchar like '%@%'),
                  count(*) filter (where (properties ->> '$.ip') not like '%.0')
           from raw.events where user_id is not null or (properties ->> '$.ip') is not null""",
    )[0]
    people = len({line for line in sent.split(b'"user_id":"')[1:] if line[:5] == b"user_"})
    assert stored[0] > 0 and stored[2:] == (0, 0) and people > 0
    assert [p for p in home.rglob("*") if p.is_file() and (
        EMAIL.search(p.read_bytes()) or FULL_IP.search(p.read_bytes())
    )] == []  # fmt: skip
    # the clear id still erases its pseudonym (their raw rows: nothing is stitched yet)
    user = sorted({m.group(1).decode() for m in re.finditer(rb'"user_id":"(user_\d+)"', sent)})[0]
    before = query(settings, "select count(*) from raw.events")[0][0]
    erased = run_cli("erase", "--user-id", user, home=home, env=private)
    assert erased.returncode == 0, erased.stderr
    assert before - query(settings, "select count(*) from raw.events")[0][0] > 0


def test_models_whose_training_data_held_them_are_flagged(tmp_path) -> None:
    """A real MLflow registry: versions trained on data overlapping the erased people's
    activity (90 days of features back, the label horizon forward) get the retrain tag."""
    import mlflow

    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    mlflow_client = registry.client(settings)
    experiment = registry.experiment_id(settings, mlflow_client, "m")
    mlflow_client.create_registered_model("m")
    for first, last in (("2026-06-01", "2026-06-10"), ("2026-09-20", "2026-10-01")):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_params({"as_of_first": first, "as_of_last": last, "horizon_days": 7})
        mlflow_client.create_model_version("m", run.info.artifact_uri, run_id=run.info.run_id)
    active = (date(2026, 10, 5), date(2026, 10, 6))  # within v2's label horizon only
    assert registry.flag_for_retraining(settings, active, "req1") == ["m v2"]
    tags = {str(v.version): v.tags for v in mlflow_client.search_model_versions("name = 'm'")}
    assert tags["2"][registry.RETRAIN_TAG] == "req1" and registry.RETRAIN_TAG not in tags["1"]


def test_identity_links_read_a_run_whose_batch_number_staging_gave_again(
    built: Settings, tmp_path
) -> None:
    """Staging numbers a run one past the highest arrival_batch left in it, so once every
    event of the latest run is erased, the next run gets its number again. The identity
    links read only what was staged since their last build: they must still read that run
    (they follow staged_at, not the number), or its new devices belong to no one."""
    root = tmp_path / "home"
    root.mkdir()
    shutil.copy(built.warehouse_path, root / "warehouse.duckdb")
    settings = Settings.from_env({"MICROSEG_HOME": str(root)})

    def night(device: str) -> list[tuple]:
        dump = tmp_path / f"{device}.jsonl"
        dump.write_text(
            "".join(
                json.dumps(
                    {
                        "event_id": f"{device}-{hour}",
                        "event_type": "page_view",
                        "event_at": f"2026-10-05T{hour}:00:00Z",
                        "anonymous_id": device,
                        "page_type": "product",
                        "page_url": "https://shop.example.com/product/9",
                    }
                )
                + "\n"
                for hour in (20, 21)
            )
        )
        ingest_paths(settings, [dump])
        transform(settings)
        return query(
            settings,
            "select distinct arrival_batch from staging.stg_events where anonymous_id = ?",
            [device],
        )

    [(erased_batch,)] = night("anon-solo")
    erase(settings, [Request("anonymous", "anon-solo")], reason="test")
    assert night("anon-next") == [(erased_batch,)]  # the number given again
    assert query(
        settings,
        "select count(*) from intermediate.int_identity_links where anonymous_id = 'anon-next'",
    ) == [(1,)]
    assert query(
        settings,
        "select count(*) from intermediate.int_identities_stitched where identifier = 'anon-next'",
    ) == [(1,)]
