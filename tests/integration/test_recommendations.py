"""Recommenders through a real MLflow registry: train registers a challenger, the gate
promotes it once, the nightly write fills marts.user_recommendations with unseen items and
their reasons for consenting people, cold-start people get their cluster's favorites."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from microseg.config import Settings
from microseg.pipeline import recommend_step
from ml import registry
from ml.cluster import cluster
from ml.recommend.serve import write_recommendations
from ml.recommend.train import promote_recommender, train_recommender
from tests.helpers import query, run_cli

NIGHT = date(2026, 10, 12)
MODEL = "recommend_content"


@pytest.fixture(scope="module")
def trained(twelve_days_home: Path, tmp_path_factory) -> Settings:
    """A copy of the twelve-day warehouse with clusters for NIGHT and a recommend_content
    champion trained on the interactions before it."""
    home = tmp_path_factory.mktemp("recommend_home")
    shutil.copy(twelve_days_home / "warehouse.duckdb", home)
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    assert recommend_step(settings, NIGHT).startswith("recommend: no recommender champion")
    cluster(settings, NIGHT)
    first = train_recommender(settings, MODEL, NIGHT)
    assert first.version == "1" and first.kind in ("als", "bpr")
    decision = promote_recommender(settings, MODEL)
    assert decision.promoted, decision.summary()
    assert decision.challenger_ndcg > 1.3 * decision.popularity_ndcg
    # every model's test metrics, overall and by group, for the analyst
    metrics = query(
        settings,
        """select model, is_registered, attribute, count(*), sum(users)
           from marts.recommendation_metrics where model_version = '1' group by all order by all""",
    )
    registered = [m for m, is_registered, *_ in metrics if is_registered]
    assert set(registered) == {first.kind}
    overall = {m: users for m, _, attribute, _, users in metrics if attribute == "all"}
    assert set(overall) == {"als", "bpr", "cooccurrence", "popularity"}
    for model, _, attribute, groups, users in metrics:
        if attribute == "visitor_type":
            assert groups == 2 and users == overall[model]
    return settings


def test_the_gate_promotes_only_a_better_challenger(trained) -> None:
    """The same data and seed train the same configuration: version 2 cannot beat version 1
    by the spec's 2%, so the champion stays."""
    again = train_recommender(trained, MODEL, NIGHT)
    assert again.version == "2"
    decision = promote_recommender(trained, MODEL)
    assert not decision.promoted
    assert decision.challenger_ndcg == pytest.approx(decision.champion_ndcg)
    assert "does not beat champion v1 by 2%" in decision.summary()
    client = registry.client(trained)
    assert str(registry.version_by_alias(client, MODEL, registry.CHAMPION).version) == "1"
    assert str(registry.version_by_alias(client, MODEL, registry.CHALLENGER).version) == "2"


def test_the_registered_model_ranks_items_like_a_history(trained) -> None:
    """models:/recommend_content@champion loads as a pyfunc model and ranks, for a history,
    items outside it; MLflow holds no person ids."""
    import mlflow.pyfunc
    import pandas as pd

    registry.client(trained)  # points MLflow at this home's registry
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{registry.CHAMPION}")
    people = query(
        trained,
        "select person_id from marts.fct_person_item_interactions "
        "where activity_date < ? and item_type in ('article', 'video') "
        "group by all order by count(*) desc limit 3",
        [NIGHT],
    )
    had = query(
        trained,
        "select person_id, item_id from marts.fct_person_item_interactions "
        "where activity_date < ? and person_id in (select unnest(?::varchar[]))",
        [NIGHT, [p for (p,) in people]],
    )
    history = pd.DataFrame(had, columns=["user", "item"])
    top = model.predict(history, params={"k": 5})
    assert len(top) == 15 and all(
        part.score.is_monotonic_decreasing for _, part in top.groupby("user")
    )
    assert not set(zip(top.user, top["item"], strict=True)) & set(had)
    mlflow_files = [*trained.mlflow_artifacts_dir.rglob("*"), trained.home / "mlflow.db"]
    stored = b"".join(p.read_bytes() for p in mlflow_files if p.is_file())
    assert len(stored) > 10_000
    assert not any(person.encode() in stored for (person,) in people)


def test_nightly_recommendations(trained) -> None:
    written = write_recommendations(trained, NIGHT)
    assert set(written) == {MODEL} and written[MODEL] > 3000
    rows = query(
        trained,
        """select person_id, rank, item_id, item_type, reason_item_id, source
           from marts.user_recommendations where as_of_date = ? order by all""",
        [NIGHT],
    )
    history = query(
        trained,
        """select person_id, item_id from marts.fct_person_item_interactions
           where activity_date < ? and item_type in ('article', 'video')""",
        [NIGHT],
    )
    had = set(history)
    people_with_history = {p for p, _ in history}
    sources = {}
    for person, _rank, item, item_type, reason, source in rows:
        assert (person, item) not in had  # never what they already read or watched
        assert item_type in ("article", "video")
        if source == "model":
            assert (person, reason) in had  # the reason is from their own history
        else:
            assert person not in people_with_history and reason is None
        sources[source] = sources.get(source, 0) + 1
    assert sources["model"] > 3000 and sources["popular_in_cluster"] > 0
    ranks = query(
        trained,
        "select count(*), count(distinct person_id), max(rank) from marts.user_recommendations",
    )[0]
    assert ranks[0] == ranks[1] * 10 == len(rows) and ranks[2] == 10
    # consent: nobody without the recommendations purpose that night
    refused = query(
        trained,
        """select count(*) from marts.user_recommendations
           where not marts.has_consent(person_id, 'personalization', as_of_date)""",
    )[0][0]
    opted_out = query(
        trained,
        "select count(*) from marts.fct_user_features_daily "
        "where as_of_date = ? and not marts.has_consent(person_id, 'personalization', ?)",
        [NIGHT, NIGHT],
    )[0][0]
    assert refused == 0 and opted_out > 5
    # a cold-start person gets the favorites of their own cluster, in order
    cold = query(
        trained,
        """select r.item_id, c.cluster_id from marts.user_recommendations r
           join marts.person_clusters c using (person_id, as_of_date)
           where r.source = 'popular_in_cluster' order by r.person_id, r.rank limit 10""",
    )
    favorites = query(
        trained,
        """select i.item_id from marts.fct_person_item_interactions i
           join marts.person_clusters c on c.person_id = i.person_id and c.as_of_date = ?
           where i.activity_date < ? and c.cluster_id = ?
             and i.item_type in ('article', 'video')
             and marts.has_consent(i.person_id, 'personalization', ?)
           group by all order by count(distinct i.person_id) desc, i.item_id limit 10""",
        [NIGHT, NIGHT, cold[0][1], NIGHT],
    )
    assert [i for i, _ in cold] == [i for (i,) in favorites]
    # a re-run of the night changes nothing
    write_recommendations(trained, NIGHT)
    assert rows == query(
        trained,
        """select person_id, rank, item_id, item_type, reason_item_id, source
           from marts.user_recommendations where as_of_date = ? order by all""",
        [NIGHT],
    )
    scores = np.array(
        query(
            trained,
            "select score from marts.user_recommendations where source = 'model' "
            "order by person_id, rank",
        )
    ).reshape(-1, 10)
    assert (np.diff(scores, axis=1) <= 1e-9).all()


def test_audience_export_carries_each_persons_top_items(trained, tmp_path) -> None:
    """`microseg export --with-recommendations 3`: each member's top three items of the night
    in rank order (an empty list for a member without recommendations)."""
    import csv
    import json

    from microseg.segments import run_segments

    write_recommendations(trained, NIGHT)
    run_segments(trained, NIGHT)
    out = tmp_path / "audience.csv"
    args = ["export", "--segment", "frequent_visitors", "--as-of", str(NIGHT), "--out", str(out)]
    proc = run_cli(*args, "--with-recommendations", "3", home=trained.home)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    top = {}
    for person, item in query(
        trained,
        "select person_id, item_id from marts.user_recommendations "
        "where as_of_date = ? and rank <= 3 order by person_id, rank",
        [NIGHT],
    ):
        top.setdefault(person, []).append(item)
    assert len(rows) > 20
    assert all(json.loads(r["recommended_items"]) == top.get(r["person_id"], []) for r in rows)
    assert sum(1 for r in rows if r["recommended_items"] != "[]") > 20
    manifest = json.loads((tmp_path / "audience.csv.manifest.json").read_text())
    assert manifest["recommendations"] == {"model": MODEL, "k": 3}
    missing = run_cli(*args, "--with-recommendations", "3", "--recommendation-model", "nope",
                      home=trained.home)  # fmt: skip
    assert missing.returncode == 2 and "no nope recommendations" in missing.stderr


def test_trigger_payloads_carry_the_nights_top_items(trained) -> None:
    """binge_reader's messages (triggers.yml: payload recommendations) name the person's top
    five articles and videos of the night, best first."""
    import json

    from microseg.activation import activate

    write_recommendations(trained, NIGHT)
    activate(trained, NIGHT)
    rows = query(
        trained,
        """select o.payload, list(r.item_id order by r.rank) filter (where r.rank <= 5)
           from marts.activation_outbox o
           left join marts.user_recommendations r
             on r.person_id = o.person_id and r.as_of_date = ? and r.model_name = ?
           where o.trigger_name = 'binge_reader'
           group by all""",
        [NIGHT, MODEL],
    )
    assert len(rows) > 3
    for payload, top in rows:
        carried = json.loads(payload)["recommendations"]
        assert carried == ({MODEL: top} if top else {})
    assert sum(1 for _, top in rows if top) > 3
