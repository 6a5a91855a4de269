"""Choosing k: a fit that leaves clusters empty is not a fit with that many clusters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from microseg.errors import DataQualityError
from ml.cluster import ClusterConfig, _fit

# 150 people who are three behaviors exactly: no fit can fill more than three clusters
THREE_GROUPS = np.repeat(np.eye(3) * 5, 50, axis=0)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_k_is_chosen_only_among_fits_that_fill_every_cluster(method: str) -> None:
    with warnings.catch_warnings():  # KMeans warns about the duplicate points it was given
        warnings.simplefilter("ignore")
        assignment, _, quality, per_k = _fit(
            ClusterConfig(method, 3, 5, 7, ("a", "b", "c"), {}), THREE_GROUPS
        )
        assert per_k == {3: 1.0} and quality == 1.0
        assert sorted(np.bincount(assignment)) == [50, 50, 50]
        with pytest.raises(DataQualityError, match="every fit of 4 to 5 clusters left some empty"):
            _fit(ClusterConfig(method, 4, 5, 7, ("a", "b", "c"), {}), THREE_GROUPS)
