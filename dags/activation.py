"""
### activation — triggers fired, capped and delivered every 15 minutes

Every 15 minutes (`MICROSEG_ACTIVATION_SCHEDULE`, a cron; `none`: triggered only).

**Reads** event files newly landed in `$MICROSEG_HOME/landing` and `triggers.yml`
(`MICROSEG_TRIGGERS_FILE`). **Writes** `marts.trigger_firings`, `marts.activation_outbox`,
`marts.trigger_suppressions`, `marts.activation_deliveries`, `marts.activation_report`, and the
destinations' files under `$MICROSEG_HOME/activation/` or their webhooks.

Steps: ingest the newly landed files (dated up to today) → incremental `dbt build` of the models
(skipped when nothing new landed) → evaluate the triggers whose firing moment falls since the
previous batch, cap, queue and deliver (`microseg activate --batch`; docs/triggers.md). The
last step runs even when nothing new landed: a wait such as "15 minutes without checkout" ends
without a new event.

**Cutoff.** A scheduled run evaluates up to the end of its data interval; a manual run takes
`cutoff` (UTC, e.g. `2026-10-15T10:15:00`) from its params, else now. Re-running a run gives
the same firings and never delivers a message twice. The nightly `behavior_nightly` run
evaluates the whole day before again, so what a batch missed (late events) is found then.

**Sharing the warehouse.** Every task uses the one-slot `warehouse_writer` pool, with the nightly
and weekly DAGs: DuckDB allows one process on the warehouse at a time.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from microseg.config import Settings
from microseg.orchestration import WRITER_POOL, cutoff_for_run, run_step

SETTINGS = Settings.from_env()


@dag(
    schedule=(
        CronTriggerTimetable(SETTINGS.activation_schedule, timezone="UTC")
        if SETTINGS.activation_schedule
        else None
    ),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["microseg", "activation"],
    doc_md=__doc__,
    default_args={
        "owner": "data-team",
        "retries": 1,
        "retry_delay": pendulum.duration(minutes=1),
        "pool": WRITER_POOL,
    },
    params={
        "cutoff": Param(
            None,
            type=["null", "string"],
            description="Evaluate firings up to this UTC time (default: the run's time, or now)",
        ),
    },
)
def activation():
    @task
    def ingest_landed(params=None, data_interval_end=None):
        from microseg.pipeline import ingest_landed_step

        return run_step(ingest_landed_step, params, data_interval_end, moment=cutoff_for_run)

    @task
    def transform(params=None, data_interval_end=None):
        from microseg.pipeline import transform_step

        return run_step(transform_step, params, data_interval_end, moment=cutoff_for_run)

    @task(trigger_rule="none_failed")
    def activate(params=None, data_interval_end=None):
        from microseg.pipeline import activate_batch_step

        return run_step(activate_batch_step, params, data_interval_end, moment=cutoff_for_run)

    ingest_landed() >> transform() >> activate()


activation()
