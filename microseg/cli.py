"""`microseg` command line. Each command is a thin call into the package.

Errors a user can act on print as one line: exit 1 for data (MicrosegError), 2 for usage or
configuration (UsageError, ConfigError, and argparse's own), 70 for an internal error; nothing
prints a traceback unless MICROSEG_DEBUG=1. Output cut short by its reader (`| head`) ends
quietly with 141, as a command killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

import duckdb

from microseg.config import Settings, debug_enabled, disable_telemetry, restrict_new_files
from microseg.contract import INPUT_FORMATS
from microseg.errors import MicrosegError, UsageError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _utc_moment(text: str) -> str:
    """An ISO date-time (UTC), e.g. 2026-10-15T10:15:00."""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date-time such as 2026-10-15T10:15:00"
        ) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _number_in(text: str, low: float, high: float, closed_low: bool, label: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (low <= value if closed_low else low < value) or not value < high or value != value:
        raise argparse.ArgumentTypeError(f"{text} must be {label}")
    return value


def _open_unit(text: str) -> float:
    return _number_in(text, 0.0, 1.0, False, "between 0 and 1 (exclusive)")


def _unit_or_zero(text: str) -> float:
    return _number_in(text, 0.0, 1.0, True, "from 0 to below 1")


def _positive_float(text: str) -> float:
    return _number_in(text, 0.0, float("inf"), False, "a positive number")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def _planted_effect(text: str) -> tuple[str, str, float]:
    """EXPERIMENT:ARM=SHARE, as --plant-lift and --plant-srm take it."""
    target, _, share = text.partition("=")
    experiment, _, arm = target.partition(":")
    if not (experiment and arm and share):
        raise argparse.ArgumentTypeError(f"{text!r} is not EXPERIMENT:ARM=SHARE")
    return experiment, arm, _probability(share)


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.experiments.grammar import load_configured_experiments
    from microseg.generate import GeneratorConfig, generate
    from microseg.generate.experiments import planted_effects

    specs = [("lift", *s) for s in args.plant_lift or []]
    specs += [("srm", *s) for s in args.plant_srm or []]
    config = GeneratorConfig(
        users=args.users,
        days=args.days,
        start=args.start,
        seed=args.seed,
        file_format=args.format,
        planted_effects=(
            planted_effects(load_configured_experiments(settings), specs) if specs else ()
        ),
        lapse_hazard=args.plant_churn,
    )
    summary = generate(config, args.out)
    print(
        f"generated {summary.events:,} events ({summary.persons:,} people, "
        f"{summary.sessions:,} sessions) in {len(summary.files)} {args.format} files under "
        f"{args.out}; ground truth in {summary.ground_truth_dir}"
    )
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.ingest import ingest_paths

    results = ingest_paths(
        settings, [Path(p) for p in args.paths], replace=args.replace, file_format=args.format
    )
    totals = [0, 0, 0, 0, 0]
    for r in results:
        if r.status == "rejected":
            print(f"error: {r.error}", file=sys.stderr)
            continue
        if r.status == "skipped":
            print(f"{r.file_name}: already loaded, unchanged (skipped)")
            continue
        counts = (r.rows_read, r.rows_loaded, r.rows_duplicate, r.rows_quarantined, r.rows_unused)
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
        erased = f" + erased {r.rows_erased:,}" if r.rows_erased else ""
        unused = f" + unused {r.rows_unused:,}" if r.rows_unused else ""
        print(
            f"{r.file_name}: read {r.rows_read:,} = loaded {r.rows_loaded:,} "
            f"+ duplicates {r.rows_duplicate:,} + quarantined {r.rows_quarantined:,}"
            f"{erased}{unused}"
        )
        for reason, rows, line in r.top_reasons:
            print(f"  quarantined {rows:,} x {reason} (first at line {line})")
        if r.unused_events:
            names = ", ".join(f"{name} {rows:,}" for name, rows in r.unused_events)
            print(f"  unused (no behavior here, docs/events.md): {names}")
    loaded = sum(1 for r in results if r.status == "loaded")
    rejected = sum(1 for r in results if r.status == "rejected")
    print(
        f"{loaded} file(s) loaded, {len(results) - loaded - rejected} skipped, {rejected} rejected"
        f"; rows read {totals[0]:,}, loaded {totals[1]:,}, duplicates {totals[2]:,}, "
        f"quarantined {totals[3]:,}{f', unused {totals[4]:,}' if totals[4] else ''} "
        f"-> raw.events in {settings.warehouse_path}"
    )
    return EXIT_FAILED if rejected else 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.quality import validate_features, validate_raw

    if args.features:
        from microseg.warehouse import features_as_of

        report = validate_features(settings, features_as_of(settings, args.as_of))
    else:
        report = validate_raw(settings, as_of=args.as_of)
    print(report.summary())
    return 0 if report.success else EXIT_FAILED


def cmd_transform(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.transform import engine_switched, transform

    on_spark = settings.engine == "spark"
    engine = " on Spark (raw exported as Parquet first)" if on_spark else ""
    if engine_switched(settings):
        engine += f", a full build (the last build was not on {settings.engine})"
    print(f"dbt build running{engine} (its output: {settings.dbt_log})", flush=True)
    counts = transform(settings, full_refresh=args.full_refresh)
    built = ", ".join(f"{n:,} {label}" for label, n in counts.items())
    where = str(settings.warehouse_path)
    if on_spark:
        where = f"{settings.spark_dir / 'warehouse'}/<schema>.db (Parquet), served to {where}"
    print(f"dbt build passed: {built} in {where} (schemas staging, intermediate, marts)")
    return 0


def cmd_segments(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.segments import TRIAL_SCHEMA, run_segments

    run = run_segments(settings, args.as_of, file=args.file)
    width = max(map(len, run.members), default=0)
    source = args.file or settings.segments_file
    print(f"segments of {source} as of {run.as_of} ({run.schema}.segment_memberships):")
    for name, members in run.members.items():
        print(f"  {name:<{width}}  {members:>7,} members")
    if run.schema == TRIAL_SCHEMA:
        print(f"a trial: production memberships are made from {settings.segments_file} only")
    return 0


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.activation import activate, print_run

    if args.batch or args.cutoff:
        from microseg.orchestration import cutoff_for_run
        from microseg.pipeline import run_batch

        if args.as_of or args.dry_run or args.file:
            raise UsageError("--batch takes --cutoff only (not --as-of, --dry-run or --file)")
        run_batch(settings, cutoff_for_run({"cutoff": args.cutoff}, None))
        return 0
    print_run(activate(settings, args.as_of, dry_run=args.dry_run, triggers_file=args.file))
    return 0


def cmd_activation_report(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.activation import print_report

    print_report(settings, args.as_of)
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.privacy.erase import erase, read_requests
    from ml.registry import RETRAIN_TAG

    pairs = [
        (option, value)
        for option in ("user_id", "anonymous_id", "person")
        for value in getattr(args, option) or ()
    ]
    done = erase(
        settings,
        read_requests(pairs, Path(args.from_file) if args.from_file else None),
        reason=args.reason,
        wait_minutes=args.wait_minutes,
    )
    rows = sum(done.rows_deleted.values())
    files = ", ".join(f"{folder} {n}" for folder, n in sorted(done.files_rewritten.items()))
    print(
        f"erased {done.people} person(s), {done.identifiers} id(s): {rows:,} rows from "
        f"{len(done.rows_deleted)} tables; files rewritten: {files or 'none'}; "
        f"warehouse rewritten{'; analysts snapshot re-published' if done.republished else ''}; "
        f"their ids are refused at ingest from now on (request {done.request_id} in "
        "privacy.erasure_log)"
    )
    if done.models_to_retrain:
        print(
            f"models trained on data that held them (tag {RETRAIN_TAG}; retrain with "
            f"`microseg train`): {', '.join(done.models_to_retrain)}"
        )
    return 0


def cmd_privacy_report(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.privacy.report import print_privacy_report
    from microseg.warehouse import features_as_of

    print_privacy_report(settings, features_as_of(settings, args.as_of))
    return 0


def cmd_privacy_expire(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.pipeline import expire_step

    print(expire_step(settings, args.as_of))
    return 0


def cmd_experiment_check(_args: argparse.Namespace, settings: Settings) -> int:
    from microseg.experiments.grammar import load_configured_experiments

    checked = load_configured_experiments(settings)
    print(
        f"{settings.experiments_file}: {len(checked.experiments)} experiment(s), "
        f"{len(checked.metrics)} metric(s), holdout {checked.holdout:.0%}"
    )
    for e in checked.experiments:
        arms = ", ".join(
            f"{a.name} {a.weight:.0%}{' (control)' if a.control else ''}"
            + (f" on {a.trigger}" if a.trigger else "")
            for a in e.arms
        )
        print(
            f"  {e.name}: {e.target_kind} {e.target}, {e.start} to {e.end}, layer {e.layer}; "
            f"{arms}; primary {e.primary}"
        )
    return 0


def cmd_experiment_analyze(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.experiments.analyze import analyze
    from microseg.experiments.grammar import load_configured_experiments
    from microseg.warehouse import features_as_of

    experiments = load_configured_experiments(settings)
    known = {e.name for e in experiments.experiments}
    for name in args.names:
        if name not in known:
            raise UsageError(f"no experiment {name!r} in {settings.experiments_file}")
    as_of = features_as_of(settings, args.as_of)
    for d in analyze(settings, experiments, as_of, args.names or None):
        print(f"{d.experiment} as of {as_of}: {d.decision} - {d.reasons}")
        for line in d.primary:
            print(f"  {line}")
        if d.plot is not None:
            print(f"  lift over time: {d.plot}")
    print("per arm and metric: marts.experiment_results; decisions: marts.experiment_decisions")
    return 0


def cmd_experiment_apply(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.experiments.apply import apply_decision
    from microseg.experiments.grammar import load_configured_experiments

    experiments = load_configured_experiments(settings)
    done = apply_decision(settings, experiments, args.name, args.as_of, write=args.write)
    print(f"{done.experiment} as of {done.decided_on}: {done.decision} - {done.reasons}")
    if not done.decision.startswith("ship "):
        print("nothing to apply")
        return 0
    for change in done.changes:
        print(f"  {change.line()}")
    if done.applied_before is not None:
        who, when = done.applied_before
        print(f"recorded already, by {who} at {when:%Y-%m-%d %H:%M} UTC: nothing done again")
    elif done.written:
        print("written to the files; recorded in marts.experiment_applications")
    else:
        print(
            "make these changes (or run again with --write); recorded in "
            "marts.experiment_applications"
        )
    return 0


def cmd_experiment_power(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.experiments.power import power_lines

    options = {"alpha": args.alpha, "power": args.power, "cuped_r2": args.cuped_r2}
    for line in power_lines(
        settings, args.baseline, args.mde, arms=args.arms, daily=args.daily, **options
    ):
        print(line)
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.export import export_audience

    result = export_audience(
        settings,
        args.segment,
        args.out,
        as_of=args.as_of,
        min_score=args.min_score,
        score_model=args.score_model,
        with_recommendations=args.with_recommendations,
        recommendation_model=args.recommendation_model,
        excel=args.excel,
    )
    if not result.rows:
        print(f"warning: {result.segment} has no members on {result.as_of}", file=sys.stderr)
    print(
        f"exported {result.rows:,} people of {result.segment} on {result.as_of} to "
        f"{result.path} (manifest {result.manifest_path.name})"
    )
    if result.left_out_line():
        print(f"  {result.left_out_line()}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from ml.own_table import train_own
    from ml.specs import spec_names
    from ml.train import describe, train

    for name in args.model or ([] if args.spec else spec_names(settings.ml_specs_dir)):
        print(describe(train(settings, name)))
    for path in args.spec or []:
        print(train_own(settings, Path(path)).summary())
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from ml.promote import promote
    from ml.specs import spec_names

    for name in args.model or spec_names(settings.ml_specs_dir):
        print(promote(settings, name).summary())
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.pipeline import drift_summaries, retraining_due
    from microseg.warehouse import features_as_of
    from ml.score import score

    as_of = features_as_of(settings, args.as_of)
    written = score(settings, as_of, args.model)
    if not written:
        print("no model has a champion yet: run `microseg train` and `microseg promote`")
    for name, rows in written.items():
        print(f"scored {rows:,} people with {name}@champion into marts.user_scores")
    for line in drift_summaries(settings, as_of):
        print(line)
    for _, _, line in retraining_due(settings, as_of):
        print(f"retrain: {line}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.pipeline import run_nightly

    audiences = None if args.audiences is None else [a for a in args.audiences.split(",") if a]
    run_nightly(settings, args.as_of, full_refresh=args.full_refresh, audiences=audiences)
    print(f"nightly run for {args.as_of} finished; analysts' snapshot: {settings.analytics_path}")
    return 0


def cmd_recommend_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from ml.recommend.evaluate import (
        evaluate,
        read_interactions_file,
        read_warehouse_clusters,
        read_warehouse_groups,
        read_warehouse_interactions,
        report_lines,
    )
    from ml.recommend.spec import load_recommend_spec

    spec = load_recommend_spec(args.model, settings.ml_specs_dir)
    if args.interactions:
        columns = (args.user_col, args.item_col, args.time_col, args.weight_col)
        frame, groups = read_interactions_file(
            args.interactions, *columns, tuple(args.group_col or ())
        )
        clusters = None
        source = str(args.interactions)
    else:
        frame = read_warehouse_interactions(settings, spec, args.as_of)
        groups = read_warehouse_groups(settings, frame, spec.test_days)
        clusters = read_warehouse_clusters(settings, frame, spec.test_days)
        source = "marts.fct_person_item_interactions"
    evaluation = evaluate(spec, frame, groups=groups, clusters=clusters)
    for line in report_lines(spec, evaluation, source):
        print(line)
    return 0


def _recommenders(args: argparse.Namespace, settings: Settings) -> list[str]:
    from ml.specs import RECOMMENDATION, spec_names

    return args.model or spec_names(settings.ml_specs_dir, RECOMMENDATION)


def cmd_recommend_train(args: argparse.Namespace, settings: Settings) -> int:
    from ml.recommend.train import describe_training, train_recommender

    for name in _recommenders(args, settings):
        print(describe_training(train_recommender(settings, name, args.as_of)))
    return 0


def cmd_recommend_promote(args: argparse.Namespace, settings: Settings) -> int:
    from ml.recommend.train import promote_recommender

    for name in _recommenders(args, settings):
        print(promote_recommender(settings, name).summary())
    return 0


def cmd_recommend_write(args: argparse.Namespace, settings: Settings) -> int:
    from ml.recommend.serve import write_recommendations

    written = write_recommendations(settings, args.as_of, args.model)
    if not written:
        print("no recommender has a champion yet: microseg recommend train, then promote")
    for name, rows in written.items():
        print(f"{name}@champion: {rows:,} recommendations into marts.user_recommendations")
    return 0


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from microseg.pipeline import cluster_step
    from microseg.warehouse import features_as_of

    print(cluster_step(settings, features_as_of(settings, args.as_of)))
    return 0


def cmd_docs(_args: argparse.Namespace, settings: Settings) -> int:
    from microseg.docs import build_docs

    for name, url in build_docs(settings).items():
        print(f"{name}: {url}")
    return 0


def cmd_notebooks(_args: argparse.Namespace, settings: Settings) -> int:
    from microseg.docs import run_notebooks

    for path in run_notebooks(settings):
        page = path.with_suffix(".html").as_uri()
        print(f"notebook executed: {page} (its figures; the .ipynb beside it)")
    return 0


def cmd_publish(_args: argparse.Namespace, settings: Settings) -> int:
    from microseg.publish import publish

    counts = publish(settings)
    marts = sum(1 for name in counts if name.startswith("marts."))
    print(
        f"published {marts} marts ({sum(counts.values()):,} rows) to "
        f"{settings.analytics_path} (read-only snapshot for analysts)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microseg",
        description="Behavioral events in; sessions, features, segments and scores out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="write a realistic synthetic event set, one file a day")
    gen.add_argument("--out", type=Path, required=True, help="folder for the dump files")
    gen.add_argument("--users", type=_positive_int, default=1000)
    gen.add_argument("--days", type=_positive_int, default=14)
    gen.add_argument("--start", type=_iso_date, default=date(2026, 10, 1), help="first day")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument(
        "--format", choices=["jsonl.gz", "jsonl", "csv", "parquet", "segment"], default="jsonl.gz"
    )
    gen.add_argument(
        "--plant-lift",
        type=_planted_effect,
        action="append",
        metavar="EXPERIMENT:ARM=SHARE",
        help="a true effect for the analysis to find: that share of the arm's people (of an "
        "experiments.yml experiment on cart_abandoned) buy within its primary metric's window "
        "after their abandoned cart (answer key: ground_truth/experiment_effects.parquet)",
    )
    gen.add_argument(
        "--plant-srm",
        type=_planted_effect,
        action="append",
        metavar="EXPERIMENT:ARM=SHARE",
        help="a sample ratio mismatch for the analysis to catch: that share of the arm's people "
        "lose their abandoned carts in the experiment's dates (never tracked), so the arm is "
        "exposed less often than its weight",
    )
    gen.add_argument(
        "--plant-churn",
        type=_probability,
        default=0.0,
        metavar="HAZARD",
        help="churn for churn_risk to learn: each day, that share of the people still visiting "
        "stop for good (answer key: ground_truth truth_people.lapse_date)",
    )
    gen.set_defaults(handler=cmd_generate)

    ing = sub.add_parser("ingest", help="load event files or folders into raw.events")
    ing.add_argument("paths", nargs="+", metavar="PATH")
    ing.add_argument(
        "--replace",
        action="store_true",
        help="load anew: a changed file, or one whose rows disagree with its manifest row",
    )
    ing.add_argument(
        "--format",
        choices=INPUT_FORMATS,
        default=None,
        help="every file's format (default: from its name and shape; Snowplow enriched "
        "events are recognized by their 131 tab-separated fields, the GA4 export by its "
        "event_name and event_timestamp)",
    )
    ing.set_defaults(handler=cmd_ingest)

    val = sub.add_parser("validate", help="run the raw-event Great Expectations checkpoint")
    val.add_argument(
        "--as-of",
        type=_iso_date,
        default=None,
        help="run date: events after it (plus tolerance) count as future; default today (UTC)",
    )
    val.add_argument(
        "--features",
        action="store_true",
        help="check the features of the as-of date (user_features suites) instead of raw events",
    )
    val.set_defaults(handler=cmd_validate)

    tra = sub.add_parser("transform", help="dbt build: sessions, page views, features (marts)")
    tra.add_argument(
        "--full-refresh", action="store_true", help="rebuild incremental models from raw.events"
    )
    tra.set_defaults(handler=cmd_transform)

    seg = sub.add_parser("segments", help="materialize the segments of segments.yml for a date")
    seg.add_argument(
        "--as-of", type=_iso_date, default=None, help="as-of date; default the latest features"
    )
    seg.add_argument(
        "--file",
        type=Path,
        default=None,
        help="try another definitions file: evaluated into schema segments_trial, "
        "production memberships unchanged",
    )
    seg.set_defaults(handler=cmd_segments)

    act = sub.add_parser(
        "activate", help="fire the triggers of triggers.yml for a night; cap, queue and deliver"
    )
    act.add_argument(
        "--as-of",
        type=_iso_date,
        default=None,
        help="D: firings of the day before D (default: latest features)",
    )
    act.add_argument(
        "--dry-run",
        action="store_true",
        help="evaluate and decide (firings into schema activation_trial); queue and send nothing",
    )
    act.add_argument(
        "--file", type=Path, default=None, help="another triggers file (with --dry-run)"
    )
    act.add_argument(
        "--batch",
        action="store_true",
        help="a micro-batch (what the activation DAG runs): load newly landed files, update the "
        "models, fire the triggers since the previous batch",
    )
    act.add_argument(
        "--cutoff",
        type=_utc_moment,
        default=None,
        help="with --batch: evaluate up to this UTC time (default now)",
    )
    act.set_defaults(handler=cmd_activate)

    acr = sub.add_parser("activation", help="activation reports")
    acr_sub = acr.add_subparsers(dest="activation_command", required=True, metavar="COMMAND")
    rep = acr_sub.add_parser("report", help="fired, capped, expired, sent, failed per trigger")
    rep.add_argument(
        "--as-of",
        type=_iso_date,
        default=None,
        help="D: the firings of the day before D (default: all days)",
    )
    rep.set_defaults(handler=cmd_activation_report)

    prv = sub.add_parser("privacy", help="privacy report and retention")
    prv_sub = prv.add_subparsers(dest="privacy_command", required=True, metavar="COMMAND")
    prr = prv_sub.add_parser(
        "report", help="consent per purpose, and where personal data lives (tables, files)"
    )
    prr.add_argument(
        "--as-of", type=_iso_date, default=None, help="consent as of D (default: newest night)"
    )
    prr.set_defaults(handler=cmd_privacy_report)
    pre = prv_sub.add_parser(
        "expire",
        help="retention: delete raw events and quarantined lines older than the settings allow",
    )
    pre.add_argument(
        "--as-of", type=_iso_date, required=True, help="D: ages are counted back from D"
    )
    pre.set_defaults(handler=cmd_privacy_expire)

    exm = sub.add_parser("experiment", help="A/B tests: check, analyze, apply, sample sizes")
    exm_sub = exm.add_subparsers(dest="experiment_command", required=True, metavar="COMMAND")
    chk = exm_sub.add_parser("check", help="validate experiments.yml and list its experiments")
    chk.set_defaults(handler=cmd_experiment_check)
    ana = exm_sub.add_parser("analyze", help="arms against control, per metric, and a decision")
    ana.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all)")
    ana.add_argument("--as-of", type=_iso_date, default=None, help="default: latest features")
    ana.set_defaults(handler=cmd_experiment_analyze)
    app = exm_sub.add_parser("apply", help="act on a 'ship ARM' decision, with an audit row")
    app.add_argument("name", metavar="NAME", help="the experiment")
    app.add_argument("--as-of", type=_iso_date, default=None, help="default: latest decision")
    app.add_argument(
        "--write", action="store_true", help="edit experiments.yml and triggers.yml (else print)"
    )
    app.set_defaults(handler=cmd_experiment_apply)
    pw = exm_sub.add_parser("power", help="people per arm and days needed to detect a change")
    pw.add_argument("--baseline", type=_open_unit, required=True, help="control conversion rate")
    pw.add_argument(
        "--mde", type=_positive_float, required=True, help="relative change, 0.10 = +10%%"
    )
    pw.add_argument("--alpha", type=_open_unit, default=0.05, help="two-sided (default 0.05)")
    pw.add_argument("--power", type=_open_unit, default=0.8, help="default 0.8")
    pw.add_argument(
        "--cuped-r2",
        type=_unit_or_zero,
        default=0.0,
        help="variance a pre-period covariate explains",
    )
    pw.add_argument("--arms", type=_positive_int, default=2, help="arms including control")
    pw.add_argument(
        "--daily",
        type=_positive_float,
        default=None,
        help="eligible people a day (default: from the warehouse)",
    )
    pw.set_defaults(handler=cmd_experiment_power)

    rec = sub.add_parser("recommend", help="recommenders: evaluate on the warehouse or a file")
    rec_sub = rec.add_subparsers(dest="recommend_command", required=True, metavar="COMMAND")
    rev = rec_sub.add_parser(
        "evaluate", help="time-split evaluation: ALS, BPR, popularity, co-occurrence at top K"
    )
    rev.add_argument(
        "--model",
        default="recommend_content",
        help="recommender spec in ml/specs (default: %(default)s)",
    )
    rev.add_argument(
        "--interactions",
        type=Path,
        default=None,
        help="a CSV or Parquet file of interactions (default: the warehouse's)",
    )
    rev.add_argument("--user-col", default="user_id", help="default: %(default)s")
    rev.add_argument("--item-col", default="item_id", help="default: %(default)s")
    rev.add_argument(
        "--time-col",
        default="timestamp",
        help="timestamp, date or epoch seconds (default: %(default)s)",
    )
    rev.add_argument("--weight-col", default=None, help="confidence per row (default: 1)")
    rev.add_argument(
        "--group-col",
        action="append",
        help="a user attribute to report metrics by (repeatable; the user's first value)",
    )
    rev.add_argument(
        "--as-of", type=_iso_date, default=None, help="warehouse: interactions before this date"
    )
    rev.set_defaults(handler=cmd_recommend_evaluate)
    for command, handler, text in (
        (
            "train",
            cmd_recommend_train,
            "evaluate, then register the best learned model as challenger",
        ),
        ("promote", cmd_recommend_promote, "challenger to champion if it beats it and popularity"),
        (
            "write",
            cmd_recommend_write,
            "each champion's top K per person into marts.user_recommendations",
        ),
    ):
        step = rec_sub.add_parser(command, help=text)
        step.add_argument(
            "--model", action="append", help="a recommender spec (repeatable; default: all)"
        )
        if command != "promote":
            step.add_argument(
                "--as-of",
                type=_iso_date,
                default=None,
                help="interactions before this date (write: default the latest features)",
            )
        step.set_defaults(handler=handler)

    clu = sub.add_parser("cluster", help="behavioral clusters for a date (marts.person_clusters)")
    clu.add_argument("--as-of", type=_iso_date, default=None, help="default: latest features")
    clu.set_defaults(handler=cmd_cluster)

    exp = sub.add_parser("export", help="write one segment's audience as CSV (consent-filtered)")
    exp.add_argument("--segment", required=True, help="segment name (segments.yml)")
    exp.add_argument("--out", type=Path, required=True, help="CSV file to write")
    exp.add_argument("--as-of", type=_iso_date, default=None, help="default: latest evaluation")
    exp.add_argument("--min-score", type=_probability, default=None, help="keep scores >= X")
    exp.add_argument("--score-model", default="purchase_propensity", help="model for --min-score")
    exp.add_argument(
        "--with-recommendations",
        type=_positive_int,
        default=None,
        metavar="K",
        help="add each person's top K recommended items (marts.user_recommendations)",
    )
    exp.add_argument(
        "--recommendation-model",
        default="recommend_content",
        help="recommender for --with-recommendations (default: %(default)s)",
    )
    exp.add_argument(
        "--excel", action="store_true", help="start with a UTF-8 byte order mark (Excel on Windows)"
    )
    exp.set_defaults(handler=cmd_export)

    trn = sub.add_parser("train", help="train models from ml/specs; each becomes challenger")
    trn.add_argument("--model", action="append", help="a spec name (repeatable); default all")
    trn.add_argument(
        "--spec",
        action="append",
        metavar="FILE",
        help="a model on your own table or CSV/Parquet file (repeatable; README)",
    )
    trn.set_defaults(handler=cmd_train)

    pro = sub.add_parser("promote", help="gate each challenger: beat the champion, pass fairness")
    pro.add_argument("--model", action="append", help="a spec name (repeatable); default all")
    pro.set_defaults(handler=cmd_promote)

    sco = sub.add_parser("score", help="score people with each champion into marts.user_scores")
    sco.add_argument("--as-of", type=_iso_date, default=None, help="default: latest features")
    sco.add_argument("--model", action="append", help="a spec name (repeatable)")
    sco.set_defaults(handler=cmd_score)

    run = sub.add_parser(
        "run", help="the whole nightly pipeline for one date, without Airflow (same steps)"
    )
    run.add_argument(
        "--as-of", type=_iso_date, required=True, help="D: features, scores, segments as of D"
    )
    run.add_argument("--full-refresh", action="store_true", help="rebuild the dbt models")
    run.add_argument(
        "--audiences", default=None, help="comma-separated segments to export (default: settings)"
    )
    run.set_defaults(handler=cmd_run)

    era = sub.add_parser(
        "erase", help="forget people everywhere (warehouse, files, snapshot); refuse their ids"
    )
    era.add_argument("--user-id", dest="user_id", action="append", metavar="ID")
    era.add_argument("--anonymous-id", dest="anonymous_id", action="append", metavar="ID")
    era.add_argument("--person", action="append", metavar="PERSON_ID")
    era.add_argument(
        "--from-file", metavar="FILE", help="one request per line: user_id=..., anonymous_id=..."
    )
    era.add_argument("--reason", help="recorded in privacy.erasure_log (e.g. a ticket number)")
    era.add_argument(
        "--wait-minutes",
        type=float,
        default=10.0,
        help="how long to wait for a running step to release the warehouse (default 10)",
    )
    era.set_defaults(handler=cmd_erase)

    pub = sub.add_parser("publish", help="replace analytics.duckdb with a fresh snapshot")
    pub.set_defaults(handler=cmd_publish)

    dcs = sub.add_parser(
        "docs", help="build dbt's docs site and GX Data Docs for this warehouse, print where"
    )
    dcs.set_defaults(handler=cmd_docs)

    nbk = sub.add_parser(
        "notebooks", help="run the analysts' notebooks against analytics.duckdb, figures kept"
    )
    nbk.set_defaults(handler=cmd_notebooks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    disable_telemetry()
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        settings = Settings.from_env()
        restrict_new_files(settings)
        code = handler(args, settings)
        sys.stdout.flush()  # a reader gone (`| head`) is met here, not at exit
        return code
    except BrokenPipeError:
        # the rest of the output goes nowhere, so the flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MicrosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except duckdb.OutOfMemoryException as exc:  # the machine's limit, not a bug
        print(
            f"error: DuckDB ran out of memory ({str(exc).splitlines()[0]}); raise "
            "MICROSEG_DUCKDB_MEMORY_LIMIT, or give MICROSEG_DUCKDB_TEMP_DIR a disk with room",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if debug_enabled():
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"internal error: {type(exc).__name__}: {first_line} (MICROSEG_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
