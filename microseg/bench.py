"""`make bench`: throughput and peak memory at scale, printed as figures (not a test).

Each stage runs in its own child process so that its peak resident memory (ru_maxrss of that
child) is the stage's own and not the sum of everything before it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microseg.config import Settings, disable_telemetry

STAGE_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
stage, out, home, users, days = sys.argv[1:6]
started = time.perf_counter()
if stage == "generate":
    from microseg.generate import GeneratorConfig, generate
    summary = generate(GeneratorConfig(users=int(users), days=int(days), seed=1), Path(out))
    rows = summary.events
elif stage == "ingest":
    from microseg.config import Settings
    from microseg.ingest import ingest_paths
    results = ingest_paths(Settings.from_env({"MICROSEG_HOME": home}), [Path(out)])
    rows = sum(r.rows_read for r in results)
else:
    from microseg.config import Settings
    from microseg.quality import validate_raw
    report = validate_raw(Settings.from_env({"MICROSEG_HOME": home}))
    rows = report.checked["raw_events"][0]
seconds = time.perf_counter() - started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_mib}))
"""


def run_stage(stage: str, out: Path, home: Path, users: int, days: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT, stage, str(out), str(home), str(users), str(days)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench stage {stage} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg.bench")
    parser.add_argument("--users", type=int, default=1200, help="about 1M events at 30 days")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    disable_telemetry()
    settings = Settings.from_env()
    base = settings.home / "bench"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        out, home = Path(scratch) / "landing", Path(scratch) / "home"
        print(
            f"microseg bench: {args.users:,} users x {args.days} days "
            f"(peak = max resident set size of the stage's process)"
        )
        for stage in ("generate", "ingest", "validate"):
            result = run_stage(stage, out, home, args.users, args.days)
            rate = result["rows"] / result["seconds"]
            print(
                f"  {stage:<9} {result['rows']:>11,} rows  {result['seconds']:7.1f} s  "
                f"{rate:>10,.0f} rows/s  ({rate * 60 / 1e6:5.2f} M/min)  "
                f"peak {result['peak_mib']:,.0f} MiB"
            )
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  (bench driver itself: peak {self_peak:,.0f} MiB; finished {time.strftime('%X')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
