"""The nightly pipeline as one function per step, dated by the run's as-of date.

`microseg run --as-of D` calls the steps in order; each Airflow task of behavior_nightly calls
exactly one of them, so the scheduler and the command line run the same code. Every step is
idempotent for its date (re-running it gives the same tables) and returns a one-line summary.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

from microseg.config import Settings
from microseg.errors import DataQualityError, InputError, MicrosegError, NothingToRunError


def ingest_step(settings: Settings, as_of: date) -> str:
    """Load the landing folder's new files that are due by `as_of` (a file dated D waits for
    the night of D + 1: see ingest.split_due); a rejected file stops the run. Then decide
    whether the night has anything to build (see _check_quiet_days)."""
    from microseg.ingest import expand_paths, ingest_paths, split_due

    due, held = split_due(expand_paths([settings.landing_dir]), as_of)
    if not due:
        raise InputError(
            f"no delivery due by {as_of} in {settings.landing_dir}"
            + (f" (held for later nights: {', '.join(p.name for p in held)})" if held else "")
        )
    _refuse_far_nights(settings, as_of, due)
    results = ingest_paths(settings, due)
    rejected = [r for r in results if r.status == "rejected"]
    if rejected:
        raise DataQualityError("; ".join(str(r.error) for r in rejected))
    loaded = [r for r in results if r.status == "loaded"]
    rows = sum(r.rows_loaded for r in loaded)
    summary = (
        f"ingest: {len(loaded)} new file(s), {rows:,} events loaded from {settings.landing_dir}"
    )
    if held:
        summary += f"; {len(held)} held for later nights ({', '.join(p.name for p in held)})"
    quiet = _check_quiet_days(settings, as_of)
    return summary + (f"\n{quiet}" if quiet else "")


def _newest_event_day(settings: Settings, as_of: date) -> date | None:
    """The newest day with events before the night of `as_of` in raw.events."""
    from microseg.warehouse import connect

    if not settings.warehouse_path.exists():
        return None
    with connect(settings, read_only=True) as con:
        return con.execute(
            "select max(event_at)::date from raw.events where event_at < ?", [as_of]
        ).fetchone()[0]


def _quiet_days(as_of: date, newest: date | None) -> int | None:
    """Days without events between the newest event day and the night of `as_of`."""
    return None if newest is None else (as_of - newest).days - 1


def _nothing_to_build(settings: Settings, as_of: date, newest: date | None) -> NothingToRunError:
    limit = settings.quiet_days_max
    since = f"the newest is on {newest}" if newest else "there are none before it"
    return NothingToRunError(
        f"nothing to build for {as_of}: no events in the {limit} days before it ({since}; "
        f"MICROSEG_QUIET_DAYS_MAX={limit}); to build an earlier night, run it with its own "
        "as-of date"
    )


def _refuse_far_nights(settings: Settings, as_of: date, due: list[Path]) -> None:
    """Before loading anything: a night far after the newest dated delivery (the first
    scheduled Airflow run after loading historical data) loads nothing, so that it cannot
    take deliveries away from the earlier nights they belong to. Undated files are loaded
    first and judged by their events."""
    from microseg.ingest import delivery_date

    dated = [delivery_date(p) for p in due]
    if any(day is None for day in dated):
        return
    known = [day for day in (*dated, _newest_event_day(settings, as_of)) if day]
    newest = max(known, default=None)  # a delivery dated D holds the events of day D
    quiet = _quiet_days(as_of, newest)
    if quiet is None or quiet > settings.quiet_days_max:
        raise _nothing_to_build(settings, as_of, newest)


def _check_quiet_days(settings: Settings, as_of: date) -> str | None:
    """Decide whether the night of `as_of` goes ahead when the days before it had no events,
    and record it in raw.nights when it does (features then extend to it: people are still
    people on a quiet day). Returns a warning naming the quiet days, or None.

    More quiet days than MICROSEG_QUIET_DAYS_MAX: nothing to build (a scheduled run long after
    the data, or before it arrived); with MICROSEG_MISSING_DELIVERY=error any quiet day fails.
    """
    from microseg.warehouse import connect

    newest = _newest_event_day(settings, as_of)
    quiet = _quiet_days(as_of, newest)
    if quiet is None or newest is None or quiet > settings.quiet_days_max:
        raise _nothing_to_build(settings, as_of, newest)
    days = [newest + timedelta(days=i) for i in range(1, quiet + 1)]
    named = ", ".join(d.isoformat() for d in days[:3]) + (" ..." if len(days) > 3 else "")
    if days and settings.missing_delivery == "error":
        raise DataQualityError(
            f"no events on {named} (a missing delivery?); MICROSEG_MISSING_DELIVERY=error"
        )
    with connect(settings) as con:
        con.execute("insert or ignore into raw.nights values (?)", [as_of])
    if not days:
        return None
    return (
        f"warning: no events on {named} (a missing delivery?): features carried forward "
        f"to {as_of}; set MICROSEG_MISSING_DELIVERY=error to stop such a night instead"
    )


def validate_step(settings: Settings, as_of: date) -> str:
    """Raw-event expectations; a failure names each failed expectation."""
    from microseg.quality import validate_raw

    report = validate_raw(settings, as_of=as_of)
    if not report.success:
        raise DataQualityError(report.summary().replace("\n", " | "))
    return "validate: raw_events and raw_load_manifest expectations passed"


def transform_step(settings: Settings, _as_of: date, *, full_refresh: bool = False) -> str:
    from microseg.transform import transform

    counts = transform(settings, full_refresh=full_refresh)
    return "transform: " + ", ".join(f"{n:,} {label}" for label, n in counts.items())


def export_raw_step(settings: Settings, _as_of: date) -> str:
    """Before the dbt layers on the Spark engine: the raw tables as the Parquet Spark reads."""
    from microseg.lake import export_raw, require_java

    require_java()
    written = export_raw(settings)
    return "export raw to Parquet: " + ", ".join(f"{n:,} {t}" for t, n in written.items())


def serve_spark_step(settings: Settings, _as_of: date) -> str:
    """After the dbt layers on the Spark engine: Spark's tables copied into DuckDB, which
    serves every later step."""
    from microseg.transform import serve_spark

    serve_spark(settings)
    return "serve: the Spark build's tables are in DuckDB's warehouse"


def validate_features_step(settings: Settings, as_of: date) -> str:
    """Feature expectations (nulls, ranges, row-count drift) before anything reads them."""
    from microseg.quality import validate_features

    report = validate_features(settings, as_of)
    if not report.success:
        raise DataQualityError(report.summary().replace("\n", " | "))
    return f"validate features: user_features expectations passed for {as_of}"


def score_step(settings: Settings, as_of: date) -> str:
    """Score with every champion; before the first promotion there is nothing to score."""
    from ml.score import score

    written = score(settings, as_of)
    if not written:
        return "score: no champion model yet (models_weekly trains and promotes)"
    lines = ["score: " + ", ".join(f"{n:,} people by {m}" for m, n in written.items())]
    due = [f"retrain: {line}" for _, _, line in retraining_due(settings, as_of)]
    return "\n".join(lines + drift_summaries(settings, as_of) + due)


def drift_summaries(settings: Settings, as_of: date) -> list[str]:
    """The scoring's drift lines for the date (ml/monitoring.py)."""
    from microseg.warehouse import connect, has_table
    from ml.monitoring import summaries

    with connect(settings, read_only=True) as con:
        if not has_table(con, "marts", "model_monitoring"):
            return []
        return summaries(con, as_of)


def retraining_due(settings: Settings, as_of: date) -> list[tuple[str, str, str]]:
    """(model, version, line) of the champions whose drift against their training set
    reached their spec's retrain_psi on the date (ml/monitoring.py)."""
    from microseg.warehouse import connect, has_table
    from ml.monitoring import retraining_due as due
    from ml.specs import load_spec, spec_names

    specs = [load_spec(name, settings.ml_specs_dir) for name in spec_names(settings.ml_specs_dir)]
    levels = {s.name: s.monitoring.retrain for s in specs if s.monitoring.retrain is not None}
    with connect(settings, read_only=True) as con:
        if not has_table(con, "marts", "model_monitoring"):
            return []
        return due(con, as_of, levels)


def request_retraining_step(settings: Settings, as_of: date) -> str:
    """Airflow: succeeds (and so updates the model-drift asset that starts models_weekly)
    when a champion drifted past its retrain_psi tonight, once per champion version (the
    version's tag records the request: a re-run, a clear or a backfill asks nothing again);
    otherwise nothing to do."""
    from ml import registry

    due = retraining_due(settings, as_of)
    client = registry.client(settings) if due else None
    new = [
        (model, version, line)
        for model, version, line in due
        if registry.RETRAIN_REQUEST_TAG not in client.get_model_version(model, version).tags
    ]
    if not new:
        asked = f" (already requested for {', '.join(f'{m} v{v}' for m, v, _ in due)})"
        raise NothingToRunError(
            f"no champion drifted past its retrain_psi on {as_of}" + (asked if due else "")
        )
    for model, version, _ in new:
        client.set_model_version_tag(
            model, version, registry.RETRAIN_REQUEST_TAG, as_of.isoformat()
        )
    return "\n".join(f"retrain: {line}: models_weekly starts" for _, _, line in new)


def cluster_step(settings: Settings, as_of: date) -> str:
    """Behavioral clusters; too few active people to cluster is a notice, not a failure
    (a cluster segment then says that no clusters exist for the date)."""
    from ml.cluster import cluster

    try:
        result = cluster(settings, as_of)
    except DataQualityError as exc:
        return f"cluster: skipped: {exc}"
    names = ", ".join(f"{result.labels[i]} {n:,}" for i, n in result.members.items())
    return f"cluster: k={result.k} ({result.matched} kept yesterday's name): {names}"


def recommend_step(settings: Settings, as_of: date) -> str:
    """Each recommender champion's top K per person (after clusters: people without history
    get their cluster's favorites); before the first promotion there is nothing to write."""
    from ml.recommend.serve import write_recommendations

    written = write_recommendations(settings, as_of)
    if not written:
        return "recommend: no recommender champion yet (microseg recommend train, then promote)"
    return "recommend: " + ", ".join(f"{n:,} rows by {m}" for m, n in written.items())


def segments_step(settings: Settings, as_of: date) -> str:
    """Segments as of D; the triggers of the day before are evaluated in the same dbt build
    (the activate step reuses it). Triggers that cannot be evaluated (a bad triggers.yml,
    missing scores) leave the segments alone: the activate step stops on it."""
    from microseg.activation.run import night_evaluation
    from microseg.segments import run_segments

    try:
        triggers, skipped = night_evaluation(settings, as_of), ""
    except MicrosegError as exc:
        triggers, skipped = None, f"; triggers not evaluated: {exc}"
    run = run_segments(settings, as_of, triggers=triggers)
    members = ", ".join(f"{name} {n:,}" for name, n in run.members.items())
    evaluated = f"; triggers of {triggers.window.start:%Y-%m-%d} evaluated" if triggers else skipped
    return f"segments: {members}{evaluated}"


def activate_step(settings: Settings, as_of: date) -> str:
    """The night's triggers (the day before D): fire, cap, queue and deliver."""
    from microseg.activation import activate

    return _activation_summary(activate(settings, as_of))


def experiments_step(settings: Settings, as_of: date) -> str:
    """The experiments of experiments.yml analyzed as of D (after the night's activation)."""
    from microseg.experiments.analyze import analyze
    from microseg.experiments.grammar import load_configured_experiments

    decisions = analyze(settings, load_configured_experiments(settings), as_of)
    return "experiments: " + (
        "; ".join(
            f"{d.experiment}: {d.decision} ({d.exposed:,} exposed"
            + (f"; lift over time: {d.plot})" if d.plot else ")")
            for d in decisions
        )
        or "none declared"
    )


def ingest_landed_step(settings: Settings, cutoff: datetime) -> str:
    """The activation DAG's first task: load files landed since the last batch (any dated up
    to the cutoff's day, for the triggers; the nightly run goes on loading by its own dates).
    Nothing new: the model update is skipped, the triggers are still evaluated (a wait such as
    15 minutes without checkout ends with no new event)."""
    from microseg.ingest import expand_paths, ingest_paths, split_due

    due, _ = split_due(expand_paths([settings.landing_dir]), cutoff.date() + timedelta(days=1))
    results = ingest_paths(settings, due) if due else []
    rejected = [r for r in results if r.status == "rejected"]
    if rejected:
        raise DataQualityError("; ".join(str(r.error) for r in rejected))
    rows = sum(r.rows_loaded for r in results if r.status == "loaded")
    if not rows:
        raise NothingToRunError(f"no new events in {settings.landing_dir} by {cutoff:%H:%M}")
    return f"ingest: {rows:,} new events"


def activate_batch_step(settings: Settings, cutoff: datetime) -> str:
    """The activation DAG's last task: the triggers whose moment falls since the last batch."""
    from microseg.activation import Window, activate

    return _activation_summary(activate(settings, window=Window.since_last(settings, cutoff)))


def _activation_summary(run) -> str:
    sent = sum(n for statuses in run.delivered.values() for s, n in statuses.items() if s == "sent")
    return (
        f"activate {run.window.start:%Y-%m-%d %H:%M} to {run.window.cutoff:%Y-%m-%d %H:%M}: "
        f"{sum(run.fired.values()):,} firings, {run.queued:,} messages queued, "
        f"{sent:,} deliveries, {sum(run.suppressed.values()):,} suppressed"
        + (" (firings from the segments step's dbt build)" if run.reused_evaluation else "")
    )


def export_step(settings: Settings, as_of: date, audiences: list[str] | None = None) -> str:
    from microseg.export import export_audiences

    results = export_audiences(settings, as_of, audiences)
    return "export: " + ", ".join(
        f"{r.path} ({'; '.join(filter(None, [f'{r.rows:,} people', r.left_out_line()]))})"
        for r in results
    )


def expire_step(settings: Settings, as_of: date) -> str:
    """Retention: delete what the settings no longer allow to keep (privacy/retention.py)."""
    from microseg.privacy.retention import expire

    done = expire(settings, as_of)
    events = (
        f"{done.events:,} events of sessions ended before {done.events_before} "
        f"(+ {done.unbuilt_events:,} never built into one)"
        if done.events_before
        else "raw events kept (MICROSEG_RAW_RETENTION_DAYS unset)"
    )
    return (
        f"expire: {events}; {done.quarantined:,} quarantined lines of files loaded over "
        f"{settings.quarantine_retention_days} days before {as_of}; "
        f"{done.landing_files:,} landing files emptied and deleted"
    )


def publish_step(settings: Settings, _as_of: date) -> str:
    from microseg.publish import publish

    counts = publish(settings)
    return f"publish: {sum(counts.values()):,} rows in {settings.analytics_path}"


def _is_recommender(settings: Settings, model: str) -> bool:
    from ml.specs import RECOMMENDATION, spec_names

    return model in spec_names(settings.ml_specs_dir, RECOMMENDATION)


def train_step(settings: Settings, _as_of: date | None, model: str) -> str:
    """Weekly: train one model (a scoring model or a recommender) from its spec; it becomes
    the challenger."""
    if _is_recommender(settings, model):
        from ml.recommend.train import describe_training, train_recommender

        return describe_training(train_recommender(settings, model))
    from ml.train import describe, train

    return describe(train(settings, model))


def promote_step(settings: Settings, _as_of: date | None, model: str) -> str:
    """Weekly: the gate (beat the champion on the same holdout; scoring models also pass the
    fairness audit, recommenders beat popularity)."""
    if _is_recommender(settings, model):
        from ml.recommend.train import promote_recommender

        return promote_recommender(settings, model).summary()
    from ml.promote import promote

    return promote(settings, model).summary()


def run_batch(settings: Settings, cutoff: datetime, report: Callable[[str], None] = print) -> None:
    """Every activation step for one cutoff (what the activation DAG does)."""
    try:
        report(ingest_landed_step(settings, cutoff))
        report(transform_step(settings, cutoff.date()))
    except NothingToRunError as exc:
        report(f"ingest: {exc}")
    report(activate_batch_step(settings, cutoff))


def run_nightly(
    settings: Settings,
    as_of: date,
    *,
    full_refresh: bool = False,
    audiences: list[str] | None = None,
    report: Callable[[str], None] = print,
) -> None:
    """Every nightly step in order for one as-of date (what behavior_nightly does)."""
    report(ingest_step(settings, as_of))
    report(validate_step(settings, as_of))
    report(transform_step(settings, as_of, full_refresh=full_refresh))
    report(validate_features_step(settings, as_of))
    report(score_step(settings, as_of))
    report(cluster_step(settings, as_of))
    report(recommend_step(settings, as_of))
    report(segments_step(settings, as_of))
    report(activate_step(settings, as_of))
    report(experiments_step(settings, as_of))
    report(export_step(settings, as_of, audiences))
    report(expire_step(settings, as_of))
    report(publish_step(settings, as_of))
