"""Parse dags/ with Airflow's DagBag and print what the integrity test checks, as JSON.

Run in a subprocess: Airflow reads AIRFLOW_HOME and its settings once, at first import.
"""

import json
import sys

from airflow.dag_processing.dagbag import DagBag

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
                "expression": getattr(dag.timetable, "expression", None),
                "timezone": str(getattr(dag.timetable, "timezone", "")),
            },
            "tasks": {
                t.task_id: {
                    "owner": t.owner,
                    "retries": t.retries,
                    "pool": t.pool,
                    "trigger_rule": getattr(t.trigger_rule, "value", str(t.trigger_rule)),
                    # a Cosmos dbt task's command line after `dbt`
                    "command": " ".join(t.build_cmd(context={})[0][1:])
                    if hasattr(t, "build_cmd")
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
