"""`microseg promote`: move `champion` to the challenger only through the gate.

The challenger must reach the spec's minimum on its own holdout (its newest as-of dates), beat
the champion on that same holdout by the configured margin, and pass the fairness audit. The
decision and its reasons are logged on the challenger's MLflow run, the audit is also written
to marts.model_fairness_audit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.warehouse import connect
from ml import registry
from ml.fairness import Audit, audit
from ml.specs import load_spec
from ml.train import model_metrics
from ml.training_sets import people_at

AUDIT_TABLE_DDL = """
create table if not exists marts.model_fairness_audit (
    model_name varchar, model_version varchar, attribute varchar, group_name varchar,
    rows bigint, positives bigint, roc_auc double, positive_rate double,
    true_positive_rate double, calibration_gap double, accuracy double, is_judged boolean,
    audit_passed boolean
)"""


@dataclass(frozen=True)
class Decision:
    model: str
    challenger_version: str
    champion_version: str | None  # before the decision
    promoted: bool
    metric: str
    challenger_value: float
    champion_value: float | None
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = f"{self.model} v{self.challenger_version}"
        values = f"{self.metric} {self.challenger_value:.4f}" + (
            f" vs champion v{self.champion_version} {self.champion_value:.4f}"
            if self.champion_value is not None
            else " (no champion yet)"
        )
        if self.promoted:
            return f"{head} promoted to champion: {values}, fairness audit passed"
        return f"{head} not promoted ({values}): " + "; ".join(self.reasons)


def save_audit(settings: Settings, model: str, version: str, result: Audit) -> None:
    table = result.groups.rename(columns={"group": "group_name", "judged": "is_judged"})
    table.insert(0, "model_version", version)
    table.insert(0, "model_name", model)
    table["audit_passed"] = result.passed
    with connect(settings) as con:
        con.execute("create schema if not exists marts")
        con.execute(AUDIT_TABLE_DDL)
        con.execute(  # tables from before multiclass models
            "alter table marts.model_fairness_audit add column if not exists accuracy double"
        )
        con.execute("begin")
        con.execute(
            "delete from marts.model_fairness_audit where model_name = ? and model_version = ?",
            [model, version],
        )
        con.register("audit_rows", table)
        con.execute("insert into marts.model_fairness_audit by name select * from audit_rows")
        con.execute("commit")


def promote(settings: Settings, name: str) -> Decision:
    """Decide on the current challenger of `name`; move the champion alias if it passes."""
    spec = load_spec(name, settings.ml_specs_dir)
    client = registry.client(settings)
    challenger = registry.version_by_alias(client, name, registry.CHALLENGER)
    if challenger is None:
        raise MicrosegError(f"{name} has no challenger: run `microseg train --model {name}`")
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    params = client.get_run(challenger.run_id).data.params
    holdout_dates = [date.fromisoformat(d) for d in json.loads(params["test_dates"])]
    holdout = people_at(settings, spec, holdout_dates, labelled=True)
    labels = holdout.label.to_numpy()
    metric = spec.promotion["metric"]

    def evaluate(version: str):
        scorer = registry.load_scorer(settings, name, version=version)
        scores = scorer.predict(scorer.inputs(holdout))
        return (
            scorer,
            scores,
            model_metrics(labels, scores, scorer.classes, scorer.threshold)[metric],
        )

    scorer, scores, challenger_value = evaluate(challenger.version)
    reasons = []
    if challenger_value < spec.promotion["min_value"]:
        reasons.append(f"{metric} {challenger_value:.4f} is below {spec.promotion['min_value']}")
    champion_value = None
    if champion is not None:
        if champion.version == challenger.version:
            reasons.append("the challenger already is the champion")
        _, _, champion_value = evaluate(champion.version)
        margin = spec.promotion["min_gain"]
        if challenger_value < champion_value + margin:
            reasons.append(
                f"does not beat champion v{champion.version} by {margin} on {metric} "
                f"({challenger_value:.4f} vs {champion_value:.4f}, same holdout)"
            )
    result = audit(holdout, scores, spec, scorer.threshold, scorer.classes)
    reasons += [f"fairness audit failed: {failure}" for failure in result.failures]
    save_audit(settings, name, str(challenger.version), result)
    decision = Decision(
        model=name,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        promoted=not reasons,
        metric=metric,
        challenger_value=challenger_value,
        champion_value=champion_value,
        reasons=reasons,
    )
    client.log_text(
        challenger.run_id, result.groups.to_csv(index=False), "promotion/fairness_audit.csv"
    )
    registry.record_decision(
        client,
        name,
        challenger,
        {**decision.__dict__, "holdout": [str(d) for d in holdout_dates]},
        decision.summary(),
    )
    return decision
