"""`microseg activate`: evaluate triggers for a window, decide, queue and deliver.

One run covers the window [start, cutoff): dbt writes the window's firings
(marts.trigger_firings); caps.decide turns them into messages (marts.activation_outbox, one
per firing, keyed by a hash of person, trigger and firing moment) and suppressions
(marts.trigger_suppressions, with the reason); then every destination gets the messages not
yet delivered to it, and marts.activation_deliveries records the outcome per message and
destination. A delivered message is final: a re-run of the window decides again only what was
not delivered, and never delivers a key twice to a destination.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pandas as pd

from microseg.activation.caps import CANDIDATE_COLUMNS, country_time_zone, decide, relevance
from microseg.activation.delivery import FINAL_KEYS, deliver_pending
from microseg.activation.grammar import TriggerFile, load_triggers
from microseg.config import Settings
from microseg.errors import ConfigError, UsageError
from microseg.experiments.arms import (
    EXPOSING_SQL,
    apply_arms,
    ensure_experiment_tables,
    held_out,
    route_arm_triggers,
)
from microseg.experiments.grammar import load_configured_experiments
from microseg.privacy import consent_policy
from microseg.segments.run import require_scores, schema_var

TRIAL_SCHEMA = "activation_trial"  # where a dry run writes its firings
HISTORY_DAYS = 31  # caps look back at most 30 days; re-eligibility as far as that too

ACTIVATION_DDL = (
    """create table if not exists marts.activation_runs (
        cutoff timestamp primary key,
        window_start timestamp not null,
        fired integer not null,  -- firings in the window
        queued integer not null,  -- messages in the window, whichever run queued them
        finished_at timestamp not null
    )""",
    """create table if not exists marts.trigger_evaluations (
        cutoff timestamp primary key,  -- the window trigger_firings was last built for
        window_start timestamp not null,
        person_as_of date not null,
        plan_sha256 varchar not null,  -- of the triggers' plan (triggers.yml as validated)
        evaluated_at timestamp not null
    )""",
    """create table if not exists marts.activation_outbox (
        idempotency_key varchar primary key,
        trigger_name varchar not null,
        person_id varchar not null,
        session_id varchar not null,
        fired_at timestamp not null,
        channel varchar not null,
        purpose varchar,
        priority integer not null,
        relevance double not null,
        destinations varchar[] not null,
        payload json not null,
        queued_for timestamp not null
    )""",
    """create table if not exists marts.trigger_suppressions (
        trigger_name varchar not null,
        person_id varchar not null,
        session_id varchar not null,
        fired_at timestamp not null,
        reason varchar not null,
        relevance double not null,
        decided_for timestamp not null,
        primary key (trigger_name, person_id, fired_at)
    )""",
    """create table if not exists marts.activation_deliveries (
        idempotency_key varchar not null,
        destination varchar not null,
        status varchar not null,
        attempts integer not null,
        response_code integer,
        latency_ms double,
        error varchar,
        delivered_for timestamp not null,
        recorded_at timestamp not null,
        primary key (idempotency_key, destination)
    )""",
    """create table if not exists marts.activation_dead_letters (
        idempotency_key varchar not null,
        destination varchar not null,
        attempts integer not null,
        error varchar,
        payload json not null,
        recorded_at timestamp not null,
        primary key (idempotency_key, destination)
    )""",
)


@dataclass(frozen=True)
class Window:
    """The firing moments one run evaluates: [start, cutoff), UTC."""

    start: datetime
    cutoff: datetime

    @classmethod
    def night(cls, as_of: date) -> Window:
        """The nightly run for as-of date D covers the day before D."""
        cutoff = datetime.combine(as_of, time())
        return cls(cutoff - timedelta(days=1), cutoff)

    @classmethod
    def since_last(cls, settings: Settings, cutoff: datetime) -> Window:
        """A micro-batch: from the previous run's cutoff (at most a day back; the day's start
        for the first) to this one. A re-run of a cutoff gets the window it had."""
        from microseg.warehouse import connect, has_table

        cutoff = cutoff.replace(tzinfo=None, microsecond=0)
        floor = max(cutoff - timedelta(days=1), datetime.combine(cutoff.date(), time()))
        with connect(settings, read_only=True) as con:
            if not has_table(con, "marts", "activation_runs"):
                return cls(floor, cutoff)
            same, previous = con.execute(
                """select max(window_start) filter (where cutoff = $cutoff),
                          max(cutoff) filter (where cutoff < $cutoff)
                   from marts.activation_runs""",
                {"cutoff": cutoff},
            ).fetchone()
        if same is not None:
            return cls(same, cutoff)
        return cls(max(previous, cutoff - timedelta(days=1)) if previous else floor, cutoff)


@dataclass
class ActivationRun:
    window: Window
    fired: dict[str, int]
    suppressed: dict[str, int]  # reason -> firings
    queued: int
    delivered: dict[str, dict[str, int]] = field(default_factory=dict)  # destination -> status
    dry_run: bool = False
    reused_evaluation: bool = False  # the firings came from the segments step's dbt build


def idempotency_key(person_id: str, trigger: str, fired_at: datetime) -> str:
    text = f"{person_id}|{trigger}|{pd.Timestamp(fired_at).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def ensure_activation_tables(con) -> None:
    con.execute("create schema if not exists marts")
    for ddl in ACTIVATION_DDL:
        con.execute(ddl)
    ensure_experiment_tables(con)
    # outboxes from before consent by purpose (their rows have none: never sent)
    con.execute("alter table marts.activation_outbox add column if not exists purpose varchar")


@dataclass(frozen=True)
class Evaluation:
    """What dbt builds trigger_firings with for one window: the plan (triggers.yml), the window
    and the day whose features and scores person conditions read.

    The night's evaluation rides along in the segments step's dbt invocation (one dbt start-up a
    night, not two: pipeline.segments_step); it is recorded in marts.trigger_evaluations, and
    the activate step that follows reuses it while it is current (same window, plan and person
    day; no events loaded since). Anything else evaluates in its own invocation."""

    triggers: TriggerFile
    window: Window
    person_as_of: date
    schema: str

    @classmethod
    def prepare(
        cls, settings: Settings, triggers: TriggerFile, window: Window, schema: str = "marts"
    ) -> Evaluation:
        """Checks what the firings read (raw events kept long enough, the scores of the person
        day) before dbt starts."""
        from microseg.privacy.retention import check_event_lookback, reading_events
        from microseg.warehouse import connect, latest_as_of

        check_event_lookback(settings, reading_events([], triggers.triggers))
        # the person as of the run date, or (a micro-batch before the night ran) the latest night
        person_as_of = min(window.cutoff.date(), latest_as_of(settings))
        with connect(settings) as con:
            ensure_activation_tables(con)
            require_scores(
                con,
                {m: f"trigger '{t.name}'" for t in triggers.triggers for m in t.score_models},
                person_as_of,
            )
        return cls(triggers, window, person_as_of, schema)

    @property
    def plan(self) -> str:
        return json.dumps([t.plan for t in self.triggers.triggers], sort_keys=True)

    @property
    def models(self) -> list[str]:
        """The dbt selection: the report and the exposures are views (current after delivery);
        a dry run needs neither."""
        return ["trigger_firings"] if self.schema == TRIAL_SCHEMA else ["path:models/activation"]

    @property
    def run_values(self) -> dict:
        """What trigger_firings reads while it runs (run_dbt's run_values)."""
        return {
            "trigger_plan": [t.plan for t in self.triggers.triggers],
            "trigger_window_start": self.window.start.isoformat(sep=" "),
            "trigger_cutoff": self.window.cutoff.isoformat(sep=" "),
            "trigger_person_as_of": self.person_as_of.isoformat(),
        }

    @property
    def schemas(self) -> dict[str, str]:
        """The var a dry run's schema needs (a production run passes none)."""
        return schema_var("activation_schema", self.schema)

    def _key(self) -> dict:
        return {
            "cutoff": self.window.cutoff,
            "start": self.window.start,
            "person_as_of": self.person_as_of,
            "plan": hashlib.sha256(self.plan.encode()).hexdigest(),
        }

    def record(self, settings: Settings) -> None:
        """After dbt built the firings: what they were built with, and when. An earlier
        evaluation of an overlapping window (a micro-batch's inside the night's) no longer
        describes all of its firings: it is forgotten."""
        from microseg.warehouse import connect

        if self.schema != "marts":
            return
        with connect(settings) as con:
            con.begin()
            con.execute(
                """delete from marts.trigger_evaluations
                   where window_start < $cutoff and cutoff > $start""",
                {"cutoff": self.window.cutoff, "start": self.window.start},
            )
            con.execute(
                """insert into marts.trigger_evaluations
                   values ($cutoff, $start, $person_as_of, $plan, now()::timestamp)""",
                self._key(),
            )
            con.commit()

    def is_current(self, con) -> bool:
        """Recorded with this window, person day and plan, and no events loaded since."""
        from microseg.warehouse import has_table

        return (
            self.schema == "marts"
            and has_table(con, "raw", "load_manifest")
            and con.execute(
                """select count(*) from marts.trigger_evaluations
                   where cutoff = $cutoff and window_start = $start
                     and person_as_of = $person_as_of and plan_sha256 = $plan
                     and evaluated_at > (select coalesce(max(loaded_at), '-infinity'::timestamp)
                                         from raw.load_manifest where rows_loaded > 0)""",
                self._key(),
            ).fetchone()[0]
            > 0
        )


def night_evaluation(settings: Settings, as_of: date) -> Evaluation:
    """The configured triggers over the night before as-of date D (what `activate` decides)."""
    from microseg.warehouse import features_as_of

    triggers = load_triggers(settings.triggers_file)
    return Evaluation.prepare(settings, triggers, Window.night(features_as_of(settings, as_of)))


RECOMMENDATIONS_IN_PAYLOAD = 5
# Payload fields looked up per message, as of the run date (null when the step never ran)
PAYLOAD_LOOKUPS = {
    "top_category": (
        "fct_person_category_daily",
        """(select content_category from marts.fct_person_category_daily c
            where c.person_id = d.person_id
              and c.activity_date >= $as_of - interval 28 day and c.activity_date < $as_of
            group by content_category order by sum(engaged_s) desc, content_category limit 1)""",
    ),
    "scores": (
        "user_scores",
        """(select json_group_object(model_name, round(coalesce(decayed_score, score), 6))
            from marts.user_scores s
            where s.person_id = d.person_id and s.as_of_date = $as_of)""",
    ),
    # why each champion scored the person so (user_scores.explanation: three features)
    "score_explanations": (
        "user_scores",
        """(select json_group_object(model_name, explanation)
            from marts.user_scores s
            where s.person_id = d.person_id and s.as_of_date = $as_of)""",
    ),
    # each recommender's top RECOMMENDATIONS_IN_PAYLOAD items (marts.user_recommendations)
    "recommendations": (
        "user_recommendations",
        f"""(select json_group_object(model_name, items) from (
                select model_name, list(item_id order by rank) as items
                from marts.user_recommendations r
                where r.person_id = d.person_id and r.as_of_date = $as_of
                  and r.rank <= {RECOMMENDATIONS_IN_PAYLOAD}
                group by model_name))""",
    ),
    "segments": (
        "segment_memberships",
        """(select list(segment_name order by segment_name) from marts.segment_memberships m
            where m.person_id = d.person_id and m.as_of_date = $as_of)""",
    ),
}


def _present(value):
    """None for SQL null however pandas spells it (None, NA, NaN)."""
    missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    return None if missing else value


def _payloads(con, decided: pd.DataFrame, triggers: TriggerFile, schema: str, as_of: date):
    """The message body per decided firing: the trigger's payload fields and its identity."""
    from microseg.warehouse import has_table

    lookups = ", ".join(
        f"{sql if has_table(con, 'marts', table) else 'null'} as {name}"
        for name, (table, sql) in PAYLOAD_LOOKUPS.items()
    )
    con.register("decided", decided)
    rows = con.execute(
        f"""select d.*, f.evidence, f.thresholds, {lookups}
            from decided d
            join {schema}.trigger_firings f using (trigger_name, person_id, fired_at)
            order by d.fired_at, d.person_id, d.trigger_name""",
        {"as_of": as_of} if "$as_of" in lookups else None,
    ).df()
    con.unregister("decided")
    by_name = {t.name: t for t in triggers.triggers}
    bodies = []
    for row in rows.itertuples(index=False):
        trigger = by_name[row.trigger_name]
        body = {
            "idempotency_key": idempotency_key(row.person_id, row.trigger_name, row.fired_at),
            "trigger": row.trigger_name,
            "title": trigger.title,
            "channel": trigger.channel,
            "purpose": trigger.purpose,
            "person_id": row.person_id,
            "session_id": row.session_id,
            "fired_at": pd.Timestamp(row.fired_at).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "relevance": round(float(row.relevance), 6),
            "thresholds": json.loads(row.thresholds),
        }
        fields = {
            "evidence": lambda r: json.loads(r.evidence),
            "top_category": lambda r: _present(r.top_category),
            "scores": lambda r: json.loads(_present(r.scores) or "{}"),
            "score_explanations": lambda r: json.loads(_present(r.score_explanations) or "{}"),
            "recommendations": lambda r: json.loads(_present(r.recommendations) or "{}"),
            "segments": lambda r: [] if _present(r.segments) is None else list(r.segments),
        }
        for name in trigger.payload:
            body[name] = fields[name](row)
        if _present(row.experiment) is not None:  # a treatment arm
            body["experiment"] = {"name": row.experiment, "arm": row.arm}
        variant = _present(row.variant) or trigger.variant
        if variant is not None:  # the content to show: the arm's, else the trigger's
            body["variant"] = variant
        bodies.append(body)
    rows["payload"] = [json.dumps(b, sort_keys=True) for b in bodies]
    rows["idempotency_key"] = [b["idempotency_key"] for b in bodies]
    return rows


def activate(
    settings: Settings,
    as_of: date | None = None,
    *,
    window: Window | None = None,
    dry_run: bool = False,
    triggers_file: Path | None = None,
) -> ActivationRun:
    """Evaluate, decide and deliver the triggers of triggers.yml for one window (default: the
    night before the as-of date). A dry run writes its firings to activation_trial and
    decides, but queues and delivers nothing."""
    from microseg.transform import run_dbt
    from microseg.warehouse import connect, features_as_of, require_warehouse

    if triggers_file is not None and not dry_run:
        raise UsageError(
            "--file needs --dry-run: messages go out only for the configured triggers file "
            f"({settings.triggers_file}; MICROSEG_TRIGGERS_FILE)"
        )
    triggers = load_triggers(triggers_file or settings.triggers_file)
    experiments = load_configured_experiments(settings)
    for destination in triggers.destinations.values():
        if destination.type == "webhook":
            try:  # a missing secret stops the run before anything is decided
                destination.secret()
            except ConfigError as exc:
                raise ConfigError(f"{triggers.path.name}: {exc}") from None
    require_warehouse(settings)
    if window is None:
        window = Window.night(features_as_of(settings, as_of))
    evaluation = Evaluation.prepare(
        settings, triggers, window, TRIAL_SCHEMA if dry_run else "marts"
    )
    with connect(settings, read_only=True) as con:
        reused = evaluation.is_current(con)
    if not reused:
        run_dbt(
            settings,
            "build",
            "--select",
            *evaluation.models,
            run_values=evaluation.run_values,
            schemas=evaluation.schemas,
        )
        evaluation.record(settings)
    schema, person_as_of = evaluation.schema, evaluation.person_as_of
    with connect(settings, read_only=dry_run) as con:
        if not dry_run:
            con.begin()  # the window's decisions are written whole or not at all
            _forget_undelivered(con, window)
        decided, fired, assignments = _decide(con, schema, window, triggers, experiments)
        suppressed = decided[decided.reason.notna()]
        messages = decided[decided.reason.isna()].drop(columns="reason")
        result = ActivationRun(
            window,
            fired,
            suppressed.reason.value_counts().to_dict(),
            len(messages),
            dry_run=dry_run,
            reused_evaluation=reused,
        )
        if dry_run:
            return result
        _record(con, suppressed, messages, triggers, schema, window, person_as_of)
        if assignments:  # sticky: a person keeps the arm of their first assignment
            con.executemany(
                """insert or ignore into marts.experiment_assignments
                   (experiment, person_id, arm, bucket, trigger_name, assigned_at)
                   values (?, ?, ?, ?, ?, ?)""",
                assignments,
            )
        con.commit()
        result.delivered = deliver_pending(con, settings, triggers, window)
        con.execute(  # the window as it now stands (a re-run records the same)
            """insert or replace into marts.activation_runs
               select $cutoff, $start, $fired, count(*), now()::timestamp
               from marts.activation_outbox where fired_at >= $start and fired_at < $cutoff""",
            {"cutoff": window.cutoff, "start": window.start, "fired": sum(result.fired.values())},
        )
    return result


def _forget_undelivered(con, window: Window) -> None:
    """What is final stays as it was: a message with an outcome at some destination (sent,
    rejected, dead letter), and a suppression that is an exposure (a control arm's withheld
    message, another arm's definition acting). Everything else in the window is decided
    anew."""
    params = [window.start, window.cutoff]
    con.execute(
        f"""delete from marts.activation_outbox
            where fired_at >= ? and fired_at < ?
              and idempotency_key not in ({FINAL_KEYS})""",
        params,
    )
    con.execute(
        f"""delete from marts.trigger_suppressions
           where fired_at >= ? and fired_at < ? and not {EXPOSING_SQL}""",
        params,
    )


def _decide(con, schema: str, window: Window, triggers: TriggerFile, experiments):
    """The window's firings not yet messages, decided against the messages around them (the
    holdout first, experiments' arms last: microseg/experiments/arms.py); and the number of
    firings per trigger. A session whose firing of a trigger already became a message (or an
    exposing suppression) is not decided again, even if a later look moved its moment."""
    by_name = {t.name: t for t in triggers.triggers}
    params = [window.start, window.cutoff]
    firings = con.execute(
        f"""select trigger_name, person_id, session_id, fired_at
            from {schema}.trigger_firings
            where fired_at >= ? and fired_at < ?
              and (trigger_name, session_id) not in (
                  select (trigger_name, session_id) from marts.activation_outbox
                  union all
                  select (trigger_name, session_id) from marts.trigger_suppressions
                  where {EXPOSING_SQL})
            order by all""",
        params,
    ).df()
    firings = firings[firings.trigger_name.isin(by_name)]
    # what counts toward caps: messages, and a control arm's would-be messages (both arms
    # must meet the same caps for the experiment to compare like with like); and for the
    # firings of another arm's definition, also the earlier ones of those that would have acted
    near = {"start": window.start, "cutoff": window.cutoff}
    history = f"""fired_at >= $start - interval {HISTORY_DAYS} day
                  and fired_at < $cutoff + interval {HISTORY_DAYS} day"""
    accepted_before = con.execute(
        f"""select {", ".join(CANDIDATE_COLUMNS)} from marts.activation_outbox where {history}
            union all
            select {", ".join(CANDIDATE_COLUMNS)} from marts.trigger_suppressions
            where reason like 'experiment_control:%' and {history}""",
        near,
    ).df()
    other_arms_before = con.execute(
        f"""select {", ".join(CANDIDATE_COLUMNS)} from marts.trigger_suppressions
            where reason like 'experiment_arm:%' and {history}""",
        near,
    ).df()
    persons = con.execute("select person_id, latest_country from marts.dim_persons").df()
    experiments_purpose = consent_policy().purpose_of["experiments"]
    con.register(
        "wanted_consent",
        pd.DataFrame(
            {
                "person_id": [*firings.person_id, *firings.person_id],
                "purpose": [
                    *(by_name[n].purpose for n in firings.trigger_name),
                    *([experiments_purpose] * len(firings)),
                ],
            },
            dtype=object,
        ),
    )
    unconsented = set(
        con.execute(
            "select distinct person_id, purpose from wanted_consent "
            "where not marts.has_consent(person_id, purpose, ?::timestamp)",
            [window.cutoff],
        ).fetchall()
    )
    con.unregister("wanted_consent")
    zones = {
        p: country_time_zone(c)
        for p, c in zip(persons.person_id, persons.latest_country, strict=True)
    }
    held = held_out(firings.person_id, experiments.holdout)
    known = {
        (e, p): arm
        for e, p, arm in con.execute(
            "select experiment, person_id, arm from marts.experiment_assignments"
        ).fetchall()
    }
    not_in_experiments = {p for p, purpose in unconsented if purpose == experiments_purpose}
    candidates, other_arm, silenced, routed = route_arm_triggers(
        firings[~held], experiments, known, not_in_experiments
    )

    def decided_by_the_rules(frame: pd.DataFrame, accepted: pd.DataFrame) -> pd.DataFrame:
        return decide(frame, accepted, by_name, triggers.caps, window.cutoff, unconsented, zones)

    decided = decided_by_the_rules(candidates, accepted_before)
    # another arm's definition firing: the person's exposure where the rules let it through,
    # judged after this window's messages (as a re-run, which finds them in the outbox, does)
    accepted = pd.concat(
        [accepted_before, other_arms_before, decided[decided.reason.isna()][CANDIDATE_COLUMNS]]
    )
    would_act = decided_by_the_rules(other_arm, accepted).merge(
        other_arm[["trigger_name", "session_id", "reason"]].rename(columns={"reason": "exposure"}),
        on=["trigger_name", "session_id"],
    )
    would_act["reason"] = would_act.reason.where(would_act.reason.notna(), would_act.exposure)
    would_act = would_act.drop(columns="exposure")
    decided, assignments = apply_arms(decided, experiments, known, not_in_experiments)
    set_aside = pd.concat([firings[held].assign(reason="holdout"), silenced])
    set_aside = set_aside.assign(
        relevance=[
            relevance(window.cutoff - t.to_pydatetime(), by_name[n].half_life_minutes)
            for n, t in zip(set_aside.trigger_name, set_aside.fired_at, strict=True)
        ],
        priority=[by_name[n].priority for n in set_aside.trigger_name],
    )
    no_arm = dict.fromkeys(("experiment", "arm", "variant"))
    decided = pd.concat(
        [decided, would_act.assign(**no_arm), set_aside.assign(**no_arm)], ignore_index=True
    )
    fired = con.execute(
        f"""select trigger_name, count(*) from {schema}.trigger_firings
            where fired_at >= ? and fired_at < ? group by all""",
        params,
    ).fetchall()
    return decided, dict(fired), routed + assignments


def _record(con, suppressed, messages, triggers, schema, window, person_as_of) -> None:
    """Suppressions with their reasons; messages with their payloads into the outbox."""
    by_name = {t.name: t for t in triggers.triggers}
    if len(suppressed):
        con.register("suppressed", suppressed.assign(decided_for=window.cutoff))
        con.execute(
            """insert into marts.trigger_suppressions by name
               select trigger_name, person_id, session_id, fired_at, reason, relevance,
                      decided_for from suppressed"""
        )
        con.unregister("suppressed")
    if len(messages):
        queued = _payloads(con, messages, triggers, schema, person_as_of)
        queued["channel"] = [by_name[n].channel for n in queued.trigger_name]
        queued["purpose"] = [by_name[n].purpose for n in queued.trigger_name]
        queued["destinations"] = [list(by_name[n].destinations) for n in queued.trigger_name]
        queued["queued_for"] = window.cutoff
        con.register("queued", queued)
        con.execute(
            """insert into marts.activation_outbox by name
               select idempotency_key, trigger_name, person_id, session_id, fired_at,
                      channel, purpose, priority, relevance, destinations,
                      payload::json as payload, queued_for from queued"""
        )
        con.unregister("queued")
