"""`make bench` stays runnable: a tiny run of the stages its comparisons need prints them."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

from microseg.generate import GeneratorConfig, generate


def test_bench_prints_the_comparisons_with_the_peers(tmp_path) -> None:
    stages = (
        "generate,ingest,parquet ingest,transform,window floor,pandas peer,scan floor,snowplow,ga4"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "microseg.bench",
            "--users",
            "40",
            "--days",
            "3",
            "--stages",
            stages,
        ],
        env={**os.environ, "MICROSEG_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    rows = {}
    for stage in stages.split(","):
        [row] = [line for line in lines if line.startswith(f"  {stage:<12} ")]
        rows[stage] = int(row.split()[len(stage.split())].replace(",", ""))
        assert rows[stage] > 0, row
    # a full build's rows: every event of the history, not only its latest day's
    assert rows["transform"] > 0.8 * rows["ingest"], rows
    assert any("= " in line and "x the pandas peer" in line for line in lines), proc.stdout
    assert any("x the scan floor" in line for line in lines), proc.stdout
    [parquet_build] = [line for line in lines if "ingest of Parquet + full build" in line]
    assert "target at ~10M events <= 90 s" in parquet_build
    assert any("int_events_sessionized" in line and "window floor" in line for line in lines)
    # the adapters' samples, one copy per user, every line read
    for stage, sample_rows in (("snowplow", 210), ("ga4", 217)):
        [row] = [line for line in lines if line.startswith(f"  {stage:<12} ")]
        assert row.split()[1] == f"{40 * sample_rows:,}", row
    assert not any(tmp_path.joinpath("bench").iterdir())  # its scratch folder is removed


def test_bench_measures_dumps_of_an_earlier_run(tmp_path) -> None:
    """`--landing`: the stages read a folder generated before (at 100M the generator alone
    takes half an hour), which is left as it was; the generate stage is refused beside it."""
    landing = tmp_path / "landing"
    generate(GeneratorConfig(users=20, days=4, seed=1), landing)
    before = sorted(path.name for path in landing.rglob("*"))

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "microseg.bench", "--users", "20", "--days", "2", *args],
            env={**os.environ, "MICROSEG_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            check=False,
        )

    proc = bench(
        "--landing", str(landing), "--stages", "ingest,parquet ingest,scan floor,load floor"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {
        stage: int(line.removeprefix(f"  {stage:<12} ").split()[0].replace(",", ""))
        for line in proc.stdout.splitlines()
        for stage in ("ingest", "parquet ingest")
        if line.startswith(f"  {stage:<12} ")
    }
    dumps = sorted(landing.glob("events_*"))[:2]
    two_days = sum(gzip.decompress(dump.read_bytes()).count(b"\n") for dump in dumps)
    assert rows == {"ingest": two_days, "parquet ingest": two_days}  # Parquet: a row per line
    # each ingest rate beside DuckDB's own copy of the same files, nothing checked
    for kind in ("gzipped JSON Lines", "Parquet"):
        [rate] = [line for line in proc.stdout.splitlines() if f"ingest of {kind}: " in line]
        assert "DuckDB copying the files into a table, nothing checked: " in rate, rate
    assert sorted(path.name for path in landing.rglob("*")) == before
    refused = bench("--landing", str(landing), "--stages", "generate,ingest")
    assert refused.returncode == 2
    assert "--landing replaces the generate stage" in refused.stderr.splitlines()[-1]
    without_dumps = bench("--stages", "ingest,scan floor")  # neither generated nor given
    assert without_dumps.returncode == 2
    assert without_dumps.stderr.splitlines()[-1].endswith(
        "stages ingest, scan floor read the day files: add generate to --stages, "
        "or pass --landing DIR"
    )
    # a night needs the history built before it in the same run, not an empty warehouse
    for stages in ("ingest,night,day alone", "transform,ingest,night"):
        alone = bench("--landing", str(landing), "--stages", stages)
        assert alone.returncode == 2, stages
        assert alone.stderr.splitlines()[-1].endswith(
            "stage night needs ingest then transform earlier in --stages"
        )
