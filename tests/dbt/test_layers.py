"""The nightly DAG builds dbt in layers (dbt_project/selectors.yml): every model and data test
in exactly one layer, no model reading a later layer, each test right after its last parent."""

from __future__ import annotations

import json

from microseg.config import Settings
from microseg.transform import STEP_MODELS, run_dbt

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
