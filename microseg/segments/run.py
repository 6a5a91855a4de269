"""Evaluate validated segments for one as-of date with dbt (models/segments), into the
production schema (marts) or, for a trial of another file, into segments_trial."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from microseg.config import Settings
from microseg.errors import ConfigError
from microseg.segments.grammar import Segment, load_segments

if TYPE_CHECKING:
    from microseg.activation.run import Evaluation


def require_scores(con, needs: dict[str, str], as_of: date) -> None:
    """Each model a definition compares with must have scores for the date; `needs` maps the
    model to who needs it ("segment 'x'", "trigger 'y'")."""
    from microseg.warehouse import has_table

    scored = set()
    if needs and has_table(con, "marts", "user_scores"):
        scored = {
            row[0]
            for row in con.execute(
                "select distinct model_name from marts.user_scores where as_of_date = ?", [as_of]
            ).fetchall()
        }
    for model, who in sorted(needs.items()):
        if model not in scored:
            raise ConfigError(
                f"{who}: score {model!r} has no scores for {as_of} (run `microseg score` first)"
            )


def _require_ml_outputs(settings: Settings, segments: list[Segment], as_of: date) -> None:
    """Score and cluster conditions need that day's scores and clusters."""
    from microseg.warehouse import connect, has_table

    needs_clusters = [s.name for s in segments if s.uses_clusters]
    with connect(settings, read_only=True) as con:
        require_scores(
            con, {model: f"segment '{s.name}'" for s in segments for model in s.score_models}, as_of
        )
        clustered = bool(
            needs_clusters
            and has_table(con, "marts", "person_clusters")
            and con.execute(
                "select count(*) from marts.person_clusters where as_of_date = ?", [as_of]
            ).fetchone()[0]
        )
    if needs_clusters and not clustered:
        raise ConfigError(
            f"segment '{needs_clusters[0]}': no clusters for {as_of} (run `microseg cluster`)"
        )


TRIAL_SCHEMA = "segments_trial"  # where a file other than the configured one is evaluated


@dataclass(frozen=True)
class SegmentRun:
    """What one evaluation wrote: members per segment, and where (marts, or the trial schema)."""

    as_of: date
    schema: str
    members: dict[str, int]


def segment_vars(settings: Settings, segments: list[Segment], as_of: date, schema: str) -> dict:
    """dbt --vars for the segment models. The plan itself goes in a JSON file that the models
    read (macros/segments.sql): on the command line it met YAML's quoting (an emoji in a title)
    and the argument-length limit (a few hundred segments)."""
    plan_file = settings.home / "dbt" / f"segment_plan_{schema}.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps([s.plan for s in segments]), "utf-8")
    return {
        "segment_as_of": as_of.isoformat(),
        "segment_plan_file": str(plan_file),
        "segment_schema": schema,
    }


def run_segments(
    settings: Settings,
    as_of: date | None = None,
    *,
    file: Path | None = None,
    triggers: Evaluation | None = None,
) -> SegmentRun:
    """Materialize every segment of the configured file for one as-of date.

    Re-running a date replaces that date's memberships; earlier dates stay as they were
    evaluated (that is the membership history). Any other `file` is a trial: it is evaluated
    into the schema segments_trial (emptied first), and production memberships do not change.
    `triggers`: the night's trigger firings, built in the same dbt invocation (recorded for
    the activate step that follows: microseg/activation/run.py, Evaluation).
    """
    from microseg.privacy.retention import check_event_lookback, reading_events
    from microseg.transform import run_dbt
    from microseg.warehouse import connect, features_as_of, require_warehouse

    source = settings.segments_file if file is None else file.expanduser().resolve()
    schema = "marts" if source == settings.segments_file else TRIAL_SCHEMA
    segments = load_segments(source)
    check_event_lookback(settings, reading_events(segments, []))
    require_warehouse(settings)
    as_of = features_as_of(settings, as_of)
    _require_ml_outputs(settings, segments, as_of)
    if schema == TRIAL_SCHEMA:
        with connect(settings) as con:
            con.execute(f"drop schema if exists {TRIAL_SCHEMA} cascade")
    dbt_vars = segment_vars(settings, segments, as_of, schema)
    models = ["path:models/segments"]
    if triggers is not None:
        dbt_vars |= triggers.dbt_vars(settings)
        models += triggers.models
    run_dbt(settings, "build", "--select", *models, "--vars", json.dumps(dbt_vars))
    if triggers is not None:
        triggers.record(settings)
    with connect(settings, read_only=True) as con:
        counts = dict(
            con.execute(
                f"select segment_name, members from {schema}.segment_daily_summary "
                "where as_of_date = ?",
                [as_of],
            ).fetchall()
        )
    return SegmentRun(as_of, schema, {s.name: counts.get(s.name, 0) for s in segments})
