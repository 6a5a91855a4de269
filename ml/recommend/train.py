"""`microseg recommend train` and `promote`: a recommender spec's challenger in the MLflow
registry, and the gate that makes it champion.

Training evaluates every model on the time split (ml.recommend.evaluate); the learned kind
with the best validation NDCG, refitted on all interactions, is logged (its configuration, its
test metrics beside the baselines', the evaluation table, and its item factors as a pyfunc
model that ranks items like a given history: ml/recommend/pyfunc_model.py; no person data
goes to MLflow) and registered as `challenger`. Promotion re-evaluates the challenger's and
the champion's configurations on the same test days and moves `champion` only when the
challenger beats it and popularity by the spec's margins.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import implicit
import numpy as np
import pandas as pd

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.warehouse import connect
from ml import registry
from ml.recommend.evaluate import (
    BASELINES,
    Evaluation,
    build_split,
    evaluate,
    read_warehouse_clusters,
    read_warehouse_groups,
    read_warehouse_interactions,
    score,
    splits,
)
from ml.recommend.metrics import METRICS
from ml.recommend.models import Recommender
from ml.recommend.spec import RecommendSpec, load_recommend_spec

FACTORS_ARTIFACT = "factors.npz"


def _signature():
    """(user, item) histories in; (user, rank, item, score) out; k a parameter."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user"), ColSpec("string", "item")]),
        outputs=Schema(
            [
                ColSpec("string", "user"),
                ColSpec("long", "rank"),
                ColSpec("string", "item"),
                ColSpec("double", "score"),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )


@dataclass(frozen=True)
class RecommenderTraining:
    model: str
    version: str
    kind: str
    params: dict
    evaluation: Evaluation


def _interactions_before(frame: pd.DataFrame, as_of: date | None) -> date:
    return as_of or (frame.time.max().date() + timedelta(days=1))


def train_recommender(
    settings: Settings, name: str, as_of: date | None = None
) -> RecommenderTraining:
    """Evaluate, fit the best learned model on every interaction before as_of, register it."""
    import mlflow

    spec = load_recommend_spec(name, settings.ml_specs_dir)
    frame = read_warehouse_interactions(settings, spec, as_of)
    if frame.empty:
        raise MicrosegError(f"{name}: no interactions in marts.fct_person_item_interactions")
    evaluation = evaluate(
        spec,
        frame,
        groups=read_warehouse_groups(settings, frame, spec.test_days),
        clusters=read_warehouse_clusters(settings, frame, spec.test_days),
    )
    table = evaluation.table
    learned = table.dropna(subset=["validation_ndcg"])
    best = learned.loc[learned.validation_ndcg.idxmax()]
    everything = build_split(frame, frame.iloc[:0])
    model = Recommender(best.model, best.params, seed=spec.seed).fit(everything.train)
    client = registry.client(settings)
    before = _interactions_before(frame, as_of)
    by_model = table.set_index("model")
    with (
        mlflow.start_run(
            experiment_id=registry.experiment_id(settings, client, name),
            run_name=f"{name} ({best.model}) on interactions before {before}",
        ),
        tempfile.TemporaryDirectory() as tmp,
    ):
        mlflow.log_params(
            {
                "kind": best.model,
                "kind_params": json.dumps(best.params, sort_keys=True),
                **best.params,
                "seed": spec.seed,
                "k": spec.k,
                "test_days": spec.test_days,
                "interactions_before": before.isoformat(),
                "users": everything.train.shape[0],
                "items": everything.train.shape[1],
            }
        )
        for model_name, row in by_model.iterrows():  # the challenger's as test_*
            prefix = "test" if model_name == best.model else f"{model_name}_test"
            mlflow.log_metrics({f"{prefix}_{m}": float(row[m]) for m in METRICS})
        mlflow.log_metric("validation_ndcg", float(best.validation_ndcg))
        mlflow.log_dict(spec.raw, "spec.yaml")
        mlflow.log_text(table.to_csv(index=False), "evaluation/models.csv")
        mlflow.log_text(evaluation.by_group.to_csv(index=False), "evaluation/by_group.csv")
        factors = Path(tmp) / FACTORS_ARTIFACT
        np.savez(
            factors, items=everything.items.to_numpy(dtype=str), item_factors=model.item_factors()
        )
        tags = registry.lineage_tags(settings)
        mlflow.set_tags(tags)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            signature=_signature(),
            artifacts={"factors": str(factors)},
            registered_model_name=name,
            pip_requirements=[f"implicit=={implicit.__version__}", f"pandas=={pd.__version__}"],
        )
        version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    _save_metrics(settings, name, version, before, best.model, evaluation)
    return RecommenderTraining(name, version, best.model, best.params, evaluation)


METRICS_DDL = f"""
create table if not exists marts.recommendation_metrics (
    model_name varchar not null,        -- the recommender spec
    model_version varchar not null,     -- the version registered by this evaluation
    interactions_before date not null,  -- the evaluation's data: interactions before this day
    model varchar not null,             -- als, bpr, popularity or cooccurrence
    is_registered boolean not null,     -- the model registered as that version
    attribute varchar not null,         -- all, device_type or visitor_type
    value varchar not null,             -- the group (all for attribute all)
    users integer not null,             -- judged users: with new items in the test days
    {", ".join(f"{m} double not null" for m in METRICS)},
    primary key (model_name, model_version, model, attribute, value)
)"""


def _save_metrics(
    settings: Settings,
    name: str,
    version: str,
    before: date,
    registered: str,
    evaluation: Evaluation,
) -> None:
    """Every model's test metrics, overall and per group, into marts.recommendation_metrics."""
    overall = evaluation.table[["model", *METRICS]].assign(
        attribute="all", value="all", users=evaluation.judged
    )
    rows = pd.concat([overall, evaluation.by_group], ignore_index=True)
    rows = rows[rows.model != "reference"].assign(
        model_name=name,
        model_version=version,
        interactions_before=before,
        is_registered=lambda r: r.model == registered,
    )
    with connect(settings) as con:
        con.execute("create schema if not exists marts")
        con.execute(METRICS_DDL)
        con.execute("begin")
        con.execute(
            "delete from marts.recommendation_metrics where model_name = ? and model_version = ?",
            [name, version],
        )
        con.register("new_metrics", rows)
        con.execute("insert into marts.recommendation_metrics by name select * from new_metrics")
        con.execute("commit")


def describe_training(result: RecommenderTraining) -> str:
    table = result.evaluation.table.set_index("model")
    mine = table.loc[result.kind]
    baselines = ", ".join(
        f"{model.replace('_', ' ')} {table.ndcg[model]:.4f}"
        for model in (*BASELINES, "cluster_popularity")
        if model in table.index
    )
    return (
        f"{result.model} v{result.version} (challenger): {result.kind} "
        f"({', '.join(f'{k}={v}' for k, v in result.params.items())}), test NDCG@K "
        f"{mine.ndcg:.4f} ({baselines}), recall {mine.recall:.4f}, coverage {mine.coverage:.3f}"
    )


@dataclass(frozen=True)
class RecommenderDecision:
    model: str
    challenger_version: str
    champion_version: str | None
    promoted: bool
    challenger_ndcg: float
    champion_ndcg: float | None
    popularity_ndcg: float
    reasons: list[str]

    def summary(self) -> str:
        verdict = "promoted to champion" if self.promoted else "not promoted: "
        return (
            f"{self.model} v{self.challenger_version} {verdict}{'; '.join(self.reasons)} "
            f"(NDCG@K {self.challenger_ndcg:.4f}, popularity {self.popularity_ndcg:.4f}"
            + (
                f", champion v{self.champion_version} {self.champion_ndcg:.4f})"
                if self.champion_ndcg is not None
                else ")"
            )
        )


def configuration(client, version) -> tuple[str, dict, int]:
    """(kind, hyperparameters, seed) a registered recommender was trained with."""
    params = client.get_run(version.run_id).data.params
    return params["kind"], json.loads(params["kind_params"]), int(params["seed"])


def promote_recommender(settings: Settings, name: str) -> RecommenderDecision:
    """Gate the challenger: on the test days of its training interactions, its NDCG@K must
    beat the champion's configuration by min_gain and popularity by
    min_lift_over_popularity (both relative)."""
    spec: RecommendSpec = load_recommend_spec(name, settings.ml_specs_dir)
    client = registry.client(settings)
    challenger = registry.version_by_alias(client, name, registry.CHALLENGER)
    if challenger is None:
        raise MicrosegError(
            f"{name} has no challenger: run `microseg recommend train --model {name}`"
        )
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    before = date.fromisoformat(
        client.get_run(challenger.run_id).data.params["interactions_before"]
    )
    _, test = splits(read_warehouse_interactions(settings, spec, before), spec.test_days)

    def ndcg(version) -> float:
        kind, params, seed = configuration(client, version)
        return score(kind, params, test, spec.k, seed)["ndcg"]

    challenger_ndcg = ndcg(challenger)
    popularity_ndcg = score("popularity", {}, test, spec.k, spec.seed)["ndcg"]
    reasons = []
    floor = popularity_ndcg * (1 + spec.min_lift_over_popularity)
    if challenger_ndcg < floor:
        reasons.append(
            f"does not beat popularity by {spec.min_lift_over_popularity:.0%} "
            f"({challenger_ndcg:.4f} < {floor:.4f})"
        )
    champion_ndcg = None
    if champion is not None:
        if champion.version == challenger.version:
            reasons.append("the challenger already is the champion")
        champion_ndcg = ndcg(champion)
        if challenger_ndcg < champion_ndcg * (1 + spec.min_gain):
            reasons.append(
                f"does not beat champion v{champion.version} by {spec.min_gain:.0%} "
                f"({challenger_ndcg:.4f} vs {champion_ndcg:.4f}, same test days)"
            )
    decision = RecommenderDecision(
        model=name,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        promoted=not reasons,
        challenger_ndcg=challenger_ndcg,
        champion_ndcg=champion_ndcg,
        popularity_ndcg=popularity_ndcg,
        reasons=reasons,
    )
    registry.record_decision(client, name, challenger, decision.__dict__, decision.summary())
    return decision
