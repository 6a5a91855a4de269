"""Parse dags/ with Airflow's DagBag and print what the integrity test checks, as JSON.

Run in a subprocess: Airflow reads AIRFLOW_HOME and its settings once, at first import.
"""

import json
import sys

from airflow.dag_processing.dagbag import DagBag


def asset_uris(condition) -> list[str]:
    """The assets of a schedule's condition (an asset, or all/any of several)."""
    if condition is None:
        return []
    if hasattr(condition, "uri"):
        return [condition.uri]
    return sorted(uri for part in condition.objects for uri in asset_uris(part))


bag = DagBag(dag_folder=sys.argv[1])
report = {
    "import_errors": {k: v.splitlines()[-1] for k, v in bag.import_errors.items()},
    "parse_seconds": {
        s.file.rsplit("/", 1)[-1]: s.duration.total_seconds() for s in bag.dagbag_stats
    },
    "dags": {
        dag_id: {
            "tags": sorted(dag.tags),
            "doc_md": dag.doc_md or "",
            "max_active_runs": dag.max_active_runs,
            "catchup": dag.catchup,
            "timetable": {
                "kind": type(dag.timetable).__name__,
                # an asset-or-time schedule: its time part
                "expression": getattr(
                    getattr(dag.timetable, "timetable", dag.timetable), "expression", None
                ),
                "timezone": str(
                    getattr(getattr(dag.timetable, "timetable", dag.timetable), "timezone", "")
                ),
                "assets": asset_uris(getattr(dag.timetable, "asset_condition", None)),
            },
            "tasks": {
                t.task_id: {
                    "owner": t.owner,
                    "retries": t.retries,
                    "pool": t.pool,
                    "trigger_rule": getattr(t.trigger_rule, "value", str(t.trigger_rule)),
                    "outlets": sorted(a.uri for a in t.outlets),
                    # a Cosmos dbt task's command line after `dbt`
                    "command": " ".join(t.build_cmd(context={})[0][1:])
                    if hasattr(t, "build_cmd")
                    else None,
                    # the profiles.yml output a Cosmos dbt task builds on
                    "dbt_target": t.profile_config.target_name
                    if hasattr(t, "profile_config")
                    else None,
                }
                for t in dag.tasks
            },
            "edges": sorted(
                [t.task_id, d] for t in dag.tasks for d in sorted(t.downstream_task_ids)
            ),
        }
        for dag_id, dag in bag.dags.items()
    },
}
print(json.dumps(report))
