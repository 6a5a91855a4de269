"""Shared fixtures: an isolated MICROSEG_HOME per test, and small generated data sets."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from microseg.config import Settings, disable_telemetry
from microseg.experiments.grammar import load_configured_experiments
from microseg.generate import GeneratorConfig, generate
from microseg.generate.experiments import planted_effects
from microseg.ingest import ingest_paths
from microseg.transform import transform
from tests.helpers import short_window_experiments

disable_telemetry()
# Spark's JVM (test_spark_target) runs jobs of a few hundred rows, where the C2 compiler and
# the parallel collector's threads only take CPU the other xdist worker needs: that module
# alone used 743 CPU-seconds in 473 s, 535 in 434 s with these. The product keeps the defaults.
# C1 alone gets a 48 MB code cache, which a night's Spark job filled ("Out of space in
# CodeCache") in one run of three: the tiered default size, 240 MB, is kept.
os.environ.setdefault(
    "JAVA_TOOL_OPTIONS",
    "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m",
)

# Modules that take many minutes go to the workers first (make test runs pytest-xdist with
# --dist loadfile --no-loadscope-reorder, which hands out modules in collection order):
# started last, one of them would keep a single worker busy after the other has finished.
SLOWEST_MODULES = (
    "tests/e2e/test_airflow_ui.py",
    "tests/integration/test_incremental.py",
    "tests/integration/test_spark_target.py",
    "tests/integration/test_notebooks.py",
    "tests/dbt/test_segments.py",
    "tests/integration/test_activation.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = {module: rank for rank, module in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose MICROSEG_HOME is a fresh folder for this test."""
    home = tmp_path / "home"
    monkeypatch.setenv("MICROSEG_HOME", str(home))
    return Settings.from_env()


PLANTED_LIFT = ("lift", "cart_reminder", "reminder", 0.9)  # small_dataset's (1-day window)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 people over 5 days as daily .jsonl.gz dumps, with ground truth beside them, and
    a true effect of the reminder arm of cart_reminder as short_window_experiments runs it."""
    experiments = short_window_experiments(tmp_path_factory.mktemp("small_experiments"))
    configured = Settings.from_env({"MICROSEG_EXPERIMENTS_FILE": str(experiments)})
    lifts = planted_effects(load_configured_experiments(configured), [PLANTED_LIFT])
    out = tmp_path_factory.mktemp("small")
    generate(GeneratorConfig(users=300, days=5, seed=11, planted_effects=lifts), out)
    return out


@pytest.fixture(scope="session")
def built(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A warehouse with small_dataset ingested and every dbt model built (shared: read it,
    or copy it before changing it)."""
    home = tmp_path_factory.mktemp("dbt_home")
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    ingest_paths(settings, [small_dataset])
    counts = transform(settings)
    assert counts["sessions"] > 500
    return settings


def _built_home(dataset: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    home = tmp_path_factory.mktemp(name)
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    ingest_paths(settings, [dataset])
    transform(settings)
    return home


@pytest.fixture(scope="session")
def twelve_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 people over 12 days: clusters, recommenders, retention, the Airflow nights."""
    out = tmp_path_factory.mktemp("twelve_days")
    generate(GeneratorConfig(users=600, days=12, seed=3), out)
    return out


@pytest.fixture(scope="session")
def twelve_days_home(twelve_days: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MICROSEG_HOME with twelve_days ingested and the dbt models built."""
    return _built_home(twelve_days, tmp_path_factory, "twelve_days_home")


@pytest.fixture(scope="session")
def eight_weeks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 people over 56 days: a 7-day label's test date, validation date and six training
    dates with the embargo between them, all with four weeks of history before them (trained
    on younger ones, trees meet counts at test time they never saw and lose to a line)."""
    out = tmp_path_factory.mktemp("eight_weeks")
    generate(GeneratorConfig(users=600, days=56, seed=3), out)
    return out


@pytest.fixture(scope="session")
def eight_weeks_home(eight_weeks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MICROSEG_HOME with eight_weeks ingested and the dbt models built (models)."""
    return _built_home(eight_weeks, tmp_path_factory, "eight_weeks_home")


@pytest.fixture(scope="session")
def champion_home(eight_weeks_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of eight_weeks_home whose MLflow registry holds a purchase_propensity
    champion (shared: read it, or copy the warehouse before changing it)."""
    from ml.promote import promote
    from ml.train import train

    home = tmp_path_factory.mktemp("champion_home")
    shutil.copy(eight_weeks_home / "warehouse.duckdb", home)
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    train(settings, "purchase_propensity")
    assert promote(settings, "purchase_propensity").promoted
    return home


@pytest.fixture(scope="session")
def dataset_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Generate (once per argument set) a data set in a given format."""
    cache: dict[tuple, Path] = {}

    def make(users: int = 80, days: int = 2, seed: int = 5, file_format: str = "jsonl.gz") -> Path:
        key = (users, days, seed, file_format)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"gen_{file_format.replace('.', '_')}")
            generate(
                GeneratorConfig(users=users, days=days, seed=seed, file_format=file_format), out
            )
            cache[key] = out
        return cache[key]

    return make
