"""Recommenders on a users x items confidence matrix: implicit ALS and BPR, and the two
baselines every recommender must beat, popularity and item-item co-occurrence (popularity
within a behavioral cluster is a third, ml/recommend/evaluate.py, and the nightly cold start).

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


def popularity_share(train: sp.csr_matrix) -> np.ndarray:
    """The share of the matrix's users who have each item."""
    return np.diff(train.tocsc().indptr) / max(train.shape[0], 1)


def _first_per_row(rows: np.ndarray, *keys: np.ndarray, k: int = 1) -> np.ndarray:
    """Positions of the first k entries of each row after sorting by `keys` (the first key
    most significant) within the row: the rows' top k with deterministic tie-breaking."""
    order = np.lexsort((*reversed(keys), rows))
    sorted_rows = rows[order]
    start = np.searchsorted(sorted_rows, sorted_rows)  # where each entry's row begins
    return order[np.arange(len(order)) - start < k]


def top_k(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns per row, excluding seen items (ties: the lower item index first).
    A partition finds each row's k-th best score in linear time; only the candidates at or
    above it are sorted (a full sort of every row was most of the serving time)."""
    scores = np.array(scores, dtype=np.float64)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    order = np.full((n_rows, k), -1)
    best = np.full((n_rows, k), np.nan)
    if not n_rows or not k:
        return order, best
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k]
    rows, cols = np.nonzero(scores >= kth[:, None])
    values = scores[rows, cols]
    chosen = _first_per_row(rows, -values, cols, k=k)
    rows, cols, values = rows[chosen], cols[chosen], values[chosen]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    real = ~np.isneginf(values)
    order[rows[real], rank[real]] = cols[real]
    best[rows[real], rank[real]] = values[real]
    return order, best


@dataclass
class Recommender:
    """One model kind with its hyperparameters; `fit` then `recommend`."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 7
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
            self._state = popularity_share(self._train)
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

    def scores(self, users: np.ndarray) -> np.ndarray:
        """users x items: higher is better (before excluding what they already have)."""
        users = np.asarray(users)
        if self.kind in ("als", "bpr"):
            return self._state.user_factors[users] @ self._state.item_factors.T
        if self.kind == "popularity":
            return np.broadcast_to(self._state, (len(users), len(self._state)))
        return np.asarray((self._train[users] @ self._state).todense())

    def item_factors(self) -> np.ndarray:
        """The item factors of a fitted ALS or BPR model."""
        if self.kind not in ("als", "bpr"):
            raise ValueError(f"a {self.kind} model has no factors")
        return np.asarray(self._state.item_factors)

    def _likeness(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """How alike each pair (items[i], others[i]) is: cosine of the item factors, or the
        co-occurrence similarity."""
        if self.kind == "cooccurrence":
            return np.asarray(self._state[items, others]).ravel()
        factors = self.item_factors()
        unit = factors / (np.linalg.norm(factors, axis=1, keepdims=True) + 1e-9)
        return np.einsum("ij,ij->i", unit[items], unit[others])

    def reasons(self, users: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        """For each recommended item, the item of the user's history most like it: why it is
        recommended ("because you read ..."; ties: the lower item index); -1 for a baseline
        or an empty slot. Vectorized over (user, history item) pairs, a chunk of users at
        a time."""
        why = np.full(recommended.shape, -1)
        if self.kind not in ("als", "bpr", "cooccurrence"):
            return why
        users = np.asarray(users)
        for chunk in np.array_split(np.arange(len(users)), max(1, -(-len(users) // _CHUNK))):
            history = self._train[users[chunk]]
            owner = np.repeat(np.arange(len(chunk)), np.diff(history.indptr))
            for rank in range(recommended.shape[1]):
                shown = recommended[chunk, rank][owner]
                pair = np.flatnonzero(shown >= 0)
                had = history.indices[pair]
                likeness = self._likeness(shown[pair], had)
                best = _first_per_row(owner[pair], -likeness, had)
                why[chunk[owner[pair][best]], rank] = had[best]
        return why

    def recommend(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """In chunks of users, so that memory stays chunk x items however many people."""
        users = np.asarray(users)
        parts = [
            top_k(self.scores(chunk), self._train[chunk], k)
            for chunk in np.array_split(users, max(1, -(-len(users) // _CHUNK)))
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
