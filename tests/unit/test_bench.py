"""`make bench` stays runnable: a tiny run of the stages its comparisons need prints them."""

from __future__ import annotations

import os
import subprocess
import sys


def test_bench_prints_the_comparisons_with_the_peers(tmp_path) -> None:
    stages = "generate,ingest,transform,window floor,pandas peer,scan floor,snowplow,ga4"
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
    for stage in stages.split(","):
        [row] = [line for line in lines if line.startswith(f"  {stage:<12} ")]
        assert int(row.split()[len(stage.split())].replace(",", "")) > 0, row  # rows > 0
    assert any("= " in line and "x the pandas peer" in line for line in lines), proc.stdout
    assert any("x the scan floor" in line for line in lines), proc.stdout
    assert any("int_events_sessionized" in line and "window floor" in line for line in lines)
    # the adapters' samples, one copy per user, every line read
    for stage, sample_rows in (("snowplow", 210), ("ga4", 217)):
        [row] = [line for line in lines if line.startswith(f"  {stage:<12} ")]
        assert row.split()[1] == f"{40 * sample_rows:,}", row
    assert not any(tmp_path.joinpath("bench").iterdir())  # its scratch folder is removed
