"""Great Expectations checkpoints over warehouse tables, with suites kept in expectations/.

GX 1.x cannot compute metrics through a SQL datasource on DuckDB, so each asset is a DataFrame
that DuckDB computes (only the columns a suite needs, derived values such as quarantine rates
done in SQL). Suites are plain GX JSON files in the repository; values that belong to the
event contract or to settings are `$PARAMETER`s filled in at run time, so they live in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from microseg.config import Settings
from microseg.contract import event_contract
from microseg.data_docs import localize_data_docs
from microseg.errors import ConfigError
from microseg.warehouse import FILE_ACCOUNTING_SQL, connect

EXAMPLES_PER_FAILURE = 3

RAW_EVENTS_SQL = """
select event_id, event_type, event_at, received_at, anonymous_id, user_id, page_type,
       anonymous_id is not null or user_id is not null as has_identity,
       try_cast(properties->>'$.scroll_percent' as double) as scroll_percent,
       try_cast(properties->>'$.hover_ms' as double) as hover_ms,
       try_cast(properties->>'$.price' as double) as price,
       try_cast(properties->>'$.revenue' as double) as revenue
from raw.events
{sample}
"""

FEATURES_SQL = """
select * exclude (as_of_date) from marts.fct_user_features_daily where as_of_date = ?
"""

FEATURE_VOLUME_SQL = """
select $1::date as as_of_date, today.rows as feature_rows, previous.rows as previous_rows,
       today.rows / nullif(previous.rows, 0) as row_ratio
from (select count(*) as rows from marts.fct_user_features_daily where as_of_date = $1)
         as today,
     (select count(*) as rows from marts.fct_user_features_daily
      where as_of_date = (select max(as_of_date) from marts.fct_user_features_daily
                          where as_of_date < $1)) as previous
"""


@dataclass
class Failure:
    """One failed expectation, with a few offending rows to look at."""

    suite: str
    expectation_type: str
    column: str | None
    expectation: str  # the call with its arguments, as people read it
    detail: str
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = f"; e.g. {'; '.join(self.examples)}" if self.examples else ""
        return f"FAILED {self.suite}: {self.expectation}: {self.detail}{shown}"


@dataclass
class ValidationReport:
    success: bool
    checked: dict[str, tuple[int, int, int]]  # suite -> (rows, expectations, passed)
    failures: list[Failure]
    data_docs: str

    def summary(self) -> str:
        lines = [
            f"{suite}: {passed}/{total} expectations passed on {rows:,} rows"
            for suite, (rows, total, passed) in self.checked.items()
        ]
        lines += [f.line() for f in self.failures]
        lines.append(f"Data Docs: {self.data_docs}")
        return "\n".join(lines)


def load_suite_definition(settings: Settings, name: str) -> dict[str, Any]:
    path = settings.expectations_dir / f"{name}.json"
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no expectation suite file {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def gx_context(settings: Settings):
    """A file-mode GX context under MICROSEG_HOME (results and Data Docs live there)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    settings.home.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(settings.home))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _checkpoint(context, settings: Settings, suite_name: str, key_column: str):
    """Register (idempotently) the suite, its DataFrame asset and a checkpoint with Data Docs."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas(name="microseg_warehouse")
    asset = source.add_dataframe_asset(name=suite_name)
    batch = asset.add_batch_definition_whole_dataframe("whole_table")
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(**load_suite_definition(settings, suite_name))
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [key_column],
                "partial_unexpected_count": EXAMPLES_PER_FAILURE,
            },
        )
    )


def _describe(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "value_set")}
    if "value_set" in config.kwargs:
        kwargs["value_set"] = "[...]"
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{config.type}({args})"


def _failures(suite_name: str, key_column: str, run_result) -> tuple[int, int, list[Failure]]:
    failures = []
    total = passed = 0
    for validation in run_result.run_results.values():
        for result in validation.results:
            total += 1
            if result.success:
                passed += 1
                continue
            info = result.result or {}
            if info.get("unexpected_count") is not None:
                detail = f"{info['unexpected_count']:,} of {info.get('element_count', 0):,} rows"
            else:
                detail = f"observed {info.get('observed_value')!r}"
            if result.exception_info and result.exception_info.get("raised_exception"):
                detail = f"could not run: {result.exception_info.get('exception_message')}"
            column = result.expectation_config.kwargs.get("column")
            examples = []
            for row in (info.get("partial_unexpected_index_list") or [])[:EXAMPLES_PER_FAILURE]:
                shown = f"{key_column}={row.get(key_column)}"
                if column and column != key_column and column in row:
                    shown += f" {column}={row[column]}"
                examples.append(shown)
            config = result.expectation_config
            why = (config.meta or {}).get("why")
            if why:
                detail += f" ({why})"
            failures.append(
                Failure(suite_name, config.type, column, _describe(config), detail, examples)
            )
    return total, passed, failures


def _event_frame(settings: Settings) -> pd.DataFrame:
    """raw.events columns the suite checks, hash-sampled by event_id above the row limit."""
    with connect(settings, read_only=True) as con:
        rows = con.execute("select count(*) from raw.events").fetchone()[0]
        buckets = max(1, -(-rows // settings.validate_max_rows))
        sample = f"where hash(event_id) % {buckets} = 0" if buckets > 1 else ""
        return con.execute(RAW_EVENTS_SQL.format(sample=sample)).df()


def _manifest_frame(settings: Settings) -> pd.DataFrame:
    with connect(settings, read_only=True) as con:
        return con.execute(FILE_ACCOUNTING_SQL).df()


def validate_raw(settings: Settings, as_of: date | None = None) -> ValidationReport:
    """Run the raw_events and raw_load_manifest checkpoints; Data Docs are rebuilt each run.

    `as_of` is the run date: events later than as_of + tolerance count as being in the future.
    Without it the check uses the current time.
    """
    contract = event_contract()
    now = (
        datetime.combine(as_of, datetime.min.time()) + timedelta(days=1)
        if as_of
        else datetime.now(UTC).replace(tzinfo=None)
    )
    parameters = {
        "event_types": list(contract.event_types),
        "page_types": list(contract.field("page_type").enum or ()),
        "event_at_floor": pd.Timestamp(settings.event_at_floor),
        "event_at_ceiling": pd.Timestamp(now + timedelta(hours=settings.future_tolerance_hours)),
        "quarantine_rate_max": settings.quarantine_rate_max,
    }
    return _run_suites(
        settings,
        [
            ("raw_events", "event_id", _event_frame(settings)),
            ("raw_load_manifest", "file_name", _manifest_frame(settings)),
        ],
        parameters,
    )


def _run_suites(
    settings: Settings, suites: list[tuple[str, str, pd.DataFrame]], parameters: dict[str, Any]
) -> ValidationReport:
    """Run one checkpoint per (suite, key column, frame); collect the failures."""
    context = gx_context(settings)
    checked: dict[str, tuple[int, int, int]] = {}
    failures: list[Failure] = []
    for suite_name, key_column, frame in suites:
        checkpoint = _checkpoint(context, settings, suite_name, key_column)
        result = checkpoint.run(
            batch_parameters={"dataframe": frame}, expectation_parameters=parameters
        )
        total, passed, suite_failures = _failures(suite_name, key_column, result)
        checked[suite_name] = (len(frame), total, passed)
        failures += suite_failures
    localize_data_docs(settings.data_docs_index.parent)  # readable without internet
    return ValidationReport(
        success=not failures,
        checked=checked,
        failures=failures,
        data_docs=settings.data_docs_index.as_uri(),
    )


def validate_features(settings: Settings, as_of: date) -> ValidationReport:
    """The user_features checkpoints on the as-of date's feature rows: nulls, ranges, and the
    row count against the day before (people do not vanish overnight)."""
    with connect(settings, read_only=True) as con:
        features = con.execute(FEATURES_SQL, [as_of]).df()
        volume = con.execute(FEATURE_VOLUME_SQL, [as_of]).df()
    return _run_suites(
        settings,
        [("user_features", "person_id", features), ("user_features_volume", "as_of_date", volume)],
        {"min_row_ratio": settings.feature_min_row_ratio},
    )
