"""Settings: the one place that reads environment variables. Nothing happens at import time."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from microseg.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout (installed editable by uv)
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


DEFAULT_AUDIENCES = "subscribe_curious_readers,cart_abandoners"
SCRUBBED_PARAMS = "email,mail,e,token,password,phone"  # query parameters ingest removes
_MEMORY_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([KMGT]i?B)", re.IGNORECASE)  # DuckDB's units
_MEMORY_UNITS = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
_MEMORY_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_JVM_SIZE = re.compile(r"\d+[kmgt]", re.IGNORECASE)  # Spark's spark.driver.memory


def load_yaml(text: str) -> Any:
    """Safe YAML through libyaml when PyYAML has it: several times faster than the pure-Python
    parser, and one activation reads a dozen YAML files (definitions, dbt's schema files)."""
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:  # the pure-Python parser words the mistake better (errors quote it)
        return yaml.safe_load(text)


def dbt_project_vars(dbt_project_dir: Path = DBT_PROJECT_DIR) -> dict[str, Any]:
    """dbt_project.yml's vars: the one source of the business constants that Python steps read
    too (consent purposes, feature windows), so they cannot drift from what dbt builds."""
    path = dbt_project_dir / "dbt_project.yml"
    return (load_yaml(path.read_text("utf-8")) or {}).get("vars") or {}


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _days(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A whole number of days, at least 1 (unset: the default)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"{name}={raw!r} must be a whole number of days, at least 1")
    return int(raw)


def _schedule(env: Mapping[str, str], name: str, default: str) -> str | None:
    """A cron expression, or None for "none" (the DAG runs only when triggered)."""
    raw = env.get(name, default).strip()
    if raw.lower() == "none":
        return None
    if len(raw.split()) != 5:
        raise ConfigError(f"{name}={raw!r} is not a 5-field cron expression or 'none'")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name}={raw!r} is not true or false")
    return raw in ("true", "1", "yes")


def _list(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """A comma-separated setting; an empty value is an empty list."""
    raw = env.get(name, default)
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _fields(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """Event fields: user_id or properties.<key>."""
    fields = _list(env, name, default)
    for field in fields:
        if field != "user_id" and not re.fullmatch(r"properties\.[A-Za-z_][A-Za-z0-9_]*", field):
            raise ConfigError(f"{name}: {field!r} is not user_id or properties.<key>")
    return fields


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    """One of `choices` (case and spaces ignored), or None when unset."""
    raw = (env.get(name) or "").strip().lower()
    if raw and raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be {' or '.join(repr(c) for c in choices)}")
    return raw or None


def _date(env: Mapping[str, str], name: str, default: date) -> date:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an ISO date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know about where it runs and its limits."""

    expectations_dir: Path

    home: Path
    landing_dir: Path
    max_line_bytes: int
    quarantine_rate_max: float
    event_at_floor: date
    future_tolerance_hours: float
    validate_max_rows: int
    late_arrival_hours: float | None  # None: dbt_project.yml's var late_arrival_hours
    session_source: str | None  # inactivity | client; None: dbt_project.yml's var
    feature_min_row_ratio: float
    quiet_days_max: int  # days without events a night carries features over; more: skipped
    missing_delivery: str  # "warn" or "error": what a night with quiet days before it does
    segments_file: Path
    triggers_file: Path
    experiments_file: Path
    export_audiences: tuple[str, ...]
    mlflow_tracking_uri: str
    ml_specs_dir: Path
    airflow_port: int
    mlflow_port: int
    mlflow_user: str
    mlflow_password: str | None  # None: generated on first start, printed once
    group_read: bool  # files under home readable by the owner's group (else owner only)
    airflow_user: str
    airflow_password: str | None  # None: generated on first start, printed once
    privacy_key: str | None  # None: generated on first use into $MICROSEG_HOME/privacy/key
    privacy_old_keys: tuple[str, ...]  # keys rotated out: their tombstones still match
    pseudonymized_fields: tuple[str, ...]  # stored as keyed pseudonyms (privacy/pseudonymize)
    ip_fields: tuple[str, ...]  # truncated to /24 or /48 at ingest
    scrub_query_params: tuple[str, ...]  # removed from page_url and referrer at ingest
    raw_retention_days: int | None  # events of sessions ended longer ago are deleted; None: kept
    quarantine_retention_days: int  # quarantined lines of files loaded longer ago are deleted
    nightly_schedule: str | None  # cron of behavior_nightly; None: triggered only
    weekly_schedule: str | None  # cron of models_weekly; None: triggered (or by model drift)
    activation_schedule: str | None  # cron of the activation DAG; None: triggered only
    duckdb_memory_limit: str | None  # e.g. "4GB", for every connection and dbt; None: DuckDB's
    duckdb_threads: int  # DuckDB worker threads
    duckdb_temp_dir: Path  # where DuckDB spills what does not fit in memory_limit
    engine: str  # the warehouse dbt builds on: duckdb, or spark (profiles.yml's outputs)
    spark_threads: int  # the Spark target's local cores (local[N])
    spark_driver_memory: str  # the Spark target's JVM heap, e.g. "2g"

    @property
    def duckdb_memory_bytes(self) -> int:
        """The memory limit in bytes (DuckDB's default when unset: 80% of physical memory)."""
        if self.duckdb_memory_limit is None:
            return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        number, unit = _MEMORY_SIZE.fullmatch(self.duckdb_memory_limit).groups()
        return int(float(number) * _MEMORY_UNITS[unit.lower()])

    @property
    def dbt_env(self) -> dict[str, str]:
        """The variables profiles.yml reads: dbt works on the same warehouse, within the same
        memory, threads and spill folder as the rest of microseg."""
        env = {
            "MICROSEG_HOME": str(self.home),
            "MICROSEG_DUCKDB_THREADS": str(self.duckdb_threads),
            "MICROSEG_DUCKDB_TEMP_DIR": str(self.duckdb_temp_dir),
            "MICROSEG_SPARK_THREADS": str(self.spark_threads),
            "MICROSEG_SPARK_DRIVER_MEMORY": self.spark_driver_memory,
        }
        if self.duckdb_memory_limit:  # else profiles.yml's fallback: DuckDB's default
            env["MICROSEG_DUCKDB_MEMORY_LIMIT"] = self.duckdb_memory_limit
        return env

    @property
    def spark_dir(self) -> Path:
        """The Spark target's files: raw exports, its warehouse and metastore (microseg.lake)."""
        return self.home / "spark"

    @property
    def warehouse_path(self) -> Path:
        """The working DuckDB file every writing step uses."""
        return self.home / "warehouse.duckdb"

    @property
    def analytics_path(self) -> Path:
        """The read-only snapshot analysts open (replaced atomically by `publish`)."""
        return self.home / "analytics.duckdb"

    @property
    def dbt_project_dir(self) -> Path:
        """The dbt project (models, tests, the committed profiles.yml)."""
        return DBT_PROJECT_DIR

    @property
    def dbt_target_dir(self) -> Path:
        """dbt's compiled SQL, manifest and run results: kept out of the checkout."""
        return self.home / "dbt" / "target"

    @property
    def dbt_vars(self) -> dict[str, float | str]:
        """dbt vars the settings override; everything else keeps dbt_project.yml's value, the
        one source of each business constant."""
        overrides = {
            "late_arrival_hours": self.late_arrival_hours,
            "session_source": self.session_source,
        }
        return {name: value for name, value in overrides.items() if value is not None}

    @property
    def dbt_log(self) -> Path:
        """dbt's output of the latest run (errors name it; the console gets one line)."""
        return self.home / "dbt" / "logs" / "last_run.log"

    @property
    def activation_dir(self) -> Path:
        """Where file destinations write each run's messages (one folder per destination)."""
        return self.home / "activation"

    @property
    def experiment_plots_dir(self) -> Path:
        """Where each analysis redraws its experiments' lift over time (one PNG each)."""
        return self.home / "experiments"

    @property
    def export_dir(self) -> Path:
        """Where the nightly run writes audience CSVs (and their manifests)."""
        return self.home / "exports"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Run artifacts and model files of the embedded MLflow (beside mlflow.db)."""
        return self.home / "mlartifacts"

    @property
    def gx_dir(self) -> Path:
        """Great Expectations file context: validation results and Data Docs HTML."""
        return self.home / "gx"

    @property
    def data_docs_index(self) -> Path:
        return self.gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read MICROSEG_* variables; unset ones take documented defaults."""
        env = os.environ if env is None else env
        home = Path(env.get("MICROSEG_HOME") or "data").expanduser().resolve()
        landing = env.get("MICROSEG_LANDING_DIR")
        max_line = int(_number(env, "MICROSEG_MAX_LINE_BYTES", 1_048_576))
        rate = _number(env, "MICROSEG_QUARANTINE_RATE_MAX", 0.05)
        if not 0 <= rate <= 1:
            raise ConfigError(f"MICROSEG_QUARANTINE_RATE_MAX={rate} must be between 0 and 1")
        if max_line < 1024:
            raise ConfigError(f"MICROSEG_MAX_LINE_BYTES={max_line} must be at least 1024")
        suites = env.get("MICROSEG_EXPECTATIONS_DIR")
        segments = env.get("MICROSEG_SEGMENTS_FILE")
        triggers = env.get("MICROSEG_TRIGGERS_FILE")
        experiments = env.get("MICROSEG_EXPERIMENTS_FILE")
        specs = env.get("MICROSEG_ML_SPECS_DIR")
        audiences = env.get("MICROSEG_EXPORT_AUDIENCES", DEFAULT_AUDIENCES)
        quiet_days_max = int(_number(env, "MICROSEG_QUIET_DAYS_MAX", 7))
        memory_limit = (env.get("MICROSEG_DUCKDB_MEMORY_LIMIT") or "").strip() or None
        if memory_limit and not _MEMORY_SIZE.fullmatch(memory_limit):
            raise ConfigError(
                f"MICROSEG_DUCKDB_MEMORY_LIMIT={memory_limit!r} must be a size such as 4GB"
            )
        threads = int(_number(env, "MICROSEG_DUCKDB_THREADS", os.cpu_count() or 1))
        if threads < 1:
            raise ConfigError(f"MICROSEG_DUCKDB_THREADS={threads} must be at least 1")
        temp_dir = env.get("MICROSEG_DUCKDB_TEMP_DIR")
        spark_threads = int(_number(env, "MICROSEG_SPARK_THREADS", os.cpu_count() or 1))
        if spark_threads < 1:
            raise ConfigError(f"MICROSEG_SPARK_THREADS={spark_threads} must be at least 1")
        spark_memory = (env.get("MICROSEG_SPARK_DRIVER_MEMORY") or "2g").strip()
        if not _JVM_SIZE.fullmatch(spark_memory):
            raise ConfigError(
                f"MICROSEG_SPARK_DRIVER_MEMORY={spark_memory!r} must be a JVM size such as 2g"
            )
        if quiet_days_max < 0:
            raise ConfigError(f"MICROSEG_QUIET_DAYS_MAX={quiet_days_max} must be 0 or more")
        pseudonymized = _fields(env, "MICROSEG_PSEUDONYMIZE", "")
        if pseudonymized and not env.get("MICROSEG_PRIVACY_KEY"):
            raise ConfigError(
                "MICROSEG_PSEUDONYMIZE is set but MICROSEG_PRIVACY_KEY is not: pseudonyms need "
                "a key kept outside MICROSEG_HOME (docs/privacy.md)"
            )
        raw_retention = _days(env, "MICROSEG_RAW_RETENTION_DAYS", None)
        quarantine_retention = _days(env, "MICROSEG_QUARANTINE_RETENTION_DAYS", 30)
        missing_delivery = _choice(env, "MICROSEG_MISSING_DELIVERY", ("warn", "error")) or "warn"
        return cls(
            expectations_dir=Path(suites).resolve() if suites else PROJECT_ROOT / "expectations",
            home=home,
            landing_dir=Path(landing).expanduser().resolve() if landing else home / "landing",
            max_line_bytes=max_line,
            quarantine_rate_max=rate,
            event_at_floor=_date(env, "MICROSEG_EVENT_AT_FLOOR", date(2000, 1, 1)),
            future_tolerance_hours=_number(env, "MICROSEG_FUTURE_TOLERANCE_HOURS", 24.0),
            validate_max_rows=int(_number(env, "MICROSEG_VALIDATE_MAX_ROWS", 2_000_000)),
            late_arrival_hours=(
                _number(env, "MICROSEG_LATE_ARRIVAL_HOURS", 0.0)
                if env.get("MICROSEG_LATE_ARRIVAL_HOURS")
                else None
            ),
            session_source=_choice(env, "MICROSEG_SESSION_SOURCE", ("inactivity", "client")),
            feature_min_row_ratio=_number(env, "MICROSEG_FEATURE_MIN_ROW_RATIO", 0.9),
            quiet_days_max=quiet_days_max,
            missing_delivery=missing_delivery,
            segments_file=(
                Path(segments).expanduser().resolve() if segments else PROJECT_ROOT / "segments.yml"
            ),
            triggers_file=(
                Path(triggers).expanduser().resolve() if triggers else PROJECT_ROOT / "triggers.yml"
            ),
            experiments_file=(
                Path(experiments).expanduser().resolve()
                if experiments
                else PROJECT_ROOT / "experiments.yml"
            ),
            mlflow_tracking_uri=env.get("MICROSEG_MLFLOW_TRACKING_URI")
            or f"sqlite:///{home / 'mlflow.db'}",
            ml_specs_dir=Path(specs).expanduser().resolve() if specs else PROJECT_ROOT / "ml/specs",
            airflow_port=int(_number(env, "MICROSEG_AIRFLOW_PORT", 8080)),
            mlflow_port=int(_number(env, "MICROSEG_MLFLOW_PORT", 5000)),
            mlflow_user=env.get("MICROSEG_MLFLOW_USER") or "admin",
            mlflow_password=env.get("MICROSEG_MLFLOW_PASSWORD") or None,
            group_read=_flag(env, "MICROSEG_GROUP_READ"),
            airflow_user=env.get("MICROSEG_AIRFLOW_USER") or "admin",
            airflow_password=env.get("MICROSEG_AIRFLOW_PASSWORD") or None,
            privacy_key=env.get("MICROSEG_PRIVACY_KEY") or None,
            privacy_old_keys=_list(env, "MICROSEG_PRIVACY_OLD_KEYS", ""),
            pseudonymized_fields=pseudonymized,
            ip_fields=_fields(env, "MICROSEG_IP_FIELDS", "properties.ip"),
            scrub_query_params=_list(env, "MICROSEG_SCRUB_QUERY_PARAMS", SCRUBBED_PARAMS),
            raw_retention_days=raw_retention,
            quarantine_retention_days=quarantine_retention,
            nightly_schedule=_schedule(env, "MICROSEG_NIGHTLY_SCHEDULE", "0 3 * * *"),
            weekly_schedule=_schedule(env, "MICROSEG_WEEKLY_SCHEDULE", "0 5 * * 0"),
            activation_schedule=_schedule(env, "MICROSEG_ACTIVATION_SCHEDULE", "*/15 * * * *"),
            export_audiences=tuple(a.strip() for a in audiences.split(",") if a.strip()),
            duckdb_memory_limit=memory_limit,
            duckdb_threads=threads,
            duckdb_temp_dir=(
                Path(temp_dir).expanduser().resolve() if temp_dir else home / "duckdb_tmp"
            ),
            engine=_choice(env, "MICROSEG_ENGINE", ("duckdb", "spark")) or "duckdb",
            spark_threads=spark_threads,
            spark_driver_memory=spark_memory,
        )


# Every tool in the stack phones home unless told not to; the machines running this have no
# network, so a telemetry call is at best a delay. Entry points call this once.
_OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "False",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # not a phone-home: keeps output one line
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
}


def restrict_new_files(settings: Settings) -> None:
    """Files the pipeline writes hold behavior of identifiable people: create them 0600 and
    folders 0700 (0640/0750 with MICROSEG_GROUP_READ, for analysts in the owner's group).
    Entry points call this once; child processes (dbt, Airflow tasks) inherit it."""
    os.umask(0o027 if settings.group_read else 0o077)
    if settings.home.is_dir() and settings.home.stat().st_uid == os.getuid():
        settings.home.chmod(0o750 if settings.group_read else 0o700)


def debug_enabled() -> bool:
    """MICROSEG_DEBUG=1: let internal errors show their traceback."""
    return os.environ.get("MICROSEG_DEBUG") == "1"


def disable_telemetry() -> None:
    """Set the opt-out variables of GX, dbt, MLflow and Airflow unless the user set them."""
    for name, value in _OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
