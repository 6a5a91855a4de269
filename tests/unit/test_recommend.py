"""Recommenders: metrics equal hand-computed values, models rank what they should and repeat
themselves with a seed, evaluation splits time honestly and reads any interactions file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from microseg.config import Settings
from microseg.errors import ConfigError, InputError
from ml.recommend.evaluate import (
    Split,
    build_split,
    evaluate,
    rank_within_clusters,
    read_interactions_file,
    read_warehouse_groups,
    read_warehouse_interactions,
    time_split,
)
from ml.recommend.metrics import ranking_metrics
from ml.recommend.models import Recommender, top_k
from ml.recommend.spec import load_recommend_spec
from ml.specs import load_spec, spec_names
from tests.helpers import PROJECT_ROOT, run_cli

SPECS = PROJECT_ROOT / "ml" / "specs"


def test_metrics_equal_hand_computed_values() -> None:
    """Three users, six items, K = 3. User 0 gets [0, 1, 2] and wanted {1, 4}; user 1 gets
    [3, 5] (the catalog ran out) and wanted {3}; user 2 wanted nothing (not judged)."""
    recommended = np.array([[0, 1, 2], [3, 5, -1], [0, 1, 2]])
    relevant = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [1, 4, 3])), shape=(3, 6))
    # training users per item: 3, 1, 0, 1, 0, 2 (of 3)
    train = sp.csr_matrix(
        (np.ones(7), ([0, 1, 2, 2, 0, 0, 1], [0, 0, 0, 1, 3, 5, 5])), shape=(3, 6)
    )
    m = ranking_metrics(recommended, relevant, train)
    ndcg_user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["ndcg"] == pytest.approx((ndcg_user0 + 1) / 2)
    assert m["map"] == pytest.approx(((1 / 2) / 2 + 1) / 2)  # AP@3: (P@2) / min(2, 3)
    assert m["hit_rate"] == 1.0
    assert m["coverage"] == pytest.approx(5 / 6)
    # shown: 0, 1, 2, 3, 5, 0, 1, 2; item 2 (no training user) counts as one of three
    log3, log15 = math.log2(3), math.log2(1.5)
    assert m["novelty"] == pytest.approx((0 + log3 + log3 + log3 + log15 + 0 + log3 + log3) / 8)


def test_top_k_never_repeats_what_the_user_has() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    seen = sp.csr_matrix(([1, 1, 1], ([0, 1, 1], [0, 3, 2])), shape=(2, 4))
    order, best = top_k(scores, seen, 3)
    assert order.tolist() == [[1, 2, 3], [1, 0, -1]]
    assert np.isnan(best[1, 2])


def test_top_k_equals_a_full_stable_sort() -> None:
    """The partition-based selection ranks exactly like sorting every row (ties included)."""
    rng = np.random.default_rng(1)
    for trial in range(100):
        n, m, k = rng.integers(1, 30), rng.integers(1, 40), int(rng.integers(1, 15))
        scores = rng.integers(0, 4, (n, m)).astype(float)  # many ties
        seen = sp.random(n, m, density=rng.uniform(0, 0.9), format="csr", random_state=trial)
        masked = scores.copy()
        masked[seen.nonzero()] = -np.inf
        full = np.argsort(-masked, axis=1, kind="stable")[:, : min(k, m)]
        full[np.isneginf(np.take_along_axis(masked, full, axis=1))] = -1
        assert np.array_equal(top_k(scores, seen, k)[0], full)


def _blocks(seed: int = 0) -> sp.csr_matrix:
    """60 users in three taste groups of 20, 30 items in three blocks of 10: each user has 5
    random items of their own block; items 0, 10 and 20 are everybody's favorites."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(60):
        block = user // 20
        chosen = rng.choice(np.arange(1, 10), 4, replace=False)
        for item in [0, *chosen]:
            rows.append(user)
            cols.append(block * 10 + item)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(60, 30))


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("als", {"factors": 8, "regularization": 1.0, "alpha": 1.0, "iterations": 20}),
        ("bpr", {"factors": 8, "learning_rate": 0.05, "regularization": 0.01, "iterations": 200}),
        ("cooccurrence", {}),
    ],
)
def test_learned_models_recommend_from_the_users_own_block(kind, params) -> None:
    train = _blocks()
    model = Recommender(kind, params, seed=3).fit(train)
    order, _ = model.recommend(np.arange(60), 3)
    in_block = (order // 10) == (np.arange(60) // 20)[:, None]
    assert in_block.mean() > 0.9
    again, _ = Recommender(kind, params, seed=3).fit(train).recommend(np.arange(60), 3)
    assert np.array_equal(order, again)


def test_popularity_baseline() -> None:
    train = _blocks().tolil()
    train[0:40, 25] = 1  # item 25 is now the most popular (0, 10 and 20 have 20 users each)
    train = train.tocsr()
    without = np.flatnonzero(train[:, 25].toarray().ravel() == 0)[:2]
    order, _ = Recommender("popularity").fit(train).recommend(without, 2)
    assert order[:, 0].tolist() == [25, 25]


def test_popularity_within_clusters() -> None:
    """Each judged user gets the favorites of their own cluster; a user without a cluster
    the overall ones."""
    train = _blocks()
    held = sp.csr_matrix((np.ones(60), (np.arange(60), np.arange(60) // 20 * 10 + 9)), (60, 30))
    relevant = (held - held.multiply(train > 0)).tocsr()
    relevant.eliminate_zeros()
    users = pd.Index([f"u{i}" for i in range(60)])
    split = Split(
        users=users,
        items=pd.Index(range(30)),
        train=train,
        relevant=relevant,
        judged=np.flatnonzero(np.diff(relevant.indptr) > 0),
        cold_users=0,
    )
    clusters = pd.Series(np.arange(59) // 20, index=users[:59])  # u59 has no cluster
    top = rank_within_clusters(split, clusters, 3)
    blocks = top // 10
    expected = (split.judged // 20)[:, None]
    in_cluster = split.judged < 59
    assert (blocks[in_cluster] == expected[in_cluster]).all()
    # u59 (of block 2, who has item 20): overall popularity, the other blocks' favorites first
    assert not in_cluster.all() and sorted(top[~in_cluster][0][:2]) == [0, 10]


def test_specs_split_into_scoring_models_and_recommenders() -> None:
    assert "recommend_content" in spec_names(SPECS, "recommendation")
    assert "recommend_content" not in spec_names(SPECS)
    assert "purchase_propensity" in spec_names(SPECS)
    spec = load_recommend_spec("recommend_content", SPECS)
    assert spec.item_types == ("article", "video")
    assert len(spec.grids["als"]) == 4
    with pytest.raises(ConfigError, match="is a recommender"):
        load_spec("recommend_content", SPECS)
    with pytest.raises(ConfigError, match="no recommender spec 'purchase_propensity'"):
        load_recommend_spec("purchase_propensity", SPECS)


def test_time_split_holds_out_only_new_items_of_known_users() -> None:
    frame = pd.DataFrame(
        {
            "user": ["a", "a", "a", "b", "c"],
            "item": ["x", "y", "x", "y", "x"],
            "time": pd.to_datetime(
                ["2026-10-01", "2026-10-01", "2026-10-03", "2026-10-03", "2026-10-03 23:00"],
                format="ISO8601",
            ),
            "weight": 1.0,
        }
    )
    before, after = time_split(frame, 1)
    assert list(before.index) == [0, 1] and list(after.index) == [2, 3, 4]
    split = build_split(before, after)
    # a's x again is not new; b and c have no training history
    assert split.relevant.nnz == 0 and split.cold_users == 2


def _interactions_file(folder: Path, users: int = 300, days: int = 10) -> Path:
    """Users in three taste groups interacting with 60 items over `days` days (CSV, epoch
    seconds, a weight column)."""
    rng = np.random.default_rng(5)
    user = rng.integers(0, users, 12 * users)
    group = user % 3
    item = group * 20 + np.minimum(rng.geometric(0.15, len(user)) - 1, 19)
    start = pd.Timestamp("2026-10-01").timestamp()
    frame = pd.DataFrame(
        {
            "visitor": [f"u{u}" for u in user],
            "product": [f"i{i}" for i in item],
            "ts": (start + rng.uniform(0, days * 86400, len(user))).astype(np.int64),
            "strength": rng.integers(1, 4, len(user)),
            "plan": np.where(user % 2 == 0, "free", "paid"),
        }
    )
    path = folder / "interactions.csv"
    frame.to_csv(path, index=False)
    return path


def test_evaluate_any_interactions_file(tmp_path) -> None:
    path = _interactions_file(tmp_path)
    proc = run_cli(
        "recommend", "evaluate", "--interactions", str(path), "--user-col", "visitor",
        "--item-col", "product", "--time-col", "ts", "--weight-col", "strength",
        "--group-col", "plan", home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "300 users x 60 items" in lines[0]
    models = [line.split()[0] for line in lines[2:6]]
    assert sorted(models) == ["als", "bpr", "cooccurrence", "popularity"]
    ndcg = {line.split()[0]: float(line.split()[3]) for line in lines[2:6]}
    assert lines[6] == "NDCG@10 by group of users:"
    assert [line.split()[0] for line in lines[8:]] == ["plan=free", "plan=paid"]
    assert ndcg["als"] > 1.3 * ndcg["popularity"]
    assert ndcg["cooccurrence"] > 1.3 * ndcg["popularity"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user-col", "who"], "no column 'who' (columns: visitor, product, ts, strength, plan)"),
        (["--model", "purchase_propensity"], "no recommender spec 'purchase_propensity'"),
    ],
)
def test_evaluate_errors_are_one_line(tmp_path, args, message) -> None:
    path = _interactions_file(tmp_path, users=30, days=3)
    base = ["--user-col", "visitor", "--item-col", "product", "--time-col", "ts"]
    proc = run_cli(
        "recommend", "evaluate", "--interactions", str(path), *base, *args, home=tmp_path
    )
    assert proc.returncode in (1, 2)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_needs_enough_days(tmp_path) -> None:
    path = _interactions_file(tmp_path, users=30, days=3)
    frame, groups = read_interactions_file(path, "visitor", "product", "ts", None)
    assert groups is None
    assert (frame.weight == 1).all()
    with pytest.raises(InputError, match="span 3 day"):
        evaluate(load_recommend_spec("recommend_content", SPECS), frame)


def test_warehouse_recommenders_approach_the_oracle(twelve_days, twelve_days_home) -> None:
    """On generated data the learned models beat popularity and come close to the ranking
    by the generator's true tastes (the oracle), evaluated on the same split."""
    from microseg.generate.items import oracle_reference

    settings = Settings.from_env({"MICROSEG_HOME": str(twelve_days_home)})
    spec = load_recommend_spec("recommend_content", SPECS)
    frame = read_warehouse_interactions(settings, spec)
    reference = oracle_reference(twelve_days / "ground_truth")
    assert reference.user.isin(frame.user).mean() > 0.9  # keyed like the pipeline's people
    groups = read_warehouse_groups(settings, frame, spec.test_days)
    evaluation = evaluate(spec, frame, reference, groups)
    table = evaluation.table.set_index("model")
    print(table[["ndcg", "precision", "recall", "coverage"]])
    ndcg = table.ndcg
    assert ndcg["reference"] > ndcg["als"] > 1.3 * ndcg["popularity"]
    assert ndcg["als"] > 0.6 * ndcg["reference"]
    # per group: each attribute's groups partition the judged users, and a group's NDCG is the
    # mean over its users, so the user-weighted mean of the groups is the overall NDCG
    by_group = evaluation.by_group[evaluation.by_group.model == "als"]
    assert set(by_group.attribute) == {"device_type", "visitor_type"}
    for _, part in by_group.groupby("attribute"):
        assert part.users.sum() == evaluation.judged
        weighted = (part.ndcg * part.users).sum() / part.users.sum()
        assert weighted == pytest.approx(ndcg["als"])
