"""The registered form of a recommender (MLflow models-from-code): its item factors, and no
person data (MLflow holds none: docs/privacy.md), so it ranks items like a given history.

predict() takes a frame of (user, item) rows, each user's history, and returns for each user
the `k` items most like their history (the sum of cosine similarities of the item factors),
excluding the history and items unknown at training (params={"k": 10}): user, rank, item,
score. The nightly recommendations refit the model on everyone's interactions instead.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp
from mlflow.models import set_model

from ml.recommend.models import top_k


class ItemsLikeHistory(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        data = np.load(context.artifacts["factors"], allow_pickle=False)
        self.items = pd.Index(data["items"])
        factors = data["item_factors"]
        self.unit = factors / (np.linalg.norm(factors, axis=1, keepdims=True) + 1e-9)

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        history = model_input.assign(column=self.items.get_indexer(model_input["item"]))
        history = history[history.column >= 0].drop_duplicates(["user", "column"])
        users = pd.Index(history.user.unique())
        had = sp.csr_matrix(
            (np.ones(len(history)), (users.get_indexer(history.user), history.column)),
            shape=(len(users), len(self.items)),
        )
        order, best = top_k((had @ self.unit) @ self.unit.T, had, k)
        names = np.where(order >= 0, self.items.to_numpy()[np.maximum(order, 0)], None)
        return pd.DataFrame(
            {
                "user": np.repeat(users.to_numpy(), order.shape[1]),
                "rank": np.tile(np.arange(1, order.shape[1] + 1), len(users)),
                "item": names.ravel(),
                "score": best.ravel(),
            }
        ).dropna(subset=["item"])


set_model(ItemsLikeHistory())
