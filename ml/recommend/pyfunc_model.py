"""The registered form of a recommender (MLflow models-from-code): its fitted factors answer
the top K items per user.

predict() takes a frame with a `user` column and returns, for each user known at training,
the `k` best items they had not interacted with (params={"k": 10}): user, rank, item, score.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp
from mlflow.models import set_model

from ml.recommend.models import top_k


class TopItems(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        data = np.load(context.artifacts["factors"], allow_pickle=False)
        self.users = pd.Index(data["users"])
        self.items = data["items"]
        self.user_factors, self.item_factors = data["user_factors"], data["item_factors"]
        self.seen = sp.csr_matrix(
            (data["seen_data"], data["seen_indices"], data["seen_indptr"]),
            shape=(len(self.users), len(self.items)),
        )

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        rows = self.users.get_indexer(model_input["user"])
        rows = rows[rows >= 0]
        order, best = top_k(self.user_factors[rows] @ self.item_factors.T, self.seen[rows], k)
        return pd.DataFrame(
            {
                "user": np.repeat(self.users[rows], order.shape[1]),
                "rank": np.tile(np.arange(1, order.shape[1] + 1), len(rows)),
                "item": np.where(order >= 0, self.items[order], None).ravel(),
                "score": best.ravel(),
            }
        ).dropna(subset=["item"])


set_model(TopItems())
