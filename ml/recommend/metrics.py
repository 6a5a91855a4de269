"""Top-K ranking metrics, written here (not taken from `implicit`, whose precision divides by
min(K, |relevant|)) and checked against hand-computed fixtures in the tests.

`recommended` is a (users x K) array of item indices in rank order, -1 where fewer than K items
were recommended; `relevant` a users x items sparse matrix whose non-zeros are the held-out
items. Per-user metrics are averaged over users with at least one relevant item.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "novelty")


def hits(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """users x K booleans: is the item at each rank relevant?"""
    rows = np.repeat(np.arange(recommended.shape[0]), recommended.shape[1])
    items = recommended.ravel()
    found = np.zeros(items.shape, dtype=bool)
    real = items >= 0
    found[real] = np.asarray(relevant[rows[real], items[real]]).ravel() != 0
    return found.reshape(recommended.shape)


def ranking_metrics(
    recommended: np.ndarray, relevant: sp.csr_matrix, train: sp.csr_matrix
) -> dict[str, float]:
    """precision@K, recall@K, NDCG@K, MAP@K and hit rate over users with held-out items;
    catalog coverage (share of items recommended to anyone) and novelty (mean -log2 of the
    share of training users who had each recommended item) over all users."""
    k = recommended.shape[1]
    n_relevant = np.diff(relevant.tocsr().indptr)
    judged = n_relevant > 0
    hit = hits(recommended, relevant)[judged]
    n_rel = n_relevant[judged]
    discount = 1 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    precision_at = np.cumsum(hit, axis=1) / np.arange(1, k + 1)
    shown = recommended[recommended >= 0]
    user_share = np.diff(train.tocsc().indptr) / max(train.shape[0], 1)
    return {
        "precision": float(np.mean(hit.sum(axis=1) / k)),
        "recall": float(np.mean(hit.sum(axis=1) / n_rel)),
        "ndcg": float(np.mean((hit * discount).sum(axis=1) / ideal)),
        "map": float(np.mean((precision_at * hit).sum(axis=1) / np.minimum(n_rel, k))),
        "hit_rate": float(np.mean(hit.any(axis=1))),
        "coverage": float(len(np.unique(shown)) / relevant.shape[1]),
        # an item no training user had counts as seen by one (novelty stays finite)
        "novelty": float(np.mean(-np.log2(np.maximum(user_share[shown], 1 / train.shape[0])))),
    }
