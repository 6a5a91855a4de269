"""The analysts' notebooks run end to end against a published snapshot of a warehouse that has
everything they draw (segments, a champion, scores, clusters, activation and an experiment):
nbclient, a real kernel, a real MLflow registry. Each shows its figures, in the notebook and in
its HTML page, and the numbers beside them agree with the marts; a broken one stops with one
line."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import date, timedelta
from pathlib import Path

import duckdb
import nbformat
import pytest

from microseg.activation import activate
from microseg.config import Settings
from microseg.docs import NOTEBOOKS_DIR, run_notebooks
from microseg.errors import MicrosegError
from microseg.experiments.analyze import analyze
from microseg.experiments.grammar import load_configured_experiments
from microseg.publish import publish
from microseg.segments import load_segments, run_segments
from ml.cluster import cluster
from ml.score import score
from tests.helpers import champion_copy, run_cli, short_window_experiments

pytestmark = pytest.mark.slow

ACTIVATED = [date(2026, 10, 7) + timedelta(days=i) for i in range(6)]  # the last: 10-12
SEGMENT_NIGHTS = ACTIVATED[-3:]
CLUSTER_DATES = [date(2026, 10, 12), date(2026, 10, 13)]
FIGURES = {  # notebook -> figures it draws on this warehouse
    "activation": 3,  # outcomes per trigger, caps, lift (a cap holds messages back here)
    "clusters": 2,
    "cohorts": 2,
    "funnel": 2,
    "micro_behaviors": 3,
    "models": 6,  # curves, lift by decile, importance, fairness, scores, drift
    "segments": 3,
}


@pytest.fixture(scope="module")
def published(champion_home: Path, tmp_path_factory) -> Settings:
    """A copy of the champion's warehouse, acted on for a week and published for analysts."""
    env = champion_copy(champion_home, tmp_path_factory.mktemp("notebooks_home"))
    experiments = short_window_experiments(Path(env["MICROSEG_HOME"]))
    settings = Settings.from_env({**env, "MICROSEG_EXPERIMENTS_FILE": str(experiments)})
    for night in ACTIVATED:
        if night in SEGMENT_NIGHTS:
            run_segments(settings, night)
        activate(settings, night)
    experiments = load_configured_experiments(settings)
    for night in SEGMENT_NIGHTS:
        analyze(settings, experiments, night)
    score(settings)
    for as_of in CLUSTER_DATES:
        cluster(settings, as_of)
    publish(settings)
    return settings


@pytest.fixture(scope="module")
def executed(published: Settings) -> dict[str, nbformat.NotebookNode]:
    """Every notebook run once by `microseg notebooks`' function, as an analyst's kernel sees
    the settings (environment variables)."""
    scratch = Path(tempfile.mkdtemp(prefix="nb-", dir="/tmp"))  # short: socket paths <= 107
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))
        patch.setenv("MICROSEG_MLFLOW_TRACKING_URI", published.mlflow_tracking_uri)
        patch.setenv("MICROSEG_EXPERIMENTS_FILE", str(published.experiments_file))
        written = run_notebooks(published)
    assert list(scratch.iterdir()) == []  # the kernels' socket folders are gone
    scratch.rmdir()
    return {path.stem: nbformat.read(path, as_version=4) for path in written}


def _outputs(notebook, kind: str) -> list:
    return [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if kind in output.get("data", {}) or output.get("output_type") == kind
    ]


def _first_table(notebook) -> str:
    return _outputs(notebook, "text/plain")[0]["data"]["text/plain"]


def _snapshot(settings: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(settings.analytics_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_every_notebook_runs_and_shows_its_figures_in_its_html_page(published, executed):
    assert sorted(executed) == sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    assert sorted(executed) == sorted(FIGURES)  # a new notebook gets its expected figures here
    for name, notebook in executed.items():
        assert _outputs(notebook, "error") == [], name
        figures = _outputs(notebook, "image/png")
        assert len(figures) == FIGURES[name], name
        page = (published.home / "notebooks" / f"{name}.html").read_text()
        assert page.count('src="data:image/png;base64,') == len(figures), name


def test_segments_notebook_names_every_segment_and_night(published, executed):
    table = _first_table(executed["segments"])
    for segment in load_segments(published.segments_file):
        assert segment.name in table
    assert all(night.isoformat() in table for night in SEGMENT_NIGHTS)


def test_funnel_counts_every_session_and_narrows_step_by_step(published, executed):
    table = _first_table(executed["funnel"])
    counts = [int(re.search(rf"^{step}\s+(\d+)", table, re.M).group(1)) for step in (
        "session", "product_view", "cart", "checkout", "purchase"
    )]  # fmt: skip
    [(sessions, purchases)] = _snapshot(
        published, "select count(*), count(*) filter (where has_purchase) from marts.fct_sessions"
    )
    assert counts[0] == sessions
    assert counts == sorted(counts, reverse=True) and 0 < counts[-1] <= purchases


def test_cohorts_are_the_first_seen_weeks_with_their_sizes(published, executed):
    table = _first_table(executed["cohorts"])
    cohorts = _snapshot(
        published,
        "select date_trunc('week', first_seen_at)::date, count(*) from marts.dim_persons "
        "where first_seen_at is not null group by 1 order by 1",
    )
    assert len(cohorts) >= 2
    for week, people in cohorts:
        assert f"{week.isoformat()} ({people:,})" in table


def test_micro_behaviors_mark_segment_and_trigger_thresholds(published, executed):
    table = _first_table(executed["micro_behaviors"])
    assert re.search(r"segment product_hesitators\s+product\s+dwell_s\s+>\s+120\.0", table)
    assert re.search(r"trigger product_lingerer\s+product\s+dwell_s\s+>\s+300\.0", table)
    # a baseline threshold is drawn at the value its latest firing used
    [(used,)] = _snapshot(
        published,
        "select arg_max(thresholds, fired_at) ->> 'product_page_dwell_s' "
        "from marts.trigger_firings where trigger_name = 'unusual_product_dwell'",
    )
    line = re.search(r"trigger unusual_product_dwell\s+product\s+dwell_s\s+>\s+([\d.]+)", table)
    assert line and float(line.group(1)) == pytest.approx(float(used), abs=1e-3)


def test_the_heatmap_view_counts_what_the_element_mart_counts(published):
    [(view, mart)] = _snapshot(
        published,
        "select (select (sum(hovers), sum(clicks), sum(hover_ms)) "
        "        from marts.element_heatmap_daily), "
        "       (select (sum(hovers), sum(clicks), sum(hover_ms)) "
        "        from marts.fct_element_interactions)",
    )
    assert view == mart and view[0] > 0


def test_models_notebook_shows_the_registered_champion(executed):
    table = _first_table(executed["models"])
    assert re.search(r"model\s+purchase_propensity", table)
    assert re.search(r"version\s+1\b", table)
    why = _outputs(executed["models"], "text/plain")[-1]["data"]["text/plain"]
    assert why.count("purchase_propensity") == 3 and "contribution" in why
    streams = "".join(o.get("text", "") for o in _outputs(executed["models"], "stream"))
    assert "retrain" not in streams and "Downloading" not in streams


def test_clusters_notebook_names_each_cluster(published, executed):
    table = _first_table(executed["clusters"])
    labels = _snapshot(
        published,
        "select distinct cluster_label from marts.cluster_profiles "
        f"where as_of_date = '{CLUSTER_DATES[-1]}'",
    )
    assert len(labels) >= 2
    for (label,) in labels:
        assert label in table


def test_activation_notebook_reports_each_trigger_and_the_latest_decision(published, executed):
    table = _first_table(executed["activation"])
    for (trigger,) in _snapshot(
        published, "select distinct trigger_name from marts.activation_report"
    ):
        assert trigger in table
    decision = _outputs(executed["activation"], "text/plain")[-1]["data"]["text/plain"]
    assert "cart_reminder" in decision and SEGMENT_NIGHTS[-1].isoformat() in decision


def test_a_failing_cell_is_one_line_naming_the_notebook_and_cell(published, tmp_path) -> None:
    broken = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x / 0")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(broken, tmp_path / "broken.ipynb")
    with pytest.raises(MicrosegError) as failed:
        run_notebooks(published, tmp_path)
    assert str(failed.value) == "notebook broken.ipynb: cell 1: ZeroDivisionError: division by zero"


def test_without_a_snapshot_the_command_says_what_to_run(tmp_path) -> None:
    result = run_cli("notebooks", home=tmp_path / "empty")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no analysts' snapshot at {tmp_path / 'empty' / 'analytics.duckdb'}: "
        "run `microseg publish`"
    ]


def test_docs_site_covers_the_models_that_need_a_nights_run_values(published) -> None:
    """`microseg docs` compiles every model, the segment and trigger models too (they refuse
    to compile without the night's run values), and rebuilds GX's Data Docs."""
    result = run_cli("docs", home=published.home, timeout=600)
    assert result.returncode == 0, result.stderr
    site = published.dbt_target_dir / "static_index.html"
    assert result.stdout.splitlines() == [
        f"dbt docs: {site.as_uri()}",
        f"Great Expectations Data Docs: {published.data_docs_index.as_uri()}",
    ]
    page = site.read_text()
    for model in ("model.microseg.trigger_firings", "model.microseg.segment_memberships"):
        assert model in page
    assert published.data_docs_index.exists()


def _manifest(settings: Settings) -> dict:
    return json.loads((settings.dbt_target_dir / "manifest.json").read_text())


def test_each_notebook_is_an_exposure_on_exactly_the_marts_it_reads(published) -> None:
    manifest = _manifest(published)
    exposures = {e["url"]: e for e in manifest["exposures"].values()}
    names = {
        uid: node["name"]
        for uid, node in [*manifest["nodes"].items(), *manifest["sources"].items()]
    }
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        read = set(re.findall(r"\bmarts\.([a-z_]+)\b", code))
        exposure = exposures[f"notebooks/{path.name}"]
        assert exposure["type"] == "notebook"
        assert {names[uid] for uid in exposure["depends_on"]["nodes"]} == read, path.name


def test_tables_written_from_python_declare_their_column_types(published) -> None:
    """The marts that Python writes (dbt sources: scores, clusters, activation, experiments)
    are declared like dbt's contracted marts: every column with its type, as the warehouse
    holds it (a column added, dropped or retyped in Python without the declaration fails)."""
    manifest = _manifest(published)
    declared = {
        node["name"]: {name: column.get("data_type") for name, column in node["columns"].items()}
        for node in manifest["sources"].values()
        if node["schema"] == "marts"
    }
    with duckdb.connect(str(published.warehouse_path), read_only=True) as con:
        held: dict[str, dict[str, str]] = {}
        for table, column, kind in con.execute(
            "select table_name, column_name, lower(data_type) from information_schema.columns "
            "where table_schema = 'marts' order by table_name, ordinal_position"
        ).fetchall():
            held.setdefault(table, {})[column] = kind
    models = {node["name"] for node in manifest["nodes"].values()}
    assert set(held) - models - set(declared) == set()  # every table Python writes is declared
    checked = sorted(set(declared) & set(held))
    assert len(checked) >= 12, checked
    assert {t: declared[t] for t in checked} == {t: held[t] for t in checked}


def test_every_column_of_every_mart_is_described_in_the_dbt_docs(published) -> None:
    """Tables written from Python (sources) as much as dbt's own models."""
    manifest = _manifest(published)
    described = {
        node["name"]: {name for name, column in node["columns"].items() if column["description"]}
        for node in [*manifest["nodes"].values(), *manifest["sources"].values()]
        if node["resource_type"] in ("model", "source") and node["schema"] == "marts"
    }
    with duckdb.connect(str(published.warehouse_path), read_only=True) as con:
        columns = con.execute(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = 'marts' order by table_name, ordinal_position"
        ).fetchall()
    undescribed = [f"{t}.{c}" for t, c in columns if c not in described.get(t, set())]
    assert len({t for t, _ in columns}) >= 25
    assert undescribed == []
