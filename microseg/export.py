"""Audience export: one segment on one as-of date as a consent-filtered CSV plus a manifest.

The audience itself is the dbt view marts.segment_audiences (members with marketing consent,
who they are, since when they are in); this module adds what depends on the run: the optional
score and recommendation columns, the holdout and the experiment arms.

The global holdout of experiments.yml is kept out of every audience, as out of every other
personalization, so that its comparison with everyone else measures all of it. On a day an
experiment targets the segment (experiments.yml `targeting: {segment: NAME}`), its participants
get their arm: a treatment arm's members are in the file with columns experiment, arm and
variant, a control arm's are left out; both are recorded as exposed that day
(microseg/experiments/arms.py).

Marketing opens these files in spreadsheets, so any text field that a spreadsheet would read
as a formula (leading =, +, -, @, tab or carriage return) is prefixed with a quote. The CSV is
written aside and renamed into place, and its manifest carries the checksum, so a reader never
sees half a file and can verify the one it has.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from microseg.config import Settings
from microseg.errors import ConfigError, UsageError
from microseg.experiments.arms import ensure_experiment_tables, expose_members, held_out, running
from microseg.experiments.grammar import Experiment, load_configured_experiments
from microseg.privacy import consent_policy
from microseg.warehouse import connect, has_table, require_warehouse

# Text columns that reach a spreadsheet; each is neutralized in SQL before writing.
TEXT_COLUMNS = (
    "person_id", "user_id", "segment_name", "segment_title", "device_type", "country", "variant"
)  # fmt: skip
FORMULA_START = r"^[=+\-@\t\r]"


@dataclass(frozen=True)
class ExportResult:
    segment: str
    as_of: date
    rows: int
    path: Path
    manifest_path: Path
    held_out: int = 0  # members left out as the global holdout (experiments.yml `holdout`)
    experiment: dict | None = None  # the running experiment: name, in_file and left_out per arm

    def left_out_line(self) -> str | None:
        """Who of the segment's consenting members is not in the file, and why: the global
        holdout, and while an experiment targets the segment what each arm got."""
        parts = [f"{self.held_out:,} left out as the global holdout"] if self.held_out else []
        if self.experiment is not None:
            arms = [f"{n:,} {arm} in the file" for arm, n in self.experiment["in_file"].items()]
            arms += [f"{n:,} {arm} left out" for arm, n in self.experiment["left_out"].items()]
            parts.append(f"experiment {self.experiment['name']}: {', '.join(arms) or 'no one'}")
        return "; ".join(parts) or None


def neutralized(column: str) -> str:
    return (
        f"case when regexp_matches({column}, '{FORMULA_START}') then '''' || {column} "
        f"else {column} end as {column}"
    )


def _require_rows(con, table: str, model: str, as_of: date, option: str, remedy: str) -> None:
    """One line naming the option and the remedy unless marts.<table> (user_scores,
    user_recommendations) has rows of `model` for `as_of`."""
    present = (
        has_table(con, "marts", table)
        and con.execute(
            f"select count(*) from marts.{table} where model_name = ? and as_of_date = ?",
            [model, as_of],
        ).fetchone()[0]
    )
    if not present:
        what = table.removeprefix("user_")
        raise ConfigError(f"{option}: no {model} {what} for {as_of} (run `{remedy}`)")


def export_audience(
    settings: Settings,
    segment: str,
    out: Path,
    *,
    as_of: date | None = None,
    min_score: float | None = None,
    score_model: str = "purchase_propensity",
    with_recommendations: int | None = None,
    recommendation_model: str = "recommend_content",
    excel: bool = False,
) -> ExportResult:
    """Write the members of `segment` on `as_of` (default: its latest evaluation) to `out`;
    `with_recommendations` K adds each person's top K items that night (a JSON list, empty
    for people without personalization consent); `excel` starts the file with a UTF-8 byte
    order mark, without which Excel on Windows reads it in the local code page and garbles
    non-ASCII names."""
    require_warehouse(settings)
    out = out.expanduser().resolve()
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: name the file, e.g. {out / segment}.csv")
    purpose = consent_policy().purpose_of["exports"]
    with connect(settings, read_only=True) as con:
        as_of, definition_hash = _evaluation(con, settings, segment, as_of)
        _require_audiences_for(con, purpose)
    experiments = load_configured_experiments(settings)
    experiment = running(experiments, segment, as_of, kind="segment")
    with connect(settings, read_only=experiment is None) as con:
        score_join, score_column = "", ""
        params: list = [segment, as_of]
        if min_score is not None:
            _require_rows(con, "user_scores", score_model, as_of, "--min-score", "microseg score")
            score_join = (
                "join marts.user_scores s on s.person_id = m.person_id "
                "and s.as_of_date = m.as_of_date and s.model_name = ? "
                "and coalesce(s.decayed_score, s.score) >= ?"
            )
            score_column = (
                ", round(coalesce(s.decayed_score, s.score), 6) as score"
                ", s.explanation::varchar as score_explanation"
            )
            params = [score_model, min_score, *params]
        recommendation_join, recommendation_column = "", ""
        if with_recommendations is not None:
            _require_rows(
                con,
                "user_recommendations",
                recommendation_model,
                as_of,
                "--with-recommendations",
                f"microseg recommend write --as-of {as_of}",
            )
            recommendation_join = """
            left join (
                select person_id, to_json(list(item_id order by rank)) as recommended_items
                from marts.user_recommendations
                where model_name = ? and as_of_date = ? and rank <= ?
                group by person_id
            ) r on r.person_id = m.person_id"""
            recommendation_column = (
                ", coalesce(r.recommended_items, '[]')::varchar as recommended_items"
            )
            at = 2 if min_score is not None else 0  # after the score join's parameters
            params[at:at] = [recommendation_model, as_of, with_recommendations]
        members = f"""
            select
                m.person_id, m.user_id, m.segment_name, m.segment_title, m.as_of_date,
                strftime(m.in_segment_since, '%Y-%m-%dT%H:%M:%SZ') as in_segment_since,
                strftime(m.last_seen_at, '%Y-%m-%dT%H:%M:%SZ') as last_seen_at,
                m.device_type, m.country,
                m.evidence::varchar as evidence{score_column}{recommendation_column}
                {{arm_columns}}
            from marts.segment_audiences m
            {score_join}{recommendation_join}{{arm_join}}
            where m.segment_name = ? and m.as_of_date = ?{{holdout_filter}}{{arm_filter}}
        """
        people = pd.Series(
            [row[0] for row in con.execute(_filtered(members), params).fetchall()], dtype=object
        )
        holdout = people[held_out(people, experiments.holdout).to_numpy()]
        con.register("held_out_members", holdout.to_frame("person_id"))
        arms = None
        if experiment is not None:
            ensure_experiment_tables(con)
            con.begin()  # the exposures are recorded with the file, or not at all
            arms = expose_members(con, experiments, experiment, people.tolist(), as_of)
            con.register("member_arms", arms)
        members = _filtered(members, holdout=True, arms=arms is not None)
        columns = [d[0] for d in con.execute(f"{members} limit 0", params).description]
        select_list = ", ".join(neutralized(c) if c in TEXT_COLUMNS else c for c in columns)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        literal_path = str(partial).replace("'", "''")
        try:
            con.execute(
                f"copy (select {select_list} from ({members}) order by person_id) "
                f"to '{literal_path}' (header, delimiter ',', quote '\"')",
                params,
            )
            rows = con.execute(f"select count(*) from ({members})", params).fetchone()[0]
            if excel:
                partial.write_bytes(codecs.BOM_UTF8 + partial.read_bytes())
            digest = hashlib.sha256(partial.read_bytes()).hexdigest()
            if arms is not None:
                con.commit()
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)  # never leave a hidden copy of an audience behind
    manifest = {
        "file": out.name,
        "segment": segment,
        "as_of_date": as_of.isoformat(),
        "rows": rows,
        "sha256": digest,
        "segment_definition_hash": definition_hash,
        "min_score": min_score,
        "score_model": score_model if min_score is not None else None,
        "recommendations": (
            {"model": recommendation_model, "k": with_recommendations}
            if with_recommendations is not None
            else None
        ),
        "columns": columns,
        "encoding": "utf-8-sig (with BOM, for Excel)" if excel else "utf-8",
        "consent": f"only people with {purpose} consent on the as-of date, and still",
        "held_out": len(holdout),
        "experiment": _arm_counts(experiment, arms),
    }
    manifest_path = out.with_name(out.name + ".manifest.json")
    partial.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    os.replace(partial, manifest_path)
    return ExportResult(
        segment,
        as_of,
        rows,
        out,
        manifest_path,
        held_out=len(holdout),
        experiment=_arm_counts(experiment, arms),
    )


def _filtered(members: str, *, holdout: bool = False, arms: bool = False) -> str:
    """The members query without the global holdout (held_out_members), and with the
    experiment's arms joined (member_arms: a control arm's left out), or neither."""
    parts = {
        "{holdout_filter}": (
            holdout,
            " and m.person_id not in (select person_id from held_out_members)",
        ),
        "{arm_columns}": (arms, ", a.experiment, a.arm, a.variant"),
        "{arm_join}": (arms, "\n            left join member_arms a on a.person_id = m.person_id"),
        "{arm_filter}": (arms, " and a.in_file is not false"),
    }
    for placeholder, (applies, sql) in parts.items():
        members = members.replace(placeholder, sql if applies else "")
    return members


def _arm_counts(experiment: Experiment | None, arms) -> dict | None:
    if experiment is None:
        return None
    counts = arms.groupby(["in_file", "arm"]).size()
    return {
        "name": experiment.name,
        "in_file": {arm: int(n) for (kept, arm), n in counts.items() if kept},
        "left_out": {arm: int(n) for (kept, arm), n in counts.items() if not kept},
    }


def _require_audiences_for(con, purpose: str) -> None:
    """A one-line error when marts.segment_audiences was built for another consent purpose than
    dbt_project.yml now names for exports (changed since the last `microseg segments`)."""
    built_for = con.execute(
        "select consent_purpose from marts.segment_audiences limit 1"
    ).fetchone()
    if built_for is not None and built_for[0] != purpose:
        raise UsageError(
            f"marts.segment_audiences checks {built_for[0]} consent, but dbt_project.yml now "
            f"names {purpose} for exports: run `microseg segments` to rebuild it"
        )


def _evaluation(con, settings: Settings, segment: str, as_of: date | None) -> tuple[date, str]:
    """(as-of date, definition hash) of the segment's evaluation on `as_of` (default: its
    newest), or a one-line error telling an unknown segment from a date it was not evaluated."""
    evaluated = con.execute(
        "select as_of_date, definition_hash from marts.segment_evaluations "
        "where segment_name = ? order by as_of_date desc",
        [segment],
    ).fetchall()
    if not evaluated:
        from microseg.segments import load_segments

        defined = [s.name for s in load_segments(settings.segments_file)]
        if segment not in defined:
            raise UsageError(
                f"segment {segment!r} does not exist ({settings.segments_file.name} defines: "
                f"{', '.join(defined)})"
            )
        raise UsageError(
            f"segment {segment!r} has not been evaluated yet (run `microseg segments`)"
        )
    if not has_table(con, "marts", "segment_audiences"):  # evaluated before the view existed
        raise UsageError("no segment audiences yet: run `microseg segments` once")
    if as_of is None:
        return evaluated[0]
    for day, definition_hash in evaluated:
        if day == as_of:
            return day, definition_hash
    raise UsageError(
        f"segment {segment!r} was not evaluated on {as_of} (newest: {evaluated[0][0]}; "
        f"run `microseg segments --as-of {as_of}`)"
    )


def export_audiences(
    settings: Settings, as_of: date, audiences: list[str] | None = None
) -> list[ExportResult]:
    """The nightly exports: `audiences` (default: the settings' list) as
    exports/<as_of>/<segment>.csv."""
    folder = settings.export_dir / as_of.isoformat()
    return [
        export_audience(settings, name, folder / f"{name}.csv", as_of=as_of)
        for name in (settings.export_audiences if audiences is None else audiences)
    ]
