"""Analysts read analytics.duckdb while the pipeline writes: never an error, never half a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta

import duckdb
import pytest

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.ingest import ingest_paths
from microseg.pipeline import run_nightly
from microseg.publish import publish
from tests.helpers import (
    MARTS,
    PUBLISHED_VIEWS,
    newest_storage_version,
    query,
    run_cli,
    storage_version,
)

pytestmark = pytest.mark.slow

# A separate process, like an analyst's DuckDB session: reads until told to stop.
READER = """
import json, sys, time
from pathlib import Path
import duckdb
path, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
reads, errors = [], []
while not stop.exists():
    if not path.exists():
        time.sleep(0.01)
        continue
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            reads.append(con.execute(
                "select (select count(*) from marts.fct_sessions),"
                "       (select sum(sessions) from marts.dim_persons),"
                "       (select count(*) from raw.load_manifest)").fetchone())
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    time.sleep(0.02)  # an analyst re-querying, not a core spinning beside the nightly runs
out.write_text(json.dumps({"reads": reads, "errors": errors}))
"""


def test_reader_always_sees_a_complete_snapshot(small_dataset, tmp_path) -> None:
    """Two nightly runs (`microseg run`: ingest .. publish) under a reader in a loop."""
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    settings.landing_dir.mkdir(parents=True)
    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(settings.analytics_path), str(stop), str(out)]
    )
    published, lines = [], []
    try:
        for dump in sorted(small_dataset.glob("events_*"))[:2]:
            shutil.copy(dump, settings.landing_dir)  # tonight's delivery arrives
            day = date.fromisoformat(dump.name.split("_")[1].split(".")[0])
            run_nightly(settings, day + timedelta(days=1), report=lines.append)
            published.append(
                tuple(
                    query(
                        settings,
                        "select (select count(*) from marts.fct_sessions), "
                        "(select count(*) from raw.load_manifest)",
                    )[0]
                )
            )
            time.sleep(0.5)  # let the reader see this snapshot too
    finally:
        stop.touch()
        reader.wait(timeout=60)
    result = json.loads(out.read_text())
    assert result["errors"] == []
    reads = result["reads"]
    assert len(reads) > 50
    # each read is one whole snapshot: the marts agree with each other...
    assert all(sessions == summed for sessions, summed, _ in reads)
    # ...and it is exactly one of the published runs, in the order they were published
    seen = [(sessions, files) for sessions, _, files in reads]
    assert set(seen) <= set(published)
    assert [published.index(s) for s in seen] == sorted(published.index(s) for s in seen)
    assert seen[-1] == published[-1]
    assert len(set(seen)) == 2
    # each night ran every step; the audiences of the last night were exported
    assert sum(line.startswith("publish:") for line in lines) == 2
    assert sum(line.startswith("expire: raw events kept") for line in lines) == 2
    assert any(line.startswith("score: no champion model yet") for line in lines)
    last = settings.export_dir / "2026-10-03"
    assert {p.name for p in last.glob("*.csv")} == {f"{a}.csv" for a in settings.export_audiences}


def test_publish_needs_marts(tmp_path, small_dataset) -> None:
    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    with pytest.raises(MicrosegError, match="no warehouse"):
        publish(settings)
    ingest_paths(settings, [small_dataset])
    with pytest.raises(MicrosegError, match="no marts to publish"):
        publish(settings)
    assert not settings.analytics_path.exists()
    assert list(settings.home.glob(".analytics*")) == []  # nothing left half-written


def test_publish_cli_reports_the_snapshot(tmp_path, dataset_factory) -> None:
    home = tmp_path / "home"
    assert run_cli("ingest", str(dataset_factory()), home=home).returncode == 0
    assert run_cli("transform", home=home).returncode == 0
    proc = run_cli("publish", home=home)
    assert proc.returncode == 0, proc.stderr
    # the dbt marts and views (not the labels), and the log of merged people's records the
    # identities build keeps
    assert proc.stdout.startswith(f"published {len(MARTS) + len(PUBLISHED_VIEWS) + 1} marts (")
    assert str(home / "analytics.duckdb") in proc.stdout
    consenting = (
        "select count(*) filter (where marts.has_consent(person_id, 'marketing', now())), "
        "count(*) from marts.dim_persons"
    )
    with duckdb.connect(str(home / "analytics.duckdb"), read_only=True) as snapshot:
        in_snapshot = snapshot.execute(consenting).fetchone()  # the macro came along
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as warehouse:
        assert in_snapshot == warehouse.execute(consenting).fetchone()
    assert 0 < in_snapshot[0] < in_snapshot[1]
    assert (
        query(
            Settings.from_env({"MICROSEG_HOME": str(home)}),
            "select count(*) from raw.events_quarantine",
        )[0][0]
        > 0
    )
    with duckdb.connect(str(home / "analytics.duckdb"), read_only=True) as snapshot:
        published = [r[0] for r in snapshot.execute("describe raw.events_quarantine").fetchall()]
    assert published == ["source_file", "source_line", "reason"]  # never the raw text
    # the warehouse in DuckDB's newest format (faster writes); the snapshot in its default,
    # which older DuckDB clients read
    newest = newest_storage_version(tmp_path)
    assert storage_version(home / "warehouse.duckdb") == newest
    assert storage_version(home / "analytics.duckdb") != newest


# An analyst's client, as its owner would run it (a separate process, an unprivileged user).
OPEN_SNAPSHOT = """
import sys, duckdb
try:
    con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
    print(con.execute("select count(*) from marts.dim_persons").fetchone()[0])
except duckdb.Error as exc:
    print(type(exc).__name__, str(exc).splitlines()[0])
"""


def test_a_read_write_open_of_the_snapshot_locks_nobody_out(tmp_path, dataset_factory) -> None:
    """DBeaver and the DuckDB CLI open files read-write by default, which took DuckDB's
    exclusive lock on analytics.duckdb and locked every other analyst out until the next
    publish. The snapshot is published read-only: such an open fails at once ("Permission
    denied", naming the file), and readers go on."""
    home = tmp_path / "home"
    assert run_cli("ingest", str(dataset_factory()), home=home).returncode == 0
    assert run_cli("transform", home=home).returncode == 0
    assert run_cli("publish", home=home).returncode == 0
    snapshot = home / "analytics.duckdb"
    assert snapshot.stat().st_mode & 0o777 == 0o400
    # root may write any file: as root, the analyst's process runs without that capability
    unprivileged = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"] if os.getuid() == 0 else []

    def open_snapshot(mode: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*unprivileged, sys.executable, "-c", OPEN_SNAPSHOT, str(snapshot), mode],
            stdout=subprocess.PIPE,
            text=True,
        )

    reader = open_snapshot("ro")
    mistaken = open_snapshot("rw")
    assert "Permission denied" in mistaken.communicate(timeout=60)[0]
    assert reader.communicate(timeout=60)[0].strip().isdigit()
    assert open_snapshot("ro").communicate(timeout=60)[0].strip().isdigit()
