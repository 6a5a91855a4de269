"""Evaluating recommenders the way a recommender paper does: a time split (the last
`test_days` are the test; the same span before it validates the grid search), every model
refitted on all training days with its best validation parameters, then top-K metrics on the
held-out items each person had not interacted with before.

Interactions are a frame of (user, item, time, weight), from the warehouse
(marts.fct_person_item_interactions) or from any CSV or Parquet file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from microseg.config import Settings
from microseg.errors import InputError
from microseg.privacy import consent_policy
from microseg.warehouse import connect, has_table
from ml.recommend.metrics import METRICS, ranking_metrics
from ml.recommend.models import Recommender, popularity_share, top_k
from ml.recommend.spec import LEARNED, RecommendSpec

BASELINES = ("popularity", "cooccurrence")


@dataclass(frozen=True)
class Split:
    """Training matrix and held-out items over the training users and items."""

    users: pd.Index  # row labels
    items: pd.Index  # column labels
    train: sp.csr_matrix
    relevant: sp.csr_matrix  # test items the user had not interacted with in training
    judged: np.ndarray  # rows with at least one held-out item
    cold_users: int  # users seen only in the test period: no history to rank from


def read_interactions_file(
    path: Path,
    user_col: str,
    item_col: str,
    time_col: str,
    weight_col: str | None,
    group_cols: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(interactions, groups): (user, item, time, weight) from a CSV or Parquet file, weight 1
    per row without a weight column, time a timestamp, a date or epoch seconds; and with
    group columns, (user, attribute, value): each user's first value of each."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with duckdb.connect() as con:
        try:
            reader = con.read_parquet if path.name.endswith(".parquet") else con.read_csv
            reader(str(path)).create_view("source")
            types = dict(
                con.execute("select column_name, column_type from (describe source)").fetchall()
            )
        except duckdb.Error as error:
            raise InputError(f"{path}: not a readable CSV or Parquet file ({error})") from None
        wanted = [c for c in (user_col, item_col, time_col, weight_col, *group_cols) if c]
        missing = [c for c in wanted if c not in types]
        if missing:
            raise InputError(
                f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(types)})"
            )
        numeric_time = types[time_col] in ("BIGINT", "INTEGER", "DOUBLE", "HUGEINT", "UBIGINT")
        as_time = (
            f'to_timestamp("{time_col}")'
            if numeric_time
            else f'try_cast("{time_col}" as timestamp)'
        )
        weight = f'try_cast("{weight_col}" as double)' if weight_col else "1.0"
        frame = con.execute(
            f'select "{user_col}"::varchar as user, "{item_col}"::varchar as item, '
            f"{as_time}::timestamp as time, {weight} as weight from source"
        ).df()
        groups = None
        if group_cols:
            groups = con.execute(
                " union all ".join(
                    f"""select "{user_col}"::varchar as user, '{column}' as attribute,
                               first("{column}"::varchar order by "{time_col}") as value
                        from source group by all"""
                    for column in group_cols
                )
            ).df()
    bad = frame.isna().any(axis=1) | ~(frame.weight > 0)
    if bad.any():
        raise InputError(
            f"{path}: {int(bad.sum())} of {len(frame)} rows lack a user, item, readable time "
            f"or positive weight (first at row {int(np.flatnonzero(bad)[0]) + 1})"
        )
    return frame, groups


def read_warehouse_interactions(
    settings: Settings, spec: RecommendSpec, as_of: date | None = None
) -> pd.DataFrame:
    """The spec's items from marts.fct_person_item_interactions before as_of (default: all),
    of the people who consent to the recommendations purpose on that night."""
    with connect(settings, read_only=True) as con:
        return con.execute(
            """with interactions as (
                   select * from marts.fct_person_item_interactions
                   where list_contains($types, item_type)
                     and ($as_of is null or activity_date < $as_of)
               ),
               night as (select coalesce($as_of, max(activity_date) + 1) as d from interactions)
               select person_id as user, item_id as item, activity_date::timestamp as time,
                      confidence as weight, item_type
               from interactions, night
               where marts.has_consent(person_id, $purpose, night.d)
               order by all""",
            {
                "types": list(spec.item_types),
                "as_of": as_of,
                "purpose": consent_policy().purpose_of["recommendations"],
            },
        ).df()


def read_warehouse_groups(settings: Settings, frame: pd.DataFrame, test_days: int) -> pd.DataFrame:
    """(user, attribute, value) as in the models' fairness audit: device_type and
    visitor_type as known on the first test day (marts.fct_user_features_daily)."""
    test_start = frame.time.max().floor("D") - pd.Timedelta(days=test_days - 1)
    with connect(settings, read_only=True) as con:
        con.register("users", pd.DataFrame({"user": frame.user.unique()}))
        return con.execute(
            """unpivot (select person_id as user, device_type, visitor_type
                        from marts.fct_user_features_daily join users on user = person_id
                        where as_of_date = $start)
               on device_type, visitor_type into name attribute value value
               order by all""",
            {"start": test_start.date()},
        ).df()


def read_warehouse_clusters(
    settings: Settings, frame: pd.DataFrame, test_days: int
) -> pd.Series | None:
    """user -> behavioral cluster on the first test day (marts.person_clusters, fitted on the
    features before it: point in time); None when no clusters were fitted that night."""
    test_start = frame.time.max().floor("D") - pd.Timedelta(days=test_days - 1)
    with connect(settings, read_only=True) as con:
        if not has_table(con, "marts", "person_clusters"):
            return None
        clusters = con.execute(
            "select person_id, cluster_id from marts.person_clusters where as_of_date = ?",
            [test_start.date()],
        ).df()
    return clusters.set_index("person_id").cluster_id if len(clusters) else None


def time_split(frame: pd.DataFrame, test_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(before, last test_days calendar days)."""
    days = frame.time.dt.floor("D")
    cutoff = days.max() - pd.Timedelta(days=test_days - 1)
    return frame[days < cutoff], frame[days >= cutoff]


def build_split(train: pd.DataFrame, test: pd.DataFrame) -> Split:
    users = pd.Index(np.sort(train.user.unique()))
    items = pd.Index(np.sort(train.item.unique()))
    pairs = train.groupby(["user", "item"], sort=False).weight.sum()
    matrix = sp.csr_matrix(
        (
            pairs.to_numpy(np.float32),
            (
                users.get_indexer(pairs.index.get_level_values(0)),
                items.get_indexer(pairs.index.get_level_values(1)),
            ),
        ),
        shape=(len(users), len(items)),
    )
    rows, cols = users.get_indexer(test.user), items.get_indexer(test.item)
    known = (rows >= 0) & (cols >= 0)
    held = sp.csr_matrix(
        (np.ones(known.sum(), dtype=np.float32), (rows[known], cols[known])), shape=matrix.shape
    )
    held.data[:] = 1  # duplicates summed: back to 1
    relevant = (held - held.multiply(matrix > 0)).tocsr()
    relevant.eliminate_zeros()
    return Split(
        users=users,
        items=items,
        train=matrix,
        relevant=relevant,
        judged=np.flatnonzero(np.diff(relevant.indptr) > 0),
        cold_users=len(set(test.user) - set(users)),
    )


def splits(frame: pd.DataFrame, test_days: int) -> tuple[Split, Split]:
    """(validation, test): validation holds out the test_days before the test period."""
    days = frame.time.dt.floor("D").nunique()
    if days < 2 * test_days + 1:
        raise InputError(
            f"the interactions span {days} day(s): evaluation needs {2 * test_days + 1} "
            f"({test_days} to test, {test_days} to validate, at least one to train on)"
        )
    before, test = time_split(frame, test_days)
    fit, valid = time_split(before, test_days)
    splits = build_split(fit, valid), build_split(before, test)
    if not len(splits[1].judged):
        raise InputError("no user of the training days has a new item in the test days")
    return splits


def rank(kind: str, params: dict, split: Split, k: int, seed: int) -> np.ndarray:
    """The top k of each judged user of the split, by a model fitted on its training part."""
    model = Recommender(kind, params, seed=seed).fit(split.train)
    return model.recommend(split.judged, k)[0]


def rank_within_clusters(split: Split, clusters: pd.Series, k: int) -> np.ndarray:
    """The popularity baseline within each user's cluster (clusters: user -> cluster id);
    users without a cluster get overall popularity."""
    label = clusters.reindex(split.users).fillna(-1).astype(int).to_numpy()
    judged = label[split.judged]
    recommended = np.empty((len(split.judged), min(k, split.train.shape[1])), dtype=int)
    for group in np.unique(judged):
        basis = split.train[label == group] if group >= 0 else split.train
        who = np.flatnonzero(judged == group)
        share = np.broadcast_to(popularity_share(basis), (len(who), split.train.shape[1]))
        recommended[who] = top_k(share, split.train[split.judged[who]], k)[0]
    return recommended


def score(kind: str, params: dict, split: Split, k: int, seed: int) -> dict[str, float]:
    recommended = rank(kind, params, split, k, seed)
    return ranking_metrics(recommended, split.relevant[split.judged], split.train)


def _by_group(
    model: str, recommended: np.ndarray, split: Split, groups: pd.DataFrame
) -> list[dict]:
    """The metrics within each group of judged users: groups has (user, attribute, value)."""
    judged_users = split.users[split.judged]
    rows = []
    for (attribute, value), members in groups.groupby(["attribute", "value"]):
        mask = judged_users.isin(members.user)
        if mask.any():
            relevant = split.relevant[split.judged[mask]]
            metrics = ranking_metrics(recommended[mask], relevant, split.train)
            rows.append(
                {"model": model, "attribute": attribute, "value": value,
                 "users": int(mask.sum()), **metrics}
            )  # fmt: skip
    return rows


def _reference_row(reference: pd.DataFrame, split: Split, k: int) -> dict:
    """The metrics of a given (user, item, score) ranking, e.g. the generator's oracle;
    pairs it lacks rank last."""
    scores = np.full(split.train.shape, -np.finfo(np.float64).max)
    rows = split.users.get_indexer(reference.user)
    cols = split.items.get_indexer(reference.item)
    known = (rows >= 0) & (cols >= 0)
    scores[rows[known], cols[known]] = reference.score.to_numpy()[known]
    recommended, _ = top_k(scores[split.judged], split.train[split.judged], k)
    metrics = ranking_metrics(recommended, split.relevant[split.judged], split.train)
    return {"model": "reference", "params": {}, **metrics, "seconds": 0.0}


@dataclass(frozen=True)
class Evaluation:
    """Per model (`table`) and per model and group of users (`by_group`), with the split."""

    table: pd.DataFrame
    by_group: pd.DataFrame
    users: int
    items: int
    judged: int
    held_out: int
    cold_users: int


def evaluate(
    spec: RecommendSpec,
    frame: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    groups: pd.DataFrame | None = None,
    clusters: pd.Series | None = None,
) -> Evaluation:
    """One row per model (the baselines and each learned kind at its best validation
    parameters, with that validation NDCG) with its test metrics at K, sorted by NDCG; with
    clusters (user -> cluster id), the popularity-within-cluster baseline too; with a
    reference ranking (user, item, score), its row too; with groups (user, attribute, value),
    every model's metrics within each group."""
    validation, test = splits(frame, spec.test_days)
    rows, group_rows = [], []

    def tested(kind: str, params: dict) -> dict:
        started = time.perf_counter()
        if kind == "cluster_popularity":
            recommended = rank_within_clusters(test, clusters, spec.k)
        else:
            recommended = rank(kind, params, test, spec.k, spec.seed)
        seconds = time.perf_counter() - started
        if groups is not None:
            group_rows.extend(_by_group(kind, recommended, test, groups))
        metrics = ranking_metrics(recommended, test.relevant[test.judged], test.train)
        return {"model": kind, "params": params, **metrics, "seconds": seconds}

    for kind in LEARNED:
        grid = spec.grids[kind]
        tried = [score(kind, params, validation, spec.k, spec.seed)["ndcg"] for params in grid]
        best = int(np.argmax(tried))  # the first of equals
        rows.append({**tested(kind, grid[best]), "validation_ndcg": tried[best]})
    rows += [tested(kind, {}) for kind in BASELINES]
    if clusters is not None:
        rows.append(tested("cluster_popularity", {}))
    if reference is not None:
        rows.append(_reference_row(reference, test, spec.k))
    table = pd.DataFrame(rows).sort_values("ndcg", ascending=False, ignore_index=True)
    return Evaluation(
        table=table[["model", *METRICS, "seconds", "params", "validation_ndcg"]],
        by_group=pd.DataFrame(
            group_rows, columns=["model", "attribute", "value", "users", *METRICS]
        ),
        users=test.train.shape[0],
        items=test.train.shape[1],
        judged=len(test.judged),
        held_out=int(test.relevant.nnz),
        cold_users=test.cold_users,
    )


def report_lines(spec: RecommendSpec, evaluation: Evaluation, source: str) -> list[str]:
    """The evaluation as a printed table, with what was held out and each model's lift in
    NDCG over popularity; then NDCG@K per group of users, model by model."""
    e, table = evaluation, evaluation.table
    popularity = float(table.set_index("model").ndcg["popularity"])
    lines = [
        f"{spec.name} on {source}: {e.users:,} users x {e.items:,} items in training; test: "
        f"the last {spec.test_days} day(s), {e.held_out:,} new items of {e.judged:,} users "
        f"({e.cold_users:,} users without history not ranked)",
        f"{'model':<19}"
        + "".join(f"{m + '@' + str(spec.k) if m in METRICS[:5] else m:>12}" for m in METRICS)
        + f"{'vs pop.':>9}{'seconds':>9}  parameters",
    ]
    for row in table.itertuples():
        lift = f"{row.ndcg / popularity - 1:+.0%}" if popularity > 0 else "n/a"
        params = ", ".join(f"{k}={v}" for k, v in row.params.items()) or "-"
        values = "".join(f"{getattr(row, m):>12.4f}" for m in METRICS)
        lines.append(f"{row.model:<19}{values}{lift:>9}{row.seconds:>9.1f}  {params}")
    if not e.by_group.empty:
        wide = e.by_group.pivot_table(
            index=["attribute", "value", "users"], columns="model", values="ndcg"
        )[list(table.model[table.model != "reference"])]
        lines.append(f"NDCG@{spec.k} by group of users:")
        widths = [max(14, len(m) + 2) for m in wide.columns]
        lines.append(
            f"{'group':<28}{'users':>7}"
            + "".join(f"{m:>{w}}" for m, w in zip(wide.columns, widths, strict=True))
        )
        for (attribute, value, users), ndcg in wide.iterrows():
            lines.append(
                f"{attribute + '=' + str(value):<28}{users:>7,}"
                + "".join(f"{v:>{w}.4f}" for v, w in zip(ndcg, widths, strict=True))
            )
    return lines
