"""Recommenders on a users x items confidence matrix: implicit ALS and BPR, and the two
baselines every recommender must beat, popularity (overall or within the person's group) and
item-item co-occurrence.

Each model is fitted on a CSR matrix and answers `recommend(users, k)`: (users x k) item
indices and scores, best first, never an item the user already has in the training matrix
(-1 where the catalog runs out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import bm25_weight
from threadpoolctl import threadpool_limits

_CHUNK = 2048  # users scored at once
KINDS = ("als", "bpr", "popularity", "cluster_popularity", "cooccurrence")


def top_k(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns per row, excluding seen items (ties: the lower item index first)."""
    scores = np.array(scores, dtype=np.float64)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    order[np.isneginf(best)] = -1
    return order, np.where(np.isneginf(best), np.nan, best)


@dataclass
class Recommender:
    """One model kind with its hyperparameters; `fit` then `recommend`."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 7
    groups: np.ndarray | None = None  # cluster_popularity: each user's group label
    _train: sp.csr_matrix | None = None
    _state: Any = None

    def fit(self, train: sp.csr_matrix) -> Recommender:
        self._train = train.tocsr().astype(np.float32)
        if self.kind in ("als", "bpr"):
            # implicit runs its own threads: OpenBLAS's beside them slow it down (it warns)
            # ALS fits BM25-weighted confidence: a heavy user or an item everyone touches
            # counts for less (what implicit's authors recommend; better NDCG here too)
            weighted = (
                bm25_weight(self._train, K1=100, B=0.8) if self.kind == "als" else self._train
            )
            with threadpool_limits(1, "blas"):
                self._state = self._implicit_model()
                self._state.fit(weighted.tocsr(), show_progress=False)
        elif self.kind == "popularity":
            self._state = np.diff(self._train.tocsc().indptr).astype(np.float64)
        elif self.kind == "cluster_popularity":
            self._state = self._group_popularity()
        elif self.kind == "cooccurrence":
            binary = (self._train > 0).astype(np.float32)
            together = (binary.T @ binary).tocsr()
            norm = np.sqrt(together.diagonal()) + 1e-9
            together.setdiag(0)
            self._state = sp.diags(1 / norm) @ together @ sp.diags(1 / norm)
        else:
            raise ValueError(f"unknown recommender kind {self.kind!r}")
        return self

    def _implicit_model(self):
        if self.kind == "als":
            return AlternatingLeastSquares(**self.params, random_state=self.seed)
        # BPR's threads race on shared factors: one thread keeps a seed's result reproducible
        return BayesianPersonalizedRanking(**self.params, random_state=self.seed, num_threads=1)

    def _group_popularity(self) -> dict:
        groups = np.asarray(self.groups)
        overall = np.diff(self._train.tocsc().indptr).astype(np.float64)
        by_group = {}
        for group in np.unique(groups):
            members = self._train[np.flatnonzero(groups == group)]
            # within the group first, overall popularity breaks ties and fills the tail
            by_group[group] = np.diff(members.tocsc().indptr) + overall / (overall.max() + 1)
        return by_group

    def scores(self, users: np.ndarray) -> np.ndarray:
        """users x items: higher is better (before excluding what they already have)."""
        users = np.asarray(users)
        if self.kind in ("als", "bpr"):
            return self._state.user_factors[users] @ self._state.item_factors.T
        if self.kind == "popularity":
            return np.broadcast_to(self._state, (len(users), len(self._state)))
        if self.kind == "cluster_popularity":
            return np.stack([self._state[g] for g in np.asarray(self.groups)[users]])
        return np.asarray((self._train[users] @ self._state).todense())

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(user factors, item factors) of a fitted ALS or BPR model."""
        if self.kind not in ("als", "bpr"):
            raise ValueError(f"a {self.kind} model has no factors")
        return np.asarray(self._state.user_factors), np.asarray(self._state.item_factors)

    def _similarity(self, items: np.ndarray, others: np.ndarray) -> np.ndarray | None:
        """items x others likeness (None for the popularity baselines)."""
        if self.kind in ("als", "bpr"):
            factors = np.asarray(self._state.item_factors)
            unit = factors / (np.linalg.norm(factors, axis=1, keepdims=True) + 1e-9)
            return unit[items] @ unit[others].T
        if self.kind == "cooccurrence":
            return np.asarray(self._state[items][:, others].todense())
        return None

    def reasons(self, users: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        """For each recommended item, the item of the user's history most like it: why it is
        recommended ("because you read ..."); -1 for a baseline or an empty slot."""
        why = np.full(recommended.shape, -1)
        for row, user in enumerate(np.asarray(users)):
            had = self._train[user].indices
            shown = recommended[row] >= 0
            if not len(had) or not shown.any():
                continue
            likeness = self._similarity(recommended[row][shown], had)
            if likeness is not None:
                why[row, shown] = had[likeness.argmax(axis=1)]
        return why

    def recommend(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """In chunks of users, so that memory stays chunk x items however many people."""
        users = np.asarray(users)
        parts = [
            top_k(self.scores(chunk), self._train[chunk], k)
            for chunk in np.array_split(users, max(1, -(-len(users) // _CHUNK)))
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
