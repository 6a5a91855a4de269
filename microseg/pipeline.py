"""The nightly pipeline as one function per step, dated by the run's as-of date.

`microseg run --as-of D` calls the steps in order; each Airflow task of behavior_nightly calls
exactly one of them, so the scheduler and the command line run the same code. Every step is
idempotent for its date (re-running it gives the same tables) and returns a one-line summary.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from microseg.config import Settings
from microseg.errors import DataQualityError, InputError


def ingest_step(settings: Settings, as_of: date) -> str:
    """Load the landing folder's new files that are due by `as_of` (a file dated D waits for
    the night of D + 1: see ingest.split_due); a rejected file stops the run."""
    from microseg.ingest import expand_paths, ingest_paths, split_due

    due, held = split_due(expand_paths([settings.landing_dir]), as_of)
    if not due:
        raise InputError(
            f"no delivery due by {as_of} in {settings.landing_dir}"
            + (f" (held for later nights: {', '.join(p.name for p in held)})" if held else "")
        )
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
    return summary


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
    return "score: " + ", ".join(f"{n:,} people by {m}" for m, n in written.items())


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


def segments_step(settings: Settings, as_of: date) -> str:
    from microseg.segments import run_segments

    sizes = run_segments(settings, as_of)
    return "segments: " + ", ".join(f"{name} {n:,}" for name, n in sizes.items())


def export_step(settings: Settings, as_of: date, audiences: list[str] | None = None) -> str:
    from microseg.export import export_audiences

    results = export_audiences(settings, as_of, audiences)
    return "export: " + ", ".join(f"{r.path} ({r.rows:,} people)" for r in results)


def publish_step(settings: Settings, _as_of: date) -> str:
    from microseg.publish import publish

    counts = publish(settings)
    return f"publish: {sum(counts.values()):,} rows in {settings.analytics_path}"


def train_step(settings: Settings, _as_of: date, model: str) -> str:
    """Weekly: train one model from its spec; it becomes the challenger."""
    from ml.train import describe, train

    return describe(train(settings, model))


def promote_step(settings: Settings, _as_of: date, model: str) -> str:
    """Weekly: the gate (beat the champion on the same holdout, pass the fairness audit)."""
    from ml.promote import promote

    return promote(settings, model).summary()


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
    report(segments_step(settings, as_of))
    report(export_step(settings, as_of, audiences))
    report(publish_step(settings, as_of))
