"""The nightly DAG builds dbt in layers (dbt_project/selectors.yml): every model and data test
in exactly one layer, no model reading a later layer, each test right after its last parent."""

from __future__ import annotations

import json

from microseg.config import Settings
from microseg.ingest import ingest_paths
from microseg.transform import STEP_MODELS, run_dbt
from microseg.warehouse import connect

LAYERS = ("events", "sessions", "person_days")  # the order of dags/behavior_nightly.py


def _listed(settings: Settings, selector: str) -> set[str]:
    resources = ["--resource-type", "model", "--resource-type", "test"]
    output = ["--output", "json", "--output-keys", "unique_id"]
    lines = run_dbt(settings, "ls", "--quiet", "--selector", selector, *resources, *output)
    return {json.loads(line)["unique_id"] for line in lines if line.startswith("{")}


def test_layers_partition_the_project_in_build_order(settings) -> None:
    layer_of: dict[str, int] = {}
    for index, name in enumerate(LAYERS):
        for node in _listed(settings, name):
            assert node not in layer_of, f"{node} is in two layers"
            layer_of[node] = index
    manifest = json.loads((settings.dbt_target_dir / "manifest.json").read_text())
    step_folders = tuple(f"{path.removeprefix('path:models/')}/" for path in STEP_MODELS)
    step_models = {
        uid for uid, node in manifest["nodes"].items() if node["path"].startswith(step_folders)
    }
    nodes = {
        uid: node
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "test")
        and uid not in step_models
        and not step_models & set(node["depends_on"]["nodes"])
    }
    assert set(layer_of) == set(nodes)  # segments and triggers are their steps'
    for uid, node in nodes.items():
        parents = [p for p in node["depends_on"]["nodes"] if p.startswith("model.")]
        latest = max((layer_of[p] for p in parents), default=0)
        if node["resource_type"] == "model":
            assert latest <= layer_of[uid], f"{uid} reads a model of a later layer"
        else:
            assert layer_of[uid] == latest, f"{uid} runs before its last parent is rebuilt"


def test_duckdb_limits_reach_microseg_and_dbt(tmp_path) -> None:
    """MICROSEG_DUCKDB_* bound every warehouse connection: microseg's own and dbt's."""
    settings = Settings.from_env(
        {
            "MICROSEG_HOME": str(tmp_path / "home"),
            "MICROSEG_DUCKDB_MEMORY_LIMIT": "123MB",
            "MICROSEG_DUCKDB_THREADS": "1",
            "MICROSEG_DUCKDB_TEMP_DIR": str(tmp_path / "spill"),
        }
    )
    query = (
        "select current_setting('memory_limit') as memory_limit, "
        "current_setting('threads') as threads, current_setting('temp_directory') as spill"
    )
    expected = {"memory_limit": "117.3 MiB", "threads": 1, "spill": str(tmp_path / "spill")}
    with connect(settings) as con:
        assert dict(zip(expected, con.execute(query).fetchone(), strict=True)) == expected
    lines = run_dbt(settings, "show", "--quiet", "--inline", query, "--output", "json")
    shown = json.loads("\n".join(lines[lines.index("{") :]))["show"]
    assert shown == [expected]


def test_the_project_compiles_before_anything_is_built(settings, tmp_path) -> None:
    """`dbt compile` (and docs, CI) on a warehouse ingested but not built yet: the models that
    look at their tables while compiling (late events' batches, a table's batch count) find
    none and still compile."""
    event = {"event_id": "e1", "event_type": "page_view", "event_at": "2026-10-01T10:00:00Z"}
    (tmp_path / "events_2026-10-01.jsonl").write_text(json.dumps({**event, "user_id": "u1"}))
    ingest_paths(settings, [tmp_path / "events_2026-10-01.jsonl"])
    run_dbt(settings, "compile", "--quiet", "--exclude", *STEP_MODELS)  # those need a step's date
    compiled = settings.dbt_target_dir / "compiled" / "microseg" / "models"
    late = (compiled / "intermediate" / "int_late_events.sql").read_text()
    assert "(false)" in late  # no unfinished batch: no staged row is looked up
