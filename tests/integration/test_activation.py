"""Triggers end to end on the shared small warehouse (a copy): firings against the generator's
planted moments, re-runs, and delivery to a real signed-webhook receiver that fails on demand."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import monotonic, sleep

import duckdb
import pandas as pd
import pytest
import yaml

from microseg.activation import activate, load_triggers
from microseg.config import PROJECT_ROOT, Settings
from microseg.errors import ConfigError
from microseg.experiments.analyze import ONE_ARM_EXPOSURES, analyze, person_values
from microseg.experiments.arms import HOLDOUT_SALT
from microseg.experiments.assignment import bucket
from microseg.experiments.grammar import load_configured_experiments, load_experiments
from microseg.experiments.plot import lift_over_time
from microseg.export import export_audience
from microseg.generate import GeneratorConfig, generate
from microseg.generate.experiments import planted_effects
from microseg.ingest import ingest_paths
from microseg.pipeline import activate_step, run_batch, segments_step
from microseg.privacy import consent_policy
from microseg.segments import load_segments, run_segments
from microseg.transform import transform
from ml import cluster as ml_cluster
from ml import score as ml_score
from tests.helpers import query, run_cli, short_window_experiments, truth_connection
from tests.receiver import Receiver

NIGHTS = [date(2026, 10, 2) + timedelta(days=i) for i in range(5)]
TRUTH_TRIGGERS = ("cart_abandoned", "binge_reader", "product_lingerer", "subscribe_interest")
SECRET = "test-signing-secret"


def _home(built: Settings, tmp_path: Path, monkeypatch, triggers: Path | None = None) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(built.warehouse_path, home)
    monkeypatch.setenv("MICROSEG_HOME", str(home))
    if triggers is not None:
        monkeypatch.setenv("MICROSEG_TRIGGERS_FILE", str(triggers))
    return Settings.from_env()


@pytest.fixture(scope="module")
def activated(built: Settings, tmp_path_factory) -> Settings:
    """Every night of the small data set activated once, with the default triggers.yml, and
    the cart_reminder experiment running throughout."""
    home = tmp_path_factory.mktemp("activated")
    shutil.copy(built.warehouse_path, home)
    experiments = short_window_experiments(home)
    settings = Settings.from_env(
        {"MICROSEG_HOME": str(home), "MICROSEG_EXPERIMENTS_FILE": str(experiments)}
    )
    for night in NIGHTS:
        if night >= NIGHTS[-2]:  # as the night runs: segments (payloads name them), whose dbt
            segments_step(settings, night)  # build also makes the night's firings, then activate
            activate_step(settings, night)
        else:
            activate(settings, night)
    return settings


def test_payloads_carry_evidence_thresholds_and_the_nights_segments(activated):
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        rows = con.execute(
            """select o.payload, list(m.segment_name order by m.segment_name)
               from marts.activation_outbox o
               left join marts.segment_memberships m
                 on m.person_id = o.person_id and m.as_of_date = o.queued_for::date
               where o.trigger_name = 'binge_reader' and o.queued_for >= ?
               group by all""",
            [NIGHTS[-2]],
        ).fetchall()
    assert rows
    for payload, segments in rows:
        body = json.loads(payload)
        assert body["segments"] == [s for s in segments if s is not None]
        assert body["evidence"]["articles_read"] >= 5 == body["thresholds"]["articles_read"]
    assert any(json.loads(p)["segments"] for p, _ in rows)


def test_firings_are_exactly_the_planted_moments_and_no_decoy_fires(activated, small_dataset):
    con = truth_connection(activated, small_dataset)
    truth = small_dataset / "ground_truth"
    con.execute(
        f"""create temp view expected as
            select f.trigger as trigger_name, p.person_id, f.fired_at
            from '{truth}/trigger_firings.parquet' f join truth_people p using (person_key)
            where f.fired_at < timestamp '{NIGHTS[-1]}'"""
    )
    con.execute(
        f"""create temp view fired as select trigger_name, person_id, fired_at
            from marts.trigger_firings where trigger_name in {TRUTH_TRIGGERS}"""
    )
    # the same moments, to the millisecond the event files carry
    unmatched = """select trigger_name, person_id, fired_at from {a} a where not exists (
        select 1 from {b} b where b.trigger_name = a.trigger_name and b.person_id = a.person_id
          and abs(epoch(b.fired_at) - epoch(a.fired_at)) < 0.002)"""
    missing = con.execute(unmatched.format(a="expected", b="fired")).fetchall()
    extra = con.execute(unmatched.format(a="fired", b="expected")).fetchall()
    per_trigger = dict(
        con.execute("select trigger_name, count(*) from fired group by all").fetchall()
    )
    assert (missing, extra) == ([], [])
    assert all(per_trigger.get(t, 0) >= 10 for t in TRUTH_TRIGGERS), per_trigger
    # near misses exist for every trigger, and none fired in its session
    decoys = con.execute(
        f"""with decoy_sessions as (
                select d.trigger, fs.session_id
                from '{truth}/trigger_decoys.parquet' d
                join truth_people p using (person_key)
                join truth_sessions s on s.session = d.session
                join marts.fct_sessions fs
                  on fs.person_id = p.person_id
                 and abs(epoch(fs.session_start_at) - epoch(s.session_start_at)) < 0.002
                where s.session_end_at < timestamp '{NIGHTS[-1]}' - interval 1 day
            )
            select d.trigger, count(*) as decoys, count(f.session_id) as fired
            from decoy_sessions d
            left join marts.trigger_firings f
              on f.trigger_name = d.trigger and f.session_id = d.session_id
            group by all"""
    ).fetchall()
    con.close()
    assert {t for t, n, _ in decoys if n > 0} == set(TRUTH_TRIGGERS)
    assert [(t, fired) for t, _, fired in decoys if fired] == []


def test_every_firing_is_a_message_or_a_suppression_and_reruns_change_nothing(activated):
    def state() -> dict:
        with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
            tables = (
                "trigger_firings",
                "activation_outbox",
                "trigger_suppressions",
                "activation_report",
            )
            out = {
                t: sorted(con.execute(f"select * from marts.{t}").fetchall(), key=str)
                for t in tables
            }
            out["runs"] = con.execute(
                "select * exclude (finished_at) from marts.activation_runs order by cutoff"
            ).fetchall()
            out["delivered"] = con.execute(
                "select count(*), count(distinct idempotency_key || destination) "
                "from marts.activation_deliveries"
            ).fetchone()
            out["unaccounted"] = con.execute(
                """select count(*) from marts.trigger_firings f
                   where (trigger_name, person_id, fired_at) not in (
                            select (trigger_name, person_id, fired_at) from marts.activation_outbox
                            union all
                            select (trigger_name, person_id, fired_at)
                            from marts.trigger_suppressions)"""
            ).fetchone()[0]
            # the report's columns add up to its firings (each counted in one column)
            out["report_mismatch"] = con.execute(
                """select count(*) from marts.activation_report
                   where fired <> sent + failed + pending + expired + not_consented
                         + re_eligibility + capped + holdout + experiment_control
                         + other_definition"""
            ).fetchone()[0]
        files = sorted(activated.activation_dir.rglob("*.*"))
        out["files"] = {
            p.name + p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files
        }
        return out

    before = state()
    assert before["unaccounted"] == 0
    assert before["report_mismatch"] == 0
    assert before["delivered"][0] == before["delivered"][1] > 0
    reasons = {row[4].split(":")[0] for row in before["trigger_suppressions"]}
    assert {"expired", "capped"} <= reasons
    activate(activated, NIGHTS[2])
    assert state() == before


def test_the_nights_firings_come_from_the_segments_build_while_current(activated, tmp_path):
    """One dbt start-up a night: the segments step builds the night's firings, and activate
    uses them without running dbt; a changed plan or newly loaded events make it evaluate
    again. A triggers.yml that cannot be evaluated leaves the segments alone and stops the
    activate step."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(activated.warehouse_path, home)
    settings = dataclasses.replace(activated, home=home)
    night = NIGHTS[-1]

    def firings(trigger: str) -> set[tuple]:
        return set(
            query(
                settings,
                """select session_id from marts.trigger_firings
                   where trigger_name = ? and fired_at >= ? and fired_at < ?""",
                [trigger, night - timedelta(days=1), night],
            )
        )

    def dbt_ran(step) -> bool:
        settings.dbt_log.unlink(missing_ok=True)  # run_dbt writes it on every invocation
        step()
        return settings.dbt_log.exists()

    assert query(settings, "select window_start, cutoff from marts.trigger_evaluations "
                 "where cutoff = ?", [night]) == [
        (datetime.combine(night - timedelta(days=1), time()), datetime.combine(night, time()))
    ]  # fmt: skip
    binge = firings("binge_reader")
    assert binge
    assert not dbt_ran(lambda: activate(settings, night))
    assert activate(settings, night).reused_evaluation

    document = yaml.safe_load((PROJECT_ROOT / "triggers.yml").read_text())
    reader = next(t for t in document["triggers"] if t["name"] == "binge_reader")
    most = max(count for (count,) in query(
        settings, "select (evidence ->> 'articles_read')::int from marts.trigger_firings "
        "where trigger_name = 'binge_reader' and fired_at >= ? and fired_at < ?",
        [night - timedelta(days=1), night]))  # fmt: skip
    reader["when"][">="] = most  # a stricter definition: fewer firings of the same sessions
    stricter = tmp_path / "triggers.yml"
    stricter.write_text(yaml.safe_dump(document))
    stricter_settings = dataclasses.replace(settings, triggers_file=stricter)
    assert dbt_ran(lambda: activate(stricter_settings, night))
    assert 0 < len(firings("binge_reader")) < len(binge)
    assert firings("binge_reader") <= binge  # the same sessions, fewer (moments are later)
    assert not dbt_ran(lambda: activate(stricter_settings, night))  # current again

    late = tmp_path / "late.jsonl"  # any newly loaded events may change the firings
    late.write_text(json.dumps({
        "event_id": "late-page-view", "event_type": "page_view", "user_id": "late_reader",
        "event_at": f"{night - timedelta(days=1)}T12:00:00Z",
        "page_url": "https://example.com/articles/late", "page_type": "article",
    }) + "\n")  # fmt: skip
    assert ingest_paths(settings, [late])[0].rows_loaded == 1
    assert dbt_ran(lambda: activate(stricter_settings, night))

    broken = tmp_path / "broken.yml"
    broken.write_text(stricter.read_text().replace("max: 2", "max: two"))
    broken_settings = dataclasses.replace(settings, triggers_file=broken)
    summary = segments_step(broken_settings, night)
    assert "triggers not evaluated: broken.yml" in summary, summary
    assert "product_hesitators" in summary
    with pytest.raises(ConfigError, match=r"broken\.yml"):
        activate_step(broken_settings, night)


def test_a_segment_experiment_leaves_its_control_out_of_the_export_and_exposes_both_arms(
    activated, tmp_path
):
    """The audience export on a day a segment experiment runs: participants (members with
    consent to experiments, outside the global holdout, which is in no audience) get their
    sticky arm; the control arm is left out of the file, the treatment is in it with its
    variant; both are exposed that day, and the analysis counts them. Re-exporting the day
    changes nothing."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(activated.warehouse_path, home)
    night = NIGHTS[-2]
    purpose = consent_policy().purpose_of
    segment, members = query(
        activated,
        """select segment_name, list(person_id order by person_id) from marts.segment_memberships
           where as_of_date = ? and marts.has_consent(person_id, ?, as_of_date)
           group by all order by count(*) desc, segment_name limit 1""",
        [night, purpose["exports"]],
    )[0]  # fmt: skip
    document = yaml.safe_load(activated.experiments_file.read_text())
    document["experiments"].append({
        "name": "teaser_test", "hypothesis": "A teaser raises engaged time.", "owner": "o@x.org",
        "targeting": {"segment": segment}, "layer": "onsite", "start": "2026-10-01",
        "end": "2026-10-10", "primary": "engaged_s_7d",
        "arms": [{"name": "control", "weight": 0.5, "control": True},
                 {"name": "teaser", "weight": 0.5, "variant": "=teaser"}],
    })  # fmt: skip
    experiments_file = tmp_path / "experiments.yml"
    experiments_file.write_text(yaml.safe_dump(document))
    settings = dataclasses.replace(activated, home=home, experiments_file=experiments_file)

    out = tmp_path / "audience.csv"
    result = export_audience(settings, segment, out, as_of=night)
    first = out.read_bytes()
    arms = dict(query(settings, "select person_id, arm from marts.experiment_assignments "
                      "where experiment = 'teaser_test'"))  # fmt: skip
    consented = {p for (p,) in query(
        settings, "select person_id from marts.dim_persons where "
        "marts.has_consent(person_id, ?, ?::date)", [purpose["experiments"], night])}  # fmt: skip
    experiments = load_configured_experiments(settings)
    held = {p for p in members if bucket(HOLDOUT_SALT, p) < experiments.holdout}
    assert set(arms) == (set(members) & consented) - held
    assert held and result.held_out == len(held)  # held-out members are in no audience
    assert set(arms.values()) == {"control", "teaser"}
    with out.open(encoding="utf-8") as handle:
        rows = {r["person_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {p for p in members if arms.get(p) != "control"} - held
    for person, row in rows.items():
        treated = arms.get(person) == "teaser"
        assert (row["experiment"], row["arm"], row["variant"]) == (
            ("teaser_test", "teaser", "'=teaser") if treated else ("", "", "")
        )  # the variant neutralized for spreadsheets like any text
    exposures = query(settings, "select person_id, arm, exported from marts.segment_exposures "
                      "where as_of_date = ?", [night])  # fmt: skip
    assert sorted(exposures) == sorted((p, a, a == "teaser") for p, a in arms.items())
    counts = {a: list(arms.values()).count(a) for a in ("control", "teaser")}
    assert result.experiment == {
        "name": "teaser_test", "in_file": {"teaser": counts["teaser"]},
        "left_out": {"control": counts["control"]},
    }  # fmt: skip
    manifest = json.loads(result.manifest_path.read_text())
    assert (manifest["experiment"], manifest["held_out"]) == (result.experiment, len(held))

    export_audience(settings, segment, out, as_of=night)  # the same day again
    assert out.read_bytes() == first
    assert len(query(settings, "select * from marts.segment_exposures")) == len(arms)

    [decision] = analyze(settings, experiments, NIGHTS[-1], ["teaser_test"])
    assert decision.exposed == len(arms)
    assert query(settings, "select count(*), min(exposed_at) from marts.experiment_exposures "
                 "where experiment = 'teaser_test'") == [
        (len(arms), datetime.combine(night, time()))
    ]  # fmt: skip


def _webhook_triggers(tmp_path: Path, port_url: str) -> Path:
    document = yaml.safe_load((PROJECT_ROOT / "triggers.yml").read_text())
    document["destinations"].append(
        {"name": "hook", "type": "webhook", "url": port_url, "secret_env": "TEST_HOOK_SECRET",
         "timeout_s": 1, "max_attempts": 3, "batch_size": 20}
    )  # fmt: skip
    for trigger in document["triggers"]:
        trigger["destinations"] = ["hook"]
    path = tmp_path / "triggers.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_webhook_retries_server_errors_and_never_delivers_a_key_twice(built, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    with Receiver(SECRET) as receiver:
        settings = _home(built, tmp_path, monkeypatch, _webhook_triggers(tmp_path, receiver.url))
        receiver.fail_next(500, 2)  # the first batch is retried twice
        run = activate(settings, NIGHTS[1])
        assert run.delivered["hook"] == {"sent": run.queued} and run.queued > 20
        assert len(receiver.keys) == len(set(receiver.keys)) == run.queued
        assert receiver.bad_signatures == 0
        activate(settings, NIGHTS[1])  # a re-run sends nothing again
        assert len(receiver.keys) == run.queued
        # a crash after sending, before recording: the re-run re-sends with the same keys
        with duckdb.connect(str(settings.warehouse_path)) as con:
            lost = con.execute(
                "delete from marts.activation_deliveries where idempotency_key in "
                "(select idempotency_key from marts.activation_deliveries limit 5) "
                "returning idempotency_key"
            ).fetchall()
        activate(settings, NIGHTS[1])
        assert sorted(receiver.keys[run.queued :]) == sorted(k for (k,) in lost)
        # a receiver that refuses (400): recorded as rejected, not retried
        receiver.fail_next(400, 1)
        with duckdb.connect(str(settings.warehouse_path)) as con:
            con.execute("delete from marts.activation_deliveries")
        requests = receiver.requests
        activate(settings, NIGHTS[1])
        assert receiver.requests - requests == -(-run.queued // 20)  # one per batch, no retry
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            statuses = dict(con.execute(
                "select status, count(*) from marts.activation_deliveries group by all"
            ).fetchall())  # fmt: skip
        assert statuses == {"rejected": 20, "sent": run.queued - 20}


def test_dead_letters_after_the_last_attempt_and_consent_withdrawn_before_sending(
    built, tmp_path, monkeypatch
):
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    with Receiver(SECRET) as receiver:
        settings = _home(built, tmp_path, monkeypatch, _webhook_triggers(tmp_path, receiver.url))
        receiver.fail_next(503, 3)  # max_attempts 3: the first batch gives up
        run = activate(settings, NIGHTS[2])
        assert run.delivered["hook"] == {"dead_letter": 20, "sent": run.queued - 20}
        with duckdb.connect(str(settings.warehouse_path)) as con:
            assert con.execute("select count(*) from marts.activation_dead_letters").fetchone() == (
                20,
            )
            # consent withdrawn after a message was queued, before it went out (the crash again)
            person, key, purpose, trigger = con.execute(
                "select person_id, idempotency_key, purpose, trigger_name "
                "from marts.activation_outbox "
                "where idempotency_key not in "
                "(select idempotency_key from marts.activation_dead_letters) "
                "order by idempotency_key limit 1"
            ).fetchone()
            con.execute("delete from marts.activation_deliveries where idempotency_key = ?", [key])
            con.execute(  # what the next dbt build makes of a withdrawal for that purpose
                "update marts.consent_periods set is_held_now = false "
                "where person_id = ? and purpose = ?",
                [person, purpose],
            )
        sent = len(receiver.keys)
        activate(settings, NIGHTS[2])
        assert len(receiver.keys) == sent  # nothing new went out
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            reasons = con.execute(
                "select distinct reason from marts.trigger_suppressions "
                "where person_id = ? and trigger_name = ?",
                [person, trigger],
            ).fetchall()
        assert reasons == [(f"not_consented:{purpose}",)]


def test_missing_secret_and_bad_definitions_stop_before_anything(built, tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_HOOK_SECRET", raising=False)
    settings = _home(
        built, tmp_path, monkeypatch, _webhook_triggers(tmp_path, "http://127.0.0.1:9/x")
    )
    with pytest.raises(ConfigError, match="destination 'hook': secret_env: TEST_HOOK_SECRET"):
        activate(settings, NIGHTS[1])
    result = run_cli("activate", "--as-of", str(NIGHTS[1]), home=settings.home)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: triggers.yml: destination 'hook': secret_env: TEST_HOOK_SECRET is not set "
        "in the environment (the webhook signing secret)"
    ]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert not con.execute(
            "select count(*) from information_schema.tables where table_name = 'activation_outbox'"
        ).fetchone()[0]


def test_micro_batches_cover_the_day_once_and_the_night_sends_nothing_twice(
    built, tmp_path, monkeypatch
):
    settings = _home(built, tmp_path, monkeypatch)
    settings.landing_dir.mkdir()
    day = NIGHTS[-2]  # the batches of 10-05, then its night (as-of 10-06)
    noon, quarter_past = datetime.combine(day, time(12)), datetime.combine(day, time(12, 15))
    run_batch(settings, noon, report=lambda _line: None)
    run_batch(settings, quarter_past, report=lambda _line: None)
    run_batch(settings, noon, report=lambda _line: None)  # a re-run of the noon batch

    def table(sql: str) -> list[tuple]:
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            return con.execute(sql).fetchall()

    assert table("select window_start, cutoff from marts.activation_runs order by cutoff") == [
        (datetime.combine(day, time()), noon),
        (noon, quarter_past),
    ]
    keys = table("select idempotency_key, destination from marts.activation_deliveries")
    assert len(keys) == len(set(keys)) > 0
    morning = table(
        f"select count(*) from marts.trigger_firings where fired_at < '{quarter_past}'"
    )[0][0]
    decided = table(
        "select (select count(*) from marts.activation_outbox)"
        " + (select count(*) from marts.trigger_suppressions)"
    )[0][0]
    assert morning == decided > 0
    sent_before = dict(
        table("select idempotency_key, recorded_at from marts.activation_deliveries")
    )
    activate(settings, NIGHTS[-1])  # the night re-evaluates the whole of 10-05
    sent_after = dict(table("select idempotency_key, recorded_at from marts.activation_deliveries"))
    assert {k: sent_after[k] for k in sent_before} == sent_before  # nothing delivered again
    files = list(settings.activation_dir.rglob("messages.jsonl"))
    in_files = [json.loads(line)["idempotency_key"] for f in files for line in f.open()]
    assert len(files) == 6 and len(in_files) == len(set(in_files)) == len(sent_after)
    assert table(
        f"""select count(*) from marts.trigger_firings f
            where fired_at >= '{day}' and fired_at < '{NIGHTS[-1]}'
              and (trigger_name, person_id, fired_at) not in (
                  select (trigger_name, person_id, fired_at) from marts.activation_outbox
                  union all
                  select (trigger_name, person_id, fired_at) from marts.trigger_suppressions)"""
    ) == [(0,)]


def test_a_dry_run_of_another_file_fires_session_columns_at_the_sessions_end(activated, tmp_path):
    """`session:` conditions decide with the whole session: they fire at its last event;
    `not` holds throughout; `all` fires when its last part does. A dry run changes no mart."""
    trial = tmp_path / "trial.yml"
    trial.write_text(
        yaml.safe_dump(
            {
                "destinations": [{"name": "files", "type": "files"}],
                "triggers": [
                    {
                        "name": "long_visit_no_cart",
                        "owner": "qa@example.com",
                        "purpose": "personalization",
                        "channel": "onsite",
                        "destinations": ["files"],
                        "when": {
                            "all": [
                                {"session": "page_views", ">=": 6},
                                {"not": {"count": "add_to_cart", ">=": 1}},
                            ]
                        },
                    }
                ],
            }
        )
    )
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        outbox_before = con.execute("select count(*) from marts.activation_outbox").fetchone()
    run = activate(activated, NIGHTS[2], dry_run=True, triggers_file=trial)
    assert run.dry_run and run.delivered == {}
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        fired = con.execute(
            "select session_id, fired_at from activation_trial.trigger_firings order by all"
        ).fetchall()
        expected = con.execute(
            """select session_id, session_end_at from marts.fct_sessions
               where page_views >= 6 and cart_adds = 0
                 and session_end_at >= ? - interval 1 day and session_end_at < ?
               order by all""",
            [NIGHTS[2], NIGHTS[2]],
        ).fetchall()
        assert con.execute("select count(*) from marts.activation_outbox").fetchone() == (
            outbox_before
        )
    assert fired == expected and len(fired) > 0
    assert run.fired == {"long_visit_no_cart": len(fired)}


def test_the_report_command_prints_the_report_mart(activated):
    result = run_cli("activation", "report", "--as-of", str(NIGHTS[2]), home=activated.home)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.strip().splitlines()
    assert header.split()[:4] == ["fired", "on", "trigger", "channel"]
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        rows = con.execute(
            """select fired_on, trigger_name, channel, fired, sent, failed, pending, expired,
                      not_consented, re_eligibility, capped, holdout, experiment_control,
                      other_definition
               from marts.activation_report where fired_on = ? order by trigger_name""",
            [NIGHTS[2] - timedelta(days=1)],
        ).fetchall()
    printed = [line.split()[:14] for line in lines]
    assert printed == [[str(v) for v in row] for row in rows] and len(rows) >= 5
    for row in rows:  # every firing is accounted for once
        assert row[3] == sum(row[4:14])


def test_a_trigger_whose_channel_changed_within_a_day_counts_each_firing_once(activated, tmp_path):
    """Half of a day's firings of a trigger made while it had another channel: the report has
    a row per channel, and each row accounts for its own firings exactly once."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(activated.warehouse_path, copy)
    with duckdb.connect(str(copy)) as con:
        day, trigger = con.execute(
            """select fired_at::date, trigger_name from marts.trigger_suppressions
               group by all order by count(*) desc, 1, 2 limit 1"""
        ).fetchone()
        for table in ("trigger_firings", "activation_outbox"):
            con.execute(
                f"""update marts.{table} set channel = 'sms'
                    where trigger_name = ? and fired_at::date = ? and hash(person_id) % 2 = 0""",
                [trigger, day],
            )
        rows = con.execute(
            """select channel, fired, sent + failed + pending + expired + not_consented
                      + re_eligibility + capped + holdout + experiment_control
                      + other_definition
               from marts.activation_report where trigger_name = ? and fired_on = ?""",
            [trigger, day],
        ).fetchall()
    assert len(rows) == 2 and all(fired == accounted > 0 for _, fired, accounted in rows), rows


def test_arms_withhold_for_control_and_the_analysis_counts_exposed_people(activated):
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        per_arm = (
            "select arm, count(*) from marts.{} where experiment = 'cart_reminder' group by all"
        )
        arms = dict(con.execute(per_arm.format("experiment_assignments")).fetchall())
        withheld = con.execute(
            """select count(*) from marts.experiment_exposures e
               join marts.trigger_suppressions s
                 on s.person_id = e.person_id and s.fired_at = e.exposed_at
                and s.reason = 'experiment_control:cart_reminder'
               where e.arm = 'control'"""
        ).fetchone()[0]
        exposed = dict(con.execute(per_arm.format("experiment_exposures")).fetchall())
        sent_to_control = con.execute(
            """select count(*) from marts.activation_outbox o
               join marts.experiment_assignments a
                 on a.person_id = o.person_id and a.trigger_name = o.trigger_name
               where a.arm = 'control' and o.fired_at >= a.assigned_at"""
        ).fetchone()[0]
        treated = con.execute(
            """select o.payload->'experiment', o.payload->>'variant' from marts.activation_outbox o
               join marts.experiment_assignments a
                 on a.person_id = o.person_id and a.trigger_name = o.trigger_name
               where a.arm = 'reminder' and o.fired_at >= a.assigned_at"""
        ).fetchall()
    assert set(arms) == {"control", "reminder"} and min(arms.values()) > 20
    assert treated and all(  # the message names the arm and the content to show
        (json.loads(experiment), variant) == ({"name": "cart_reminder", "arm": "reminder"}, "plain")
        for experiment, variant in treated
    )
    assert withheld == exposed["control"] > 0 and exposed["reminder"] > 0
    assert sent_to_control == 0  # the control arm never got the cart message
    experiments = load_experiments(
        activated.experiments_file,
        segments={s.name for s in load_segments(activated.segments_file)},
        triggers={t.name for t in load_triggers(activated.triggers_file).triggers},
    )
    as_of = NIGHTS[-1]
    [decision] = analyze(activated, experiments, as_of, ["cart_reminder"])
    again = analyze(activated, experiments, as_of, ["cart_reminder"])
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        rows = {
            r[0]: r[1:]
            for r in con.execute(
                """select metric, n, control_n, raw_mean, raw_control_mean
                   from marts.experiment_results
                   where as_of_date = ? and arm = 'reminder'""",
                [as_of],
            ).fetchall()
        }
        # the primary metric re-derived: bought within a day of exposure, mature people only
        expected = dict(
            (arm, (n, rate))
            for arm, n, rate in con.execute(
                """select e.arm, count(*), avg(coalesce((
                        select bool_or(s.has_purchase) from marts.fct_sessions s
                        where s.person_id = e.person_id and s.session_start_at >= e.exposed_at
                          and s.session_start_at < e.exposed_at + interval 1 day), false)::int)
                   from marts.experiment_exposures e
                   where e.experiment = 'cart_reminder'
                     and e.exposed_at + interval 1 day <= ?::timestamp group by all""",
                [as_of],
            ).fetchall()
        )
        stored = con.execute(
            "select count(*) from marts.experiment_decisions where as_of_date = ?", [as_of]
        ).fetchone()[0]
    n, control_n, mean, control_mean = rows["converted_7d"]
    assert (n, control_n) == (expected["reminder"][0], expected["control"][0]) and n > 10
    assert abs(mean - expected["reminder"][1]) < 1e-12
    assert abs(control_mean - expected["control"][1]) < 1e-12
    assert set(rows) == {"converted_7d", "revenue_7d", "opted_out_7d", "bounce_rate_7d"}
    assert decision.exposed == sum(exposed.values()) and again == [decision] and stored == 1
    # the lift over time beside the analysis: a 900 x 480 PNG of the primary metric's rows
    assert decision.plot == activated.experiment_plots_dir / "cart_reminder.png"
    header = decision.plot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (900, 480)
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        plotted = lift_over_time(con, experiments.experiments[0], as_of)
        stored_lift = con.execute(
            """select lift from marts.experiment_results where as_of_date = ?
               and arm = 'reminder' and metric = 'converted_7d'""",
            [as_of],
        ).fetchall()
    assert [(d.date(), a, x) for d, a, x in plotted[["as_of_date", "arm", "lift"]].values] == [
        (as_of, "reminder", stored_lift[0][0])
    ]
    assert decision.decision in ("keep running", "ship reminder", "stop for harm")


def test_the_analysis_finds_the_generators_planted_lift_person_by_person(activated, small_dataset):
    """small_dataset plants purchases for most of cart_reminder's reminder arm (conftest
    PLANTED_LIFT): every planted purchase inside an exposed person's window is a conversion of
    theirs in the analysis, and the reminder arm converts more than control."""
    experiments = load_configured_experiments(activated)
    [experiment] = [e for e in experiments.experiments if e.name == "cart_reminder"]
    truth = small_dataset / "ground_truth"
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        values = person_values(con, experiment, experiments.metrics["converted_7d"], NIGHTS[-1])
        con.register("analyzed", values)
        planted = con.execute(
            f"""select a.person_id, a.arm, a.y
                from '{truth}/experiment_effects.parquet' f
                join '{truth}/sessions.parquet' s on s.session = f.converted_session
                join marts.experiment_exposures e
                  on e.person_id = f.person_id and e.experiment = f.experiment
                join analyzed a on a.person_id = f.person_id
                where s.session_start_at >= e.exposed_at
                  and s.session_start_at < e.exposed_at + interval 1 day"""
        ).fetchall()
    assert len(planted) >= 10 and {arm for _, arm, _ in planted} == {"reminder"}
    assert [y for _, _, y in planted] == [1] * len(planted)
    rate = values.groupby("arm").y.mean()
    assert rate["reminder"] > rate["control"] + 0.2, rate


def test_a_planted_sample_ratio_mismatch_makes_the_analysis_untrustworthy(tmp_path):
    """The generator loses most of the reminder arm's abandoned carts (--plant-srm): the arm is
    exposed far less often than its weight, and the analysis refuses to read a lift."""
    experiments_file = short_window_experiments(tmp_path)
    configured = Settings.from_env({"MICROSEG_EXPERIMENTS_FILE": str(experiments_file)})
    experiments = load_configured_experiments(configured)
    srm = planted_effects(experiments, [("srm", "cart_reminder", "reminder", 0.9)])
    generate(GeneratorConfig(users=300, days=5, seed=11, planted_effects=srm), tmp_path / "data")
    settings = Settings.from_env(
        {
            "MICROSEG_HOME": str(tmp_path / "home"),
            "MICROSEG_EXPERIMENTS_FILE": str(experiments_file),
        }
    )
    ingest_paths(settings, [tmp_path / "data"])
    transform(settings)
    for night in NIGHTS:
        activate(settings, night)
    [decision] = analyze(settings, experiments, NIGHTS[-1], ["cart_reminder"])
    exposed = dict(query(settings, "select arm, count(*) from marts.experiment_exposures "
                         "where experiment = 'cart_reminder' group by all"))  # fmt: skip
    lost = pd.read_parquet(tmp_path / "data" / "ground_truth" / "experiment_effects.parquet")
    assert (lost.effect == "srm").all() and lost.person_id.nunique() >= 10
    assert exposed["control"] > 4 * exposed.get("reminder", 0)
    assert decision.decision == "untrustworthy" and decision.srm_p_value < 0.001
    assert decision.reasons.startswith("sample ratio mismatch")
    never_fired = query(
        settings,
        "select count(*) from marts.trigger_firings where trigger_name = 'cart_abandoned' "
        "and person_id in (select unnest(?::varchar[]))",
        [lost.person_id.unique().tolist()],
    )
    assert never_fired == [(0,)]  # their carts never reached the warehouse


def test_a_threshold_test_acts_on_each_arms_own_definition(activated):
    """lingerer_threshold: product_lingerer (5 minutes, control) against product_lingerer_3min.
    A participant gets messages of their arm's definition only; the other definition's
    firings are set aside, and the first moment either acted (or would have) is the exposure;
    the 3-minute definition sends nothing to anyone else, or outside the experiment."""
    experiments = load_configured_experiments(activated)
    [experiment] = [e for e in experiments.experiments if e.name == "lingerer_threshold"]
    wanted = {a.name: experiment.trigger_of(a) for a in experiment.arms}
    definitions = tuple(sorted(experiment.triggers))
    with duckdb.connect(str(activated.warehouse_path), read_only=True) as con:
        arms = dict(con.execute(
            "select person_id, arm from marts.experiment_assignments where experiment = ?",
            [experiment.name]).fetchall())  # fmt: skip
        messages = con.execute(
            f"""select person_id, trigger_name, fired_at, payload ->> '$.experiment.arm'
                from marts.activation_outbox where trigger_name in {definitions}"""
        ).fetchall()
        set_aside = con.execute(
            f"""select person_id, trigger_name, fired_at, reason from marts.trigger_suppressions
                where trigger_name in {definitions} and reason like 'experiment_%'"""
        ).fetchall()
        exposures = con.execute(
            """select person_id, arm, exposed_at from marts.experiment_exposures
               where experiment = ?""",
            [experiment.name],
        ).fetchall()
    start = datetime.combine(experiment.start, time())
    assert set(arms.values()) == set(wanted) and len(arms) >= 6
    inside = [m for m in messages if m[2] >= start and m[0] in arms]
    assert inside and all(t == wanted[arms[p]] and arm == arms[p] for p, t, _, arm in inside)
    assert {t for _, t, _, _ in inside} == set(definitions)
    assert all(t == experiment.target for p, t, at, _ in messages if at < start or p not in arms)
    other_arm = [s for s in set_aside if s[3] == f"experiment_arm:{experiment.name}"]
    assert other_arm and all(t != wanted[arms[p]] for p, t, _, _ in other_arm)
    assert {s[3] for s in set_aside} <= {
        f"experiment_arm:{experiment.name}",
        f"experiment_variant:{experiment.name}",
    }
    acted: dict[str, datetime] = {}
    for person, _, at, *_ in [*inside, *other_arm]:
        acted[person] = min(at, acted.get(person, at))
    assert {(p, at) for p, _, at in exposures} == set(acted.items())
    assert all(arm == arms[p] for p, arm, _ in exposures)


REKEYED = {  # the person-keyed tables that outlive rebuilds, with what tells their rows apart
    "user_scores": ("model_name", "as_of_date"),
    "person_clusters": ("as_of_date",),
    "segment_memberships": ("segment_name", "as_of_date"),
    "trigger_firings": ("trigger_name", "fired_at"),
    "trigger_suppressions": ("trigger_name", "fired_at"),
    "activation_outbox": ("idempotency_key",),
    "experiment_assignments": ("experiment",),
}


def test_a_device_logging_in_brings_its_history_to_the_person_it_joins(activated, tmp_path):
    """An anonymous person with an experiment arm, messages and segments logs in as a user
    who has their own: every record moves to the user (the user's own row wins where both
    have one; the earlier experiment arm wins), no table names the merged-away person, and
    the next build changes nothing."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(activated.warehouse_path, home)
    settings = dataclasses.replace(activated, home=home)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        alias, device, survivor, user_id = con.execute(
            """with exposed as (
                   select e.person_id, e.arm, a.assigned_at, p.user_id,
                          (select any_value(identifier) from intermediate.int_identities_stitched
                           where person_id = e.person_id and id_type = 'anonymous') as device
                   from marts.experiment_exposures e
                   join marts.experiment_assignments a using (experiment, person_id)
                   join marts.dim_persons p using (person_id)
                   where e.experiment = 'cart_reminder'
                     and exists (select 1 from marts.segment_memberships m
                                 where m.person_id = e.person_id)
                     and exists (select 1 from marts.activation_outbox o
                                 where o.person_id = e.person_id)
                     and not exists (select 1 from marts.experiment_assignments x
                                     where x.person_id = e.person_id
                                       and x.experiment <> 'cart_reminder')
               )
               select alias.person_id, alias.device, survivor.person_id, survivor.user_id
               from exposed as alias join exposed as survivor
                 on alias.user_id is null and survivor.user_id is not null
                and alias.arm <> survivor.arm and alias.assigned_at < survivor.assigned_at
                and exists (select 1 from marts.segment_memberships a
                            join marts.segment_memberships s using (segment_name, as_of_date)
                            where a.person_id = alias.person_id
                              and s.person_id = survivor.person_id)
               order by alias.person_id, survivor.person_id limit 1"""
        ).fetchone()
        con.execute(ml_score.USER_SCORES_DDL)  # scores as the score step writes them
        con.execute(
            """insert into marts.user_scores (person_id, model_name, model_version, score,
                   decayed_score, predicted_class, decile, is_above_threshold, as_of_date)
               values
               ($alias, 'm', '1', 0.9, 0.9, null, 10, true, '2026-10-04'),
               ($alias, 'm', '1', 0.8, 0.8, null, 9, true, '2026-10-05'),
               ($survivor, 'm', '1', 0.5, 0.5, null, 5, false, '2026-10-05')""",
            {"alias": alias, "survivor": survivor},
        )
        for ddl in ml_cluster.TABLES_DDL:  # clusters as the cluster step writes them
            con.execute(ddl)
        con.execute(
            """insert into marts.person_clusters values
               ($alias, '2026-10-04', 0, 'a'), ($alias, '2026-10-05', 0, 'a'),
               ($survivor, '2026-10-05', 1, 'b')""",
            {"alias": alias, "survivor": survivor},
        )
        con.execute(
            """insert into marts.cluster_profiles values
               ('2026-10-04', 0, 'a', 1, '{}', '{}'), ('2026-10-05', 0, 'a', 1, '{}', '{}'),
               ('2026-10-05', 1, 'b', 1, '{}', '{}')"""
        )
        before = {
            table: {
                person: set(
                    con.execute(
                        f"select {', '.join(key)} from marts.{table} where person_id = ?", [person]
                    ).fetchall()
                )
                for person in (alias, survivor)
            }
            for table, key in REKEYED.items()
        }
        survivor_memberships = con.execute(
            "select * from marts.segment_memberships where person_id = ?", [survivor]
        ).fetchall()
        first_arm = con.execute(
            "select arm from marts.experiment_assignments where person_id = ?", [alias]
        ).fetchone()[0]
        person_tables = con.execute(
            """select table_schema || '.' || table_name from information_schema.columns
               where column_name = 'person_id' and table_schema in ('marts', 'intermediate')"""
        ).fetchall()
    assert all(before["activation_outbox"].values())  # both were sent messages before

    login = tmp_path / "login.jsonl"
    login.write_text(
        json.dumps(
            {
                "event_id": "device-logs-in",
                "event_type": "identify",
                "event_at": "2026-10-05T23:00:00Z",
                "anonymous_id": device,
                "user_id": user_id,
            }
        )
        + "\n"
    )
    ingest_paths(settings, [login])
    moved = "merged people whose records moved to the person they joined"
    assert transform(settings)[moved] == 1

    def rekeyed() -> dict[str, list[tuple]]:
        return {
            table: query(settings, f"select * from marts.{table} order by all") for table in REKEYED
        }

    for table, key in REKEYED.items():
        keys = set(
            query(
                settings,
                f"select {', '.join(key)} from marts.{table} where person_id = ?",
                [survivor],
            )
        )
        assert keys == before[table][alias] | before[table][survivor], table
        assert (
            len(keys)
            == query(
                settings, f"select count(*) from marts.{table} where person_id = ?", [survivor]
            )[0][0]
        ), table
        logged = query(
            settings,
            """select rows_moved, rows_kept from marts.person_merges
               where table_name = ? and former_person_id = ? and person_id = ?""",
            [table, alias, survivor],
        )
        shared = before[table][alias] & before[table][survivor]
        if table == "experiment_assignments":  # the alias's arm was assigned first: it stays
            shared = set()
        assert logged == [(len(before[table][alias]), len(before[table][alias] - shared))], table
    assert query(
        settings,
        "select as_of_date, score from marts.user_scores where person_id = ? order by all",
        [survivor],
    ) == [(date(2026, 10, 4), 0.9), (date(2026, 10, 5), 0.5)]
    # the user's own cluster stays on 10-05, so the alias's cluster lost its member there
    assert query(
        settings, "select as_of_date, cluster_id, members from marts.cluster_profiles order by all"
    ) == [(date(2026, 10, 4), 0, 1), (date(2026, 10, 5), 0, 0), (date(2026, 10, 5), 1, 1)]
    own = set(
        query(settings, "select * from marts.segment_memberships where person_id = ?", [survivor])
    )
    assert set(survivor_memberships) <= own  # where both were members, the user's row stays
    assert query(
        settings, "select arm from marts.experiment_assignments where person_id = ?", [survivor]
    ) == [(first_arm,)]
    run_segments(settings, NIGHTS[-1])  # the night goes on: the history is rebuilt
    for (table,) in person_tables:
        assert query(settings, f"select count(*) from {table} where person_id = ?", [alias]) == [
            (0,)
        ], table
    # acted on as both arms now (sent before the merge, withheld after, or the reverse):
    # exposed, but left out of the analysis
    window = {"experiment": "cart_reminder", "start": "2026-10-01", "end": "2026-10-10"}
    analyzed = {
        person
        for (person,) in query(settings, f"select person_id from ({ONE_ARM_EXPOSURES})", window)
    }
    exposed = {
        p
        for (p,) in query(
            settings,
            "select person_id from marts.experiment_exposures where experiment = 'cart_reminder'",
        )
    }
    assert survivor in exposed - analyzed
    assert len(exposed - analyzed) == 1

    snapshot = rekeyed()
    assert transform(settings)[moved] == 0
    assert rekeyed() == snapshot


def test_a_run_killed_while_delivering_resends_only_what_it_could_not_record(
    built, tmp_path, monkeypatch
):
    """SIGKILL in the middle of webhook delivery, then the same night again: every message
    arrives, and only a batch whose answer the killed run never heard arrives twice (with the
    same keys, for the receiver to deduplicate)."""
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    with Receiver(SECRET) as receiver:
        triggers = _webhook_triggers(tmp_path, receiver.url)
        document = yaml.safe_load(triggers.read_text())
        document["destinations"][-1]["batch_size"] = 5
        triggers.write_text(yaml.safe_dump(document))
        settings = _home(built, tmp_path, monkeypatch, triggers)
        receiver.answer_after_s = 0.3  # about 6 s of delivery for a night's ~100 messages
        night = str(NIGHTS[1])
        env = {**os.environ, "MICROSEG_HOME": str(settings.home)}
        killed = subprocess.Popen(
            [sys.executable, "-m", "microseg.cli", "activate", "--as-of", night], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = monotonic() + 120
        while len(receiver.keys) < 15 and killed.poll() is None:
            assert monotonic() < deadline, "delivery never started"
            sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL  # it died mid-delivery
        before_rerun = len(receiver.keys)
        receiver.answer_after_s = 0.0
        rerun = activate(settings, NIGHTS[1])
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        queued = {
            k
            for (k,) in con.execute(
                "select idempotency_key from marts.activation_outbox"
            ).fetchall()
        }
        sent = con.execute(
            "select count(*) from marts.activation_deliveries where status = 'sent'"
        ).fetchone()[0]
    counts = {k: receiver.keys.count(k) for k in set(receiver.keys)}
    assert set(counts) == queued and sent == len(queued) > 20
    assert before_rerun < len(queued)  # the kill left messages undelivered
    assert max(counts.values()) <= 2 and sum(c == 2 for c in counts.values()) <= 5
    assert rerun.delivered["hook"]["sent"] == len(queued) - before_rerun + sum(
        c == 2 for c in counts.values()
    )
