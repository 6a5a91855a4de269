"""`make bench`: throughput and peak memory at scale, printed as figures (not a test).

Each stage runs in its own child process so that its peak resident memory is its own; for
`transform` the peak is dbt's (a grandchild), read from RUSAGE_CHILDREN.

Stages, on `--days` + 1 generated days:
  generate     all days
  ingest       the first `--days` files
  parquet ingest
               the same files written as Parquet first (not timed: one DuckDB read_json per
               file, the canonical fields as text; a line that is no JSON, a row of nulls),
               ingested into a warehouse of their own
  validate     raw GX checkpoints
  transform    full dbt build over `--days` days
  spark        the same history ingested into a warehouse of its own, then the same full
               build on the Spark target (PySpark in local mode), served to DuckDB (rows:
               events; peak: the JVM's)
  night        ingest the last day, incremental dbt build (one nightly run on top of the history
               ingest and transform built earlier in the same run; refused without them)
  spark night  the same night ingested there, and its incremental build on the Spark target
  train        purchase_propensity: training set, search, baseline, MLflow (then promote)
  score        every person with the champion (rows: people scored)
  cluster      behavioral clusters on the latest as-of date (rows: people clustered)
  segments     the default segments for the latest as-of date, the night's trigger firings
               built in the same dbt invocation, as the nightly segments step does (rows:
               people evaluated)
  recommend    recommend_content evaluated on the warehouse beside the generator's oracle
               ranking (rows: interactions; NDCG@10 of ALS, popularity and the oracle)
  recommend at scale
               ALS (the spec's first grid point) fitted on 100,000 people x 5,000 items x 20
               interactions each (ml/recommend/synthetic.py), then every person's top 10 with
               reasons: what a nightly refit costs at that size (rows: interactions)
  recommend file
               `microseg recommend evaluate` end to end on a CSV of 100,000 interactions
               (1,000 people x 1,700 items): search, refits, metrics (rows: interactions)
  activate     the default triggers for that night: caps, outbox, file delivery on the
               firings the segments stage built (rows: firings; with the firings' dbt time,
               printed as a share of the night's dbt build)
  micro-batch  10,000 new events of the following day landed, then what the activation DAG
               does: ingest, incremental dbt build, triggers of the day, delivery (rows: events)
  day alone    a fresh warehouse with only the last day, full dbt build (what a night should
               cost about as much as)
  pandas peer  bench/pandas_peer.py on the same history files: parse, dedup, 30-minute
               sessions, one day's user features (what a notebook would do instead)
  scan floor   one DuckDB read_json scan of the same history files
  load floor   DuckDB copying the same history files into a table of raw.events' columns as
               they are (its own casts; no check, dedup or quarantine), one file a
               transaction, in time order as ingest writes them: what storing the events
               costs here (rows: the JSON Lines copied; the Parquet files of `parquet ingest`
               are copied too, timed apart)
  window floor a plain DuckDB window-function sessionization of the stitched events (after
               transform: what int_events_sessionized is compared with)
  snowplow     the shipped Snowplow enriched sample (docs/examples) copied once per user,
               each copy's event and visitor ids its own, loaded as it comes
  ga4          the same with the shipped GA4 export sample (its first day)

The warehouse stages use MICROSEG_DUCKDB_MEMORY_LIMIT, _THREADS and _TEMP_DIR from the
environment like any run; `--night-memory-limit` gives night and day alone a limit of their
own (the ratios that set the night beside the Spark night or activation then compare two
limits). The ratios the performance targets are stated in follow the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from microseg.config import PROJECT_ROOT, Settings, disable_telemetry
from microseg.ingest.snowplow import SNOWPLOW_FIELDS
from microseg.ingest.sqltext import ident

PANDAS_PEER = Path(__file__).resolve().parents[1] / "bench" / "pandas_peer.py"

STAGE_SCRIPT = """
import json, os, resource, subprocess, sys, time
from pathlib import Path
stage, landing, home, users, days, peer = sys.argv[1:7]
users, days = int(users), int(days)
files = sorted(Path(landing).glob("events_*"))
models, extra = {}, {}
started = time.perf_counter()


ACTIVATION_MODELS = ("trigger_firings", "activation_report", "experiment_exposures")
# the events a build wrote: a night's batch, or every row of a full build (numbered 0 and below)
BUILT_ROWS = ("select count(*) from intermediate.int_events_stitched "
              "where batch = (select max(batch) from intermediate.int_events_stitched) "
              "or (select max(batch) from intermediate.int_events_stitched) <= 0")


def dbt_seconds(settings, kind="model."):  # per node of the latest dbt invocation
    run = json.loads((settings.dbt_target_dir / "run_results.json").read_text())
    return {r["unique_id"].split(".")[2]: r["execution_time"] for r in run["results"]
            if r["unique_id"].startswith(kind)}


if stage == "generate":
    from microseg.generate import GeneratorConfig, generate
    rows = generate(GeneratorConfig(users=users, days=days + 2, seed=1), Path(landing)).events
elif stage == "pandas peer":
    import runpy
    from datetime import timedelta
    from microseg.ingest import delivery_date
    pandas_peer = runpy.run_path(peer)
    started = time.perf_counter()  # what the peer does, not pandas' import
    events = pandas_peer["sessionize"](pandas_peer["read_events"](files[:days]))
    pandas_peer["user_features"](events, delivery_date(files[days - 1]) + timedelta(days=1))
    rows = len(events)
elif stage == "recommend at scale":
    import numpy as np
    from ml.recommend.evaluate import build_split
    from ml.recommend.models import Recommender
    from ml.recommend.spec import load_recommend_spec
    from ml.recommend.synthetic import latent_interactions
    from microseg.config import Settings
    frame = latent_interactions(100_000, 5_000, 20)
    spec = load_recommend_spec("recommend_content", Settings.from_env().ml_specs_dir)
    started = time.perf_counter()  # the nightly refit and serving, not making the data
    history = build_split(frame, frame.iloc[:0])
    model = Recommender("als", spec.grids["als"][0], seed=spec.seed).fit(history.train)
    everyone = np.arange(history.train.shape[0])
    ranked, _ = model.recommend(everyone, 10)
    model.reasons(everyone, ranked)
    rows = len(frame)
elif stage == "recommend file":
    from ml.recommend.synthetic import latent_interactions
    frame = latent_interactions(1_000, 1_700, 100)
    path = Path(home).parent / "interactions.csv"
    frame.to_csv(path, index=False)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microseg.cli", "recommend", "evaluate",
                    "--interactions", str(path), "--user-col", "user", "--item-col", "item",
                    "--time-col", "time", "--weight-col", "weight", "--group-col", "group"],
                   check=True, stdout=sys.stderr)
    rows = len(frame)
elif stage in ("snowplow", "ga4"):
    from microseg.bench import copied_sample
    from microseg.config import Settings
    from microseg.ingest import ingest_paths
    scratch = Path(home) / stage
    scratch.mkdir(parents=True, exist_ok=True)
    export = copied_sample(stage, users, scratch)
    settings = Settings.from_env({**os.environ, "MICROSEG_HOME": str(scratch / "home")})
    started = time.perf_counter()
    rows = sum(r.rows_read for r in ingest_paths(settings, [export]))
elif stage == "scan floor":
    import duckdb
    names = [str(f) for f in files[:days]]
    columns = {c: "VARCHAR" for c in ("event_id", "event_type", "event_at", "user_id")}
    with duckdb.connect() as con:
        started = time.perf_counter()
        rows = con.execute(
            "select count(*), count(distinct event_id), min(event_at) from read_json(?, "
            "format = 'newline_delimited', ignore_errors = true, columns = ?)",
            [names, columns]).fetchone()[0]
else:
    from microseg.config import Settings
    settings = Settings.from_env({**os.environ, "MICROSEG_HOME": home})
    if stage == "parquet ingest":
        from microseg.bench import as_parquet
        from microseg.ingest import ingest_paths
        parquet = as_parquet(files[:days], Path(home) / "parquet_landing", settings)
        started = time.perf_counter()
        rows = sum(r.rows_read for r in ingest_paths(settings, parquet))
    if stage == "load floor":
        from microseg.bench import as_parquet, copy_floor
        parquet = as_parquet(files[:days], Path(home) / "parquet_landing", settings)
        parquet_started = time.perf_counter()
        extra["parquet rows"] = copy_floor(parquet, settings)
        extra["parquet seconds"] = time.perf_counter() - parquet_started
        started = time.perf_counter()
        rows = copy_floor(files[:days], settings)
    if stage in ("ingest", "night", "day alone", "spark", "spark night"):
        from microseg.ingest import ingest_paths
        chosen = files[:days] if stage in ("ingest", "spark") else files[days:days + 1]
        rows = sum(r.rows_read for r in ingest_paths(settings, chosen))
    if stage == "validate":
        from microseg.quality import validate_raw
        rows = validate_raw(settings).checked["raw_events"][0]
    if stage in ("transform", "night", "day alone"):
        from microseg.transform import transform
        from microseg.warehouse import connect
        started = time.perf_counter()  # a night is timed from its dbt build, not its ingest
        transform(settings, full_refresh=stage != "night")
        with connect(settings, read_only=True) as con:
            rows = con.execute(BUILT_ROWS).fetchone()[0]
        models = dbt_seconds(settings)
    if stage in ("spark", "spark night"):  # the same builds on the Spark target
        from microseg.transform import transform
        from microseg.warehouse import connect
        import threading
        spark = Settings.from_env({**os.environ, "MICROSEG_HOME": home, "MICROSEG_ENGINE": "spark"})
        jvm_peak, done = [0], threading.Event()

        def watch_jvm():  # PySpark's JVM is not waited for, so rusage misses it: read VmHWM
            while not done.wait(0.5):
                for status in Path("/proc").glob("[0-9]*/status"):
                    try:
                        if "SparkSubmit" in status.with_name("cmdline").read_text():
                            kib = [int(line.split()[1]) for line in status.read_text().splitlines()
                                   if line.startswith("VmHWM:")]
                            jvm_peak[0] = max(jvm_peak[0], *kib)
                    except OSError:
                        pass

        threading.Thread(target=watch_jvm, daemon=True).start()
        started = time.perf_counter()
        transform(spark)
        done.set()  # the JVM has ended with dbt: its peak is in
        extra["jvm_peak_mib"] = jvm_peak[0] / 1024
        with connect(settings, read_only=True) as con:  # what Spark built, served
            rows = con.execute(BUILT_ROWS).fetchone()[0]
    if stage == "window floor":
        from microseg.warehouse import connect
        with connect(settings) as con:
            started = time.perf_counter()
            rows = con.execute(\"\"\"
                create or replace temp table floor_sessions as
                select person_id, event_id,
                       sum(is_after_gap::int) over (partition by person_id
                           order by event_at, event_id) as session_number
                from (select person_id, event_id, event_at,
                             coalesce(event_at - lag(event_at) over (partition by person_id
                                 order by event_at, event_id) > interval 30 minutes, true)
                                 as is_after_gap
                      from intermediate.int_events_stitched)
            \"\"\").fetchone()[0]
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
        from microseg.pipeline import segments_step
        from microseg.warehouse import connect
        segments_step(settings, as_of)  # as the night does: the night's firings built along
        models = dbt_seconds(settings)
        extra = {"trigger evaluation": sum(  # its models and their data tests
            took for node, took in (models | dbt_seconds(settings, "test.")).items()
            if any(name in node for name in ACTIVATION_MODELS))}
        with connect(settings, read_only=True) as con:  # rows: people evaluated
            rows = con.execute("select count(*) from marts.fct_user_features_daily "
                               "where as_of_date = ?", [as_of]).fetchone()[0]
    if stage == "recommend":
        from microseg.generate.items import oracle_reference
        from ml.recommend.evaluate import evaluate, read_warehouse_interactions
        from ml.recommend.spec import load_recommend_spec
        spec = load_recommend_spec("recommend_content", settings.ml_specs_dir)
        frame = read_warehouse_interactions(settings, spec)
        reference = oracle_reference(Path(landing) / "ground_truth")
        table = evaluate(spec, frame, reference).table.set_index("model")
        rows = len(frame)
        extra = {m: float(table.ndcg[m]) for m in ("als", "popularity", "reference")}
    if stage == "activate":
        from microseg.activation import activate
        started = time.perf_counter()  # the call, as the night is timed (not Python's imports)
        run = activate(settings, as_of)
        rows = sum(run.fired.values())
        extra = {"reused the segments build": run.reused_evaluation}
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
peak = max(peak, extra.get("jvm_peak_mib", 0))
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak, "models": models,
                  "extra": extra}))
"""

# the stages that read the day files (generated in this run, or --landing's)
READS_DUMPS = (
    "ingest",
    "parquet ingest",
    "spark",
    "night",
    "day alone",
    "spark night",
    "pandas peer",
    "scan floor",
    "load floor",
    "micro-batch",
)

# the stages that build on the history earlier stages of the same run built: without them a
# night would be timed on an empty warehouse, and its ratio to the day alone would mean nothing
NEEDS_HISTORY = {
    "night": ("ingest", "transform"),
    "spark night": ("spark",),
    "window floor": ("ingest", "transform"),
}

STAGES = (
    "generate",
    "ingest",
    "parquet ingest",
    "validate",
    "transform",
    "spark",
    "window floor",
    "night",
    "spark night",
    "train",
    "score",
    "cluster",
    "segments",
    "recommend",
    "recommend at scale",
    "recommend file",
    "activate",
    "micro-batch",
    "day alone",
    "pandas peer",
    "scan floor",
    "load floor",
    "snowplow",
    "ga4",
)
SAMPLES = {"snowplow": "snowplow_enriched_2026-10-01.tsv", "ga4": "ga4/events_20261001.json"}


def as_parquet(dumps: list[Path], folder: Path, settings: Settings) -> list[Path]:
    """The dumps' events as Parquet files, one per dump, canonical fields as text (as the
    generator's `--format parquet` writes them)."""
    import duckdb

    from microseg.contract import event_contract
    from microseg.warehouse import apply_limits

    columns = event_contract().read_types
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with duckdb.connect() as con:
        apply_limits(con, settings)
        for dump in dumps:
            path = folder / f"{dump.name.split('.')[0]}.parquet"
            con.execute(
                "copy (select * from read_json(?, format = 'newline_delimited', "
                f"ignore_errors = true, columns = ?)) to '{path}' (format parquet)",
                [str(dump), columns],
            )
            written.append(path)
    return written


def copy_floor(dumps: list[Path], settings: Settings) -> int:
    """Copy the dumps' events into a table of raw.events' columns in a database of their own
    (bench stage `load floor`): JSON Lines read typed by DuckDB, Parquet (as_parquet's text
    columns) cast; returns the rows copied."""
    import duckdb

    from microseg.contract import event_contract
    from microseg.warehouse import apply_limits, create_database

    contract = event_contract()
    types = {f.name: f.sql_type for f in contract.fields}
    parquet = dumps[0].suffix == ".parquet"
    database = settings.home / f"load_floor_{'parquet' if parquet else 'jsonl'}.duckdb"
    columns = ", ".join(
        f"try_cast({ident(name)} as {kind}) as {ident(name)}" for name, kind in types.items()
    )
    rows = 0
    # in the warehouse's storage format: what storing events costs the ingest
    create_database(database)
    with duckdb.connect(str(database)) as con:
        apply_limits(con, settings)
        con.execute(f"create table events ({', '.join(contract.column_definitions)})")
        for dump in dumps:
            source = (
                f"(select {columns} from read_parquet(?))"
                if parquet
                else "read_json(?, format = 'newline_delimited', ignore_errors = true, columns = ?)"
            )
            rows += con.execute(
                f"insert into events select * from {source} order by event_at, event_id",
                [str(dump)] if parquet else [str(dump), types],
            ).fetchone()[0]
    return rows


def copied_sample(export: str, copies: int, folder: Path) -> Path:
    """The shipped sample of `export` (docs/examples) copied `copies` times into one file,
    each copy's event and visitor ids made its own: new traffic, not duplicates."""
    sample = PROJECT_ROOT / "docs" / "examples" / SAMPLES[export]
    lines = sample.read_bytes().decode("utf-8").split("\n")[:-1]  # \n ends every line
    out = folder / sample.name
    with out.open("w", encoding="utf-8", newline="") as handle:
        for copy in range(copies):
            handle.writelines(_own_ids(export, line, copy) + "\n" for line in lines)
    return out


def _own_ids(export: str, line: str, copy: int) -> str:
    if export == "ga4":  # GA4's event id is a hash of the row, which names its visitor
        for field in ("user_pseudo_id", "user_id"):
            line = line.replace(f'"{field}":"', f'"{field}":"{copy}.')
        return line
    fields = line.split("\t")
    for name in ("event_id", "domain_userid", "network_userid", "domain_sessionid", "user_id"):
        index = SNOWPLOW_FIELDS.index(name)
        if index < len(fields) and fields[index]:
            fields[index] = f"{copy}-{fields[index]}"
    return "\t".join(fields)


def run_stage(
    stage: str, landing: Path, home: Path, users: int, days: int, memory_limit: str | None = None
) -> dict:
    """One stage in a child process; `memory_limit`: its MICROSEG_DUCKDB_MEMORY_LIMIT."""
    env = {**os.environ, "MICROSEG_DUCKDB_MEMORY_LIMIT": memory_limit} if memory_limit else None
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            STAGE_SCRIPT,
            stage,
            str(landing),
            str(home),
            str(users),
            str(days),
            str(PANDAS_PEER),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(results: dict[str, dict]) -> list[str]:
    """The comparisons issue 17's targets are stated in, for the stages that ran."""

    def seconds(*stages: str) -> float | None:
        if not all(stage in results for stage in stages):
            return None
        return sum(results[stage]["seconds"] for stage in stages)

    lines = []
    build = seconds("ingest", "transform")
    for peer, target in (("pandas peer", "<= 1x"), ("scan floor", "<= 20x")):
        if build is not None and seconds(peer):
            lines.append(
                f"  ingest + full build {build:.1f} s = {build / seconds(peer):.1f}x the {peer} "
                f"({seconds(peer):.1f} s; target {target})"
            )
    # the figure: Parquet dumps loaded, then the full build (~10M events: <= 90 s)
    parquet_build = seconds("parquet ingest", "transform")
    if parquet_build is not None:
        lines.append(
            f"  ingest of Parquet + full build {parquet_build:.1f} s "
            "(target at ~10M events <= 90 s)"
        )
    floor = results.get("load floor")
    for stage, kind, target, floor_rows, floor_seconds in (
        ("ingest", "gzipped JSON Lines", 200_000, "rows", "seconds"),
        ("parquet ingest", "Parquet", 500_000, "parquet rows", "parquet seconds"),
    ):
        if seconds(stage):
            rate = results[stage]["rows"] / seconds(stage)
            line = f"  ingest of {kind}: {rate:,.0f} events/s (target >= {target:,}/s"
            if floor:
                found = floor if floor_rows == "rows" else floor["extra"]
                line += (
                    f"; DuckDB copying the files into a table, nothing checked: "
                    f"{found[floor_rows] / found[floor_seconds]:,.0f}/s"
                )
            lines.append(line + ")")
    if seconds("transform") and seconds("spark"):
        lines.append(
            f"  Spark target's full build, served to DuckDB {seconds('spark'):.1f} s = "
            f"{seconds('spark') / seconds('transform'):.1f}x DuckDB's {seconds('transform'):.1f} s "
            "(PySpark in local mode on this machine: the point is that it runs, and scales out)"
        )
    if seconds("night") and seconds("spark night"):
        lines.append(
            f"  Spark target's night (incremental) {seconds('spark night'):.1f} s = "
            f"{seconds('spark night') / seconds('night'):.1f}x DuckDB's {seconds('night'):.1f} s"
        )
    sessionized = results.get("transform", {}).get("models", {}).get("int_events_sessionized")
    if sessionized is not None and seconds("window floor"):
        lines.append(
            f"  int_events_sessionized {sessionized:.1f} s = "
            f"{sessionized / seconds('window floor'):.1f}x the window floor "
            f"({seconds('window floor'):.1f} s; target <= 3x)"
        )
    if seconds("night") and seconds("day alone"):
        lines.append(
            f"  night {seconds('night'):.1f} s = {seconds('night') / seconds('day alone'):.1f}x "
            f"the day built alone ({seconds('day alone'):.1f} s; target <= 1.5x)"
        )
    evaluation = results.get("segments", {}).get("extra", {}).get("trigger evaluation")
    if seconds("activate") and seconds("night") and evaluation is not None:
        reused = results["activate"]["extra"]["reused the segments build"]
        activation = seconds("activate") + (evaluation if reused else 0)
        lines.append(
            f"  activation {activation:.1f} s (the firings in the segments step's dbt build "
            f"{evaluation:.1f} s{'' if reused else ', not reused'}; activate "
            f"{seconds('activate'):.1f} s) = {activation / seconds('night'):.0%} of the "
            f"night's dbt build {seconds('night'):.1f} s (target <= 20%)"
        )
    recommend = results.get("recommend", {}).get("extra")
    if recommend:
        als, popularity, oracle = (recommend[m] for m in ("als", "popularity", "reference"))
        lines.append(
            f"  recommend_content ALS NDCG@10 {als:.4f} = {als / oracle:.2f}x the oracle's "
            f"{oracle:.4f} (target >= 0.9x) and {als / popularity - 1:+.0%} over popularity "
            f"{popularity:.4f} (target >= +30%)"
        )
    for stage, target in (("recommend at scale", 60), ("recommend file", 30)):
        if seconds(stage):
            lines.append(f"  {stage}: {seconds(stage):.1f} s (target <= {target} s)")
    for stage, build in (("transform", "full build"), ("night", "night")):
        slowest = sorted(results.get(stage, {}).get("models", {}).items(), key=lambda m: -m[1])
        if slowest:
            listed = ", ".join(f"{name} {time:.1f} s" for name, time in slowest[:4])
            lines.append(f"  slowest models of the {build}: {listed}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg.bench")
    parser.add_argument("--users", type=int, default=1200, help="about 1M events at 30 days")
    parser.add_argument("--days", type=int, default=30, help="days of history before the night")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    parser.add_argument(
        "--night-memory-limit",
        help="DuckDB's limit for the night and day-alone stages (e.g. 1.5GB), when the nightly "
        "job is given less than full rebuilds; by default MICROSEG_DUCKDB_MEMORY_LIMIT's",
    )
    parser.add_argument(
        "--landing",
        type=Path,
        help="measure the dumps of an earlier run instead of generating them (at 100M the "
        "generator alone takes half an hour): a folder `microseg generate --users U --days "
        "DAYS+2 --seed 1` wrote, left as it is; leave the generate stage out",
    )
    args = parser.parse_args(argv)
    disable_telemetry()
    wanted = [s.strip() for s in args.stages.split(",")]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    for stage in (s for s in NEEDS_HISTORY if s in wanted):
        needed = NEEDS_HISTORY[stage]
        if [s for s in wanted[: wanted.index(stage)] if s in needed] != list(needed):
            parser.error(f"stage {stage} needs {' then '.join(needed)} earlier in --stages")
    reading = [stage for stage in wanted if stage in READS_DUMPS]
    if reading and not args.landing and "generate" not in wanted:
        parser.error(
            f"stages {', '.join(reading)} read the day files: add generate to --stages, "
            "or pass --landing DIR"
        )
    if args.landing:
        if "generate" in wanted:
            parser.error("--landing replaces the generate stage: leave it out of --stages")
        days_found = len(list(args.landing.glob("events_*")))
        if days_found < args.days + 1:
            parser.error(
                f"--landing {args.landing} has {days_found} day files; "
                f"{args.days} days of history + 1 night need {args.days + 1}"
            )
    base = Settings.from_env().home / "bench"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        landing = args.landing.resolve() if args.landing else Path(scratch) / "landing"
        home = Path(scratch) / "home"
        print(
            f"microseg bench: {args.users:,} users, {args.days} days of history + 1 night "
            "(rows: events; peak: max resident set of the stage's processes; "
            f"{shutil.disk_usage(base).free / 1e9:,.0f} GB of disk free under {base})"
        )
        results: dict[str, dict] = {}
        for stage in wanted:
            # the Spark stages build a warehouse of their own: each engine builds
            # incrementally on its own tables (a switch means a full build)
            homes = {
                "day alone": "alone",
                "spark": "spark",
                "spark night": "spark",
                "parquet ingest": "parquet",
                "load floor": "floor",
            }
            stage_home = Path(scratch) / homes[stage] if stage in homes else home
            limit = args.night_memory_limit if stage in ("night", "day alone") else None
            result = run_stage(stage, landing, stage_home, args.users, args.days, limit)
            results[stage] = result
            rate = result["rows"] / result["seconds"] if result["seconds"] else 0.0
            print(
                f"  {stage:<12} {result['rows']:>11,} rows {result['seconds']:8.1f} s "
                f"{rate:>11,.0f} rows/s ({rate * 60 / 1e6:6.2f} M/min)  "
                f"peak {result['peak_mib']:>7,.0f} MiB" + (f"  (limit {limit})" if limit else ""),
                flush=True,
            )
        for line in ratios(results):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
