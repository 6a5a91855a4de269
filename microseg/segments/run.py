"""Evaluate validated segments for one as-of date with dbt (models/segments), into the
production schema (marts) or, for a trial of another file, into segments_trial."""

from __future__ import annotations

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


def segment_run_values(segments: list[Segment], as_of: date) -> dict:
    """What the segment models read while they run (run_dbt's run_values): the validated plan
    and the as-of date."""
    return {"segment_plan": [s.plan for s in segments], "segment_as_of": as_of.isoformat()}


def schema_var(name: str, schema: str) -> dict[str, str]:
    """The var that moves a step's models into a trial schema (dbt_project.yml); none for
    marts, so production runs pass the same vars as every other run."""
    return {} if schema == "marts" else {name: schema}


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
    run_values = segment_run_values(segments, as_of)
    schemas = schema_var("segment_schema", schema)
    models = ["path:models/segments"]
    if triggers is not None:
        run_values |= triggers.run_values
        schemas |= triggers.schemas
        models += triggers.models
    run_dbt(settings, "build", "--select", *models, run_values=run_values, schemas=schemas)
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
