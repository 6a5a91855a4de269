"""What the Airflow DAGs share: the run's as-of date and how failures are reported.

DAG files stay declarative; each task calls `run_step`, which dates the step by the run (never
by the clock) and turns data-quality failures into failures Airflow does not retry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from microseg.config import Settings, restrict_new_files
from microseg.errors import DataQualityError, NothingToRunError, UsageError

WRITER_POOL = "warehouse_writer"  # one slot: DuckDB allows one process on the file at a time


def as_of_for_run(params: dict[str, Any], data_interval_end: Any) -> date:
    """The `as_of` param of a manual run, else the end of the run's data interval."""
    chosen = (params or {}).get("as_of")
    if chosen:
        return date.fromisoformat(str(chosen))
    if data_interval_end is None:
        raise ValueError("this run has no data interval: trigger it with an as_of param")
    return data_interval_end.date()


def undated(_params: dict[str, Any], _data_interval_end: Any) -> None:
    """For steps that work on the newest data whatever the run (models_weekly's training):
    a run started by an asset event has no data interval."""
    return None


def model_drift_asset():
    """The asset behavior_nightly updates when a champion drifted past its retrain_psi, and
    models_weekly is scheduled on (besides its weekly cron)."""
    from airflow.sdk import Asset

    return Asset(name="model_drift", uri="microseg://model-drift")


def cutoff_for_run(params: dict[str, Any], data_interval_end: Any) -> datetime:
    """The `cutoff` param of a manual activation run, else the end of its data interval (UTC,
    naive, to the second); a manual run without a cutoff: now."""
    chosen = (params or {}).get("cutoff")
    if chosen:
        try:
            moment = datetime.fromisoformat(str(chosen).replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"cutoff {chosen!r} is not a date-time such as 2026-10-15T10:15:00"
            ) from None
    else:
        moment = data_interval_end or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def run_step(
    step: Callable[..., str],
    params: dict[str, Any],
    data_interval_end: Any,
    *,
    moment: Callable[[dict[str, Any], Any], date | datetime | None] = as_of_for_run,
    **options: Any,
) -> str:
    """Run one pipeline step for the run's date (or moment: the activation DAG's cutoff).
    Data-quality and usage failures fail without retries (retrying cannot fix them); a night
    with nothing to build is skipped."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    as_of = moment(params, data_interval_end)
    settings = Settings.from_env()
    restrict_new_files(settings)
    try:
        summary = step(settings, as_of, **options)
    except NothingToRunError as exc:
        raise AirflowSkipException(str(exc)) from None
    except DataQualityError as exc:
        raise AirflowFailException(f"data quality: {exc}") from None
    except UsageError as exc:
        raise AirflowFailException(f"configuration: {exc}") from None
    print(summary)
    return summary


def fail_on_failed_dbt_tests(project_dir: str, **_callback_args: Any) -> None:
    """Cosmos callback after each dbt build, before Cosmos judges the exit code: failed data
    tests fail the task at once, naming them (retrying cannot fix data); any other dbt error
    is left to Cosmos and retried."""
    from airflow.sdk.exceptions import AirflowFailException

    from microseg.transform import failed_nodes

    target = Path(project_dir) / "target"
    failed = failed_nodes(target, tests_only=True, settings=Settings.from_env())
    if failed:
        raise AirflowFailException("data quality: dbt tests failed: " + "; ".join(failed))
