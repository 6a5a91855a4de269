"""`make bench`: throughput and peak memory at scale, printed as figures (not a test).

Each stage runs in its own child process so that its peak resident memory is its own; for
`transform` the peak is dbt's (a grandchild), read from RUSAGE_CHILDREN.

Stages, on `--days` + 1 generated days:
  generate     all days
  ingest       the first `--days` files
  validate     raw GX checkpoints
  transform    full dbt build over `--days` days
  night        ingest the last day, incremental dbt build (one nightly run on top of history)
  train        purchase_propensity: training set, search, baseline, MLflow (then promote)
  score        every person with the champion (rows: people scored)
  cluster      behavioral clusters on the latest as-of date (rows: people clustered)
  segments     the default segments for the latest as-of date (rows: people evaluated)
  activate     the default triggers for that night: firings, caps, outbox, file delivery
               (rows: firings; printed beside it as a share of the night's dbt build)
  micro-batch  10,000 new events of the following day landed, then what the activation DAG
               does: ingest, incremental dbt build, triggers of the day, delivery (rows: events)
  day alone    a fresh warehouse with only the last day, full dbt build (what a night should
               cost about as much as)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from microseg.config import Settings, disable_telemetry

STAGE_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
stage, landing, home, users, days = sys.argv[1:6]
users, days = int(users), int(days)
files = sorted(Path(landing).glob("events_*"))
started = time.perf_counter()
if stage == "generate":
    from microseg.generate import GeneratorConfig, generate
    rows = generate(GeneratorConfig(users=users, days=days + 2, seed=1), Path(landing)).events
else:
    from microseg.config import Settings
    settings = Settings.from_env({"MICROSEG_HOME": home})
    if stage in ("ingest", "night", "day alone"):
        from microseg.ingest import ingest_paths
        chosen = files[:days] if stage == "ingest" else files[days:days + 1]
        rows = sum(r.rows_read for r in ingest_paths(settings, chosen))
    if stage == "validate":
        from microseg.quality import validate_raw
        rows = validate_raw(settings).checked["raw_events"][0]
    if stage in ("transform", "night", "day alone"):
        from microseg.transform import transform
        from microseg.warehouse import connect
        started = time.perf_counter()  # a night is timed from its dbt build, not its ingest
        transform(settings, full_refresh=stage != "night")
        # rows: events the build wrote (a night writes one batch, a full build batch 1)
        with connect(settings, read_only=True) as con:
            rows = con.execute("select count(*) from intermediate.int_events_stitched where "
                               "batch = (select max(batch) from "
                               "intermediate.int_events_stitched)").fetchone()[0]
    if stage in ("train", "score", "cluster", "segments", "activate"):
        from microseg.warehouse import latest_as_of
        as_of = latest_as_of(settings)
    if stage == "train":
        from ml.promote import promote
        from ml.train import train
        result = train(settings, "purchase_propensity")
        rows = sum(result.rows.values())
        promote(settings, "purchase_propensity")  # score needs a champion (not timed apart)
    if stage == "score":
        from ml.score import score
        rows = sum(score(settings, as_of).values())
    if stage == "cluster":
        from ml.cluster import cluster
        rows = sum(cluster(settings, as_of).members.values())
    if stage == "segments":
        from microseg.segments import run_segments
        from microseg.warehouse import connect
        run_segments(settings, as_of)
        with connect(settings, read_only=True) as con:  # rows: people evaluated
            rows = con.execute("select count(*) from marts.fct_user_features_daily "
                               "where as_of_date = ?", [as_of]).fetchone()[0]
    if stage == "activate":
        from microseg.activation import activate
        rows = sum(activate(settings, as_of).fired.values())
    if stage == "micro-batch":
        import gzip
        from datetime import datetime, timedelta
        from microseg.ingest import delivery_date
        from microseg.pipeline import run_batch
        day = delivery_date(files[days + 1])
        batch_landing = Path(home) / "batch_landing"
        batch_landing.mkdir(exist_ok=True)
        with gzip.open(files[days + 1], "rt") as source:
            lines = [line for line, _ in zip(source, range(10_000))]
        (batch_landing / f"events_{day}.jsonl").write_text("".join(lines))
        settings = Settings.from_env(
            {"MICROSEG_HOME": home, "MICROSEG_LANDING_DIR": str(batch_landing)}
        )
        started = time.perf_counter()
        run_batch(settings, datetime.combine(day, datetime.min.time()) + timedelta(days=1),
                  report=lambda line: print(line, file=sys.stderr))
        rows = len(lines)
seconds = time.perf_counter() - started
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak}))
"""

STAGES = (
    "generate",
    "ingest",
    "validate",
    "transform",
    "night",
    "train",
    "score",
    "cluster",
    "segments",
    "activate",
    "micro-batch",
    "day alone",
)


def run_stage(stage: str, landing: Path, home: Path, users: int, days: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT, stage, str(landing), str(home), str(users), str(days)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg.bench")
    parser.add_argument("--users", type=int, default=1200, help="about 1M events at 30 days")
    parser.add_argument("--days", type=int, default=30, help="days of history before the night")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    args = parser.parse_args(argv)
    disable_telemetry()
    wanted = [s.strip() for s in args.stages.split(",")]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    base = Settings.from_env().home / "bench"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        landing, home = Path(scratch) / "landing", Path(scratch) / "home"
        print(
            f"microseg bench: {args.users:,} users, {args.days} days of history + 1 night "
            "(rows: events; peak: max resident set of the stage's processes)"
        )
        seconds: dict[str, float] = {}
        for stage in wanted:
            stage_home = Path(scratch) / "alone" if stage == "day alone" else home
            result = run_stage(stage, landing, stage_home, args.users, args.days)
            seconds[stage] = result["seconds"]
            rate = result["rows"] / result["seconds"] if result["seconds"] else 0.0
            print(
                f"  {stage:<10} {result['rows']:>11,} rows {result['seconds']:8.1f} s "
                f"{rate:>11,.0f} rows/s ({rate * 60 / 1e6:6.2f} M/min)  "
                f"peak {result['peak_mib']:>7,.0f} MiB",
                flush=True,
            )
        if "activate" in seconds and "night" in seconds:
            share = seconds["activate"] / seconds["night"]
            print(f"  activate takes {share:.0%} of the night's dbt build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
