"""`microseg recommend write`: each recommender champion's top K per person into
marts.user_recommendations.

The champion's configuration (kind, hyperparameters, seed) is refitted on every interaction
before the night: matrix factorization has no factors for people or items that arrived since
training, and a refit costs seconds. People with features that night and consent for the
recommendations purpose get the items they have not interacted with yet, each with a reason
(the item of their history most like it); people without history get what is popular in their
behavioral cluster that night (overall popularity without clusters). A re-run of the same
night replaces that night's rows.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import scipy.sparse as sp

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.privacy import consent_policy
from microseg.warehouse import connect, features_as_of, has_table
from ml import registry
from ml.recommend.evaluate import build_split, read_warehouse_interactions
from ml.recommend.models import Recommender, popularity_share, top_k
from ml.recommend.spec import load_recommend_spec
from ml.recommend.train import configuration
from ml.specs import RECOMMENDATION, spec_names

USER_RECOMMENDATIONS_DDL = """
create table if not exists marts.user_recommendations (
    person_id varchar not null,
    as_of_date date not null,
    model_name varchar not null,
    model_version varchar not null,
    rank integer not null,
    item_id varchar not null,
    item_type varchar not null,
    score double,               -- the model's; for popularity the share of people with the item
    reason_item_id varchar,     -- the item of the person's history most like this one
    source varchar not null,    -- model | popular_in_cluster | popular
    primary key (person_id, model_name, as_of_date, rank)
)"""


def _people(settings: Settings, as_of: date) -> pd.DataFrame:
    """Who gets recommendations that night: people with features and consent, with their
    cluster if clusters were fitted that night."""
    purpose = consent_policy().purpose_of["recommendations"]
    with connect(settings, read_only=True) as con:
        clusters = has_table(con, "marts", "person_clusters")
        cluster = "c.cluster_id" if clusters else "null::integer"
        join = (
            "left join marts.person_clusters c "
            "on c.person_id = f.person_id and c.as_of_date = f.as_of_date"
            if clusters
            else ""
        )
        return con.execute(
            f"""select f.person_id, {cluster} as cluster_id
                from marts.fct_user_features_daily f {join}
                where f.as_of_date = ? and marts.has_consent(f.person_id, ?, f.as_of_date)
                order by f.person_id""",
            [as_of, purpose],
        ).df()


def _rows(person_ids, ranked, scores, reasons, items, item_types, source) -> pd.DataFrame:
    k = ranked.shape[1]
    shown = (ranked >= 0).ravel()
    item = items[np.maximum(ranked, 0)].ravel()
    return pd.DataFrame(
        {
            "person_id": np.repeat(np.asarray(person_ids), k),
            "rank": np.tile(np.arange(1, k + 1), len(person_ids)),
            "item_id": item,
            "item_type": item_types.reindex(item).to_numpy(),
            "score": scores.ravel(),
            "reason_item_id": np.where(
                reasons.ravel() >= 0, items[np.maximum(reasons, 0)].ravel(), None
            ),
            "source": source,
        }
    )[shown]


def recommend_for(settings: Settings, name: str, as_of: date, people: pd.DataFrame):
    """(version, rows) of one recommender's champion for the people of the night."""
    spec = load_recommend_spec(name, settings.ml_specs_dir)
    client = registry.client(settings)
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    if champion is None:
        raise MicrosegError(
            f"{name} has no champion: run `microseg recommend train --model {name}`, then "
            "`microseg recommend promote`"
        )
    kind, params, seed = configuration(client, champion)
    frame = read_warehouse_interactions(settings, spec, as_of)
    item_types = frame.drop_duplicates("item").set_index("item").item_type
    history = build_split(frame, frame.iloc[:0])
    items = history.items.to_numpy(dtype=object)
    rows = history.users.get_indexer(people.person_id)
    known = rows >= 0
    model = Recommender(kind, params, seed=seed).fit(history.train)
    ranked, scores = model.recommend(rows[known], spec.k)
    parts = [
        _rows(
            people.person_id[known],
            ranked,
            scores,
            model.reasons(rows[known], ranked),
            items,
            item_types,
            "model",
        )
    ]
    # cold start: what is popular among the people of the same cluster, else overall
    cold = people[~known]
    cluster = people.cluster_id.fillna(-1).astype(int).to_numpy()
    for group in np.unique(cluster[~known]):
        in_group = rows[known & (cluster == group)]
        source = "popular_in_cluster" if group >= 0 and len(in_group) else "popular"
        basis = history.train[in_group] if source == "popular_in_cluster" else history.train
        share = popularity_share(basis)[None, :]
        ranked, scores = top_k(share, sp.csr_matrix(share.shape), spec.k)
        who = cold.person_id[cluster[~known] == group]
        repeat = (len(who), 1)
        parts.append(
            _rows(
                who,
                np.tile(ranked, repeat),
                np.tile(scores, repeat),
                np.full((len(who), ranked.shape[1]), -1),
                items,
                item_types,
                source,
            )
        )
    return str(champion.version), pd.concat(parts, ignore_index=True)


def write_recommendations(
    settings: Settings, as_of: date | None = None, models: list[str] | None = None
) -> dict[str, int]:
    """Rows written per recommender; those without a champion are skipped unless asked for."""
    as_of = features_as_of(settings, as_of)
    client = registry.client(settings)
    names = models or [
        n
        for n in spec_names(settings.ml_specs_dir, RECOMMENDATION)
        if registry.version_by_alias(client, n, registry.CHAMPION)
    ]
    people = _people(settings, as_of)
    written = {}
    for name in names:
        version, rows = recommend_for(settings, name, as_of, people)
        rows = rows.assign(as_of_date=as_of, model_name=name, model_version=version)
        with connect(settings) as con:
            con.execute("create schema if not exists marts")
            con.execute(USER_RECOMMENDATIONS_DDL)
            con.execute("begin")
            con.execute(
                "delete from marts.user_recommendations where model_name = ? and as_of_date = ?",
                [name, as_of],
            )
            con.register("new_recommendations", rows)
            con.execute(
                "insert into marts.user_recommendations by name select * from new_recommendations"
            )
            con.execute("commit")
        written[name] = len(rows)
    return written
