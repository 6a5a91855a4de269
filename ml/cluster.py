"""`microseg cluster`: behavioral clusters with readable, stable names.

K-Means (or a Gaussian mixture) on standardized 28-day behavior vectors, k chosen in a
configured range by silhouette. Each cluster gets a name from its profile (the
column where it stands out most). Night to night, new centroids are matched to the previous
night's (Hungarian assignment), so a matched cluster keeps its id and name. Writes
marts.person_clusters and marts.cluster_profiles; a re-run of a date replaces it. The run is
tracked in MLflow (experiment `behavior_clusters`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microseg.config import PROJECT_ROOT, Settings, load_yaml
from microseg.errors import ConfigError, DataQualityError
from microseg.privacy import consent_policy
from microseg.warehouse import connect, has_table

CONFIG = PROJECT_ROOT / "ml" / "clustering.yaml"
EXPERIMENT = "behavior_clusters"
CLIP_Z = 4.0
# The behavior vector (dbt view marts.person_behavior_vectors) of the people clustered.
VECTOR_SQL = """
select * from marts.person_behavior_vectors as vectors
where vectors.as_of_date = ? and marts.has_consent(vectors.person_id, ?, vectors.as_of_date)
order by vectors.person_id
"""
PROFILE_COLUMNS = (
    "visit_frequency",
    "pages_per_session",
    "engaged_s_per_page",
    "article_share",
    "product_share",
    "scroll_depth",
    "bounce_rate",
    "video_share",
    "searches_per_session",
    "cart_adds_per_session",
    "purchases_per_session",
)
TABLES_DDL = (
    """create table if not exists marts.person_clusters (
        person_id varchar not null, as_of_date date not null, cluster_id integer not null,
        cluster_label varchar not null, primary key (person_id, as_of_date))""",
    """create table if not exists marts.cluster_profiles (
        as_of_date date not null, cluster_id integer not null, cluster_label varchar not null,
        members bigint not null, centroid json not null, profile json not null,
        primary key (as_of_date, cluster_id))""",
)


@dataclass(frozen=True)
class ClusterConfig:
    method: str
    k_min: int
    k_max: int
    seed: int
    vector: tuple[str, ...]
    labels: dict[str, str]


@dataclass(frozen=True)
class ClusterResult:
    as_of: date
    k: int
    labels: dict[int, str]  # cluster id -> name
    members: dict[int, int]
    matched: int  # clusters that kept yesterday's id and name
    quality: float  # silhouette of the chosen k


def _purpose() -> str:
    """Clusters describe people like segments do, so they need the segments' consent."""
    return consent_policy().purpose_of["segments"]


def load_config(path: Path = CONFIG) -> ClusterConfig:
    raw = load_yaml(path.read_text("utf-8"))
    method = raw.get("method")
    if method not in ("kmeans", "gmm"):
        raise ConfigError(f"{path}: method must be kmeans or gmm, got {method!r}")
    k_min, k_max = int(raw["k_min"]), int(raw["k_max"])
    if not 2 <= k_min <= k_max <= 20:
        raise ConfigError(f"{path}: need 2 <= k_min <= k_max <= 20")
    for column in [*raw["vector"], *raw["labels"]]:
        if column not in PROFILE_COLUMNS:
            raise ConfigError(f"{path}: unknown behavior column {column!r}")
    return ClusterConfig(
        method, k_min, k_max, int(raw.get("seed", 7)), tuple(raw["vector"]), dict(raw["labels"])
    )


def _fit(
    config: ClusterConfig, z: np.ndarray, previous: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """(assignments, centroids in z space, quality, quality per k) for the best k of the fits
    that fill all their k clusters.

    Both methods choose k by the silhouette of their assignments. A Gaussian mixture has a
    tied covariance (full ones overfit ten dimensions of a few hundred people: ARI 0.51
    against the planted archetypes, tied 0.76) and, for yesterday's k, starts from yesterday's
    centroids (`previous`): EM from random starts moved 40 % of the people to another cluster
    overnight. Its BIC chose k = 7 or 8 of the 5-8 offered on every data set tried, splitting
    the 5 archetypes (ARI 0.68-0.73 where silhouette's k = 5 gave 0.79)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    scores: dict[int, float] = {}
    fits = {}
    for k in range(config.k_min, min(config.k_max, len(z) - 1) + 1):
        if config.method == "kmeans":
            model = KMeans(k, n_init=10, random_state=config.seed).fit(z)
            fits[k] = (model.labels_, model.cluster_centers_)
        else:
            start = (
                {"means_init": previous}
                if previous is not None and len(previous) == k
                else {"n_init": 3}
            )
            model = GaussianMixture(
                k, covariance_type="tied", random_state=config.seed, **start
            ).fit(z)
            fits[k] = (model.predict(z), model.means_)
        labels = fits[k][0]
        if len(set(labels)) < k:  # clusters left empty: not a k-cluster fit (duplicate people)
            continue
        scores[k] = float(
            silhouette_score(z, labels, sample_size=min(len(z), 5000), random_state=config.seed)
        )
    if not scores:
        raise DataQualityError(
            f"clusters: every fit of {config.k_min} to {config.k_max} clusters left some empty "
            "(the behavior vectors hold fewer distinct groups)"
        )
    best = max(scores, key=lambda k: scores[k])
    return *fits[best], scores[best], scores


def _name_clusters(
    z_profiles: pd.DataFrame, labels: dict[str, str], taken: set[str]
) -> dict[int, str]:
    """Each cluster -> the label of the profile column where it stands out most, each once."""
    from scipy.optimize import linear_sum_assignment

    free = {column: name for column, name in labels.items() if name not in taken}
    if z_profiles.empty:
        return {}
    columns = list(free)
    cost = -z_profiles[columns].to_numpy() if columns else np.zeros((len(z_profiles), 0))
    rows, cols = linear_sum_assignment(cost) if columns else ([], [])
    named = {int(z_profiles.index[r]): free[columns[c]] for r, c in zip(rows, cols, strict=True)}
    for cluster in z_profiles.index:  # more clusters than names
        named.setdefault(int(cluster), f"Cluster {int(cluster)}")
    return named


def _previous(con, as_of: date) -> pd.DataFrame:
    """The latest earlier night's clusters: id, name and centroid in vector units."""
    if not has_table(con, "marts", "cluster_profiles"):
        return pd.DataFrame()
    return con.execute(
        "select cluster_id, cluster_label, centroid from marts.cluster_profiles "
        "where as_of_date = (select max(as_of_date) from marts.cluster_profiles "
        "                    where as_of_date < ?) order by cluster_id",
        [as_of],
    ).df()


def cluster(settings: Settings, as_of: date, config: ClusterConfig | None = None) -> ClusterResult:
    """Fit, name (or keep yesterday's names), write the tables, log the run to MLflow
    (`config`: ml/clustering.yaml unless given)."""
    from scipy.optimize import linear_sum_assignment

    config = config or load_config()
    with connect(settings, read_only=True) as con:
        frame = con.execute(VECTOR_SQL, [as_of, _purpose()]).df()
        previous = _previous(con, as_of)
    if len(frame) < config.k_max * 10:
        raise DataQualityError(
            f"clusters: {len(frame)} active people on {as_of}; at least {config.k_max * 10} "
            f"are needed for up to {config.k_max} clusters"
        )
    values = frame[list(PROFILE_COLUMNS)].astype(float)
    values = values.fillna(values.median())
    mean, std = values.mean(), values.std(ddof=0).replace(0, 1)
    z_all = ((values - mean) / std).clip(-CLIP_Z, CLIP_Z)
    vector = list(config.vector)
    old = (
        pd.DataFrame([json.loads(c) for c in previous.centroid])[vector] if len(previous) else None
    )
    old_z = None if old is None else ((old - mean[vector]) / std[vector]).to_numpy()
    warm = None if old_z is None else old_z.clip(-CLIP_Z, CLIP_Z)
    assignment, _, quality, per_k = _fit(config, z_all[vector].to_numpy(), warm)
    raw_centroids = values[vector].groupby(assignment).mean()
    z_profiles = z_all.groupby(assignment).mean()

    # keep yesterday's ids and names for the clusters that match (closest centroids)
    mapping: dict[int, int] = {}
    names: dict[int, str] = {}
    if old_z is not None:
        new_z = ((raw_centroids - mean[vector]) / std[vector]).to_numpy()
        distance = np.linalg.norm(new_z[:, None, :] - old_z[None, :, :], axis=2)
        for r, c in zip(*linear_sum_assignment(distance), strict=True):
            mapping[int(raw_centroids.index[r])] = int(previous.cluster_id[c])
            names[int(previous.cluster_id[c])] = str(previous.cluster_label[c])
    next_id = max([*mapping.values(), -1]) + 1
    unmatched = [c for c in raw_centroids.index if int(c) not in mapping]
    for c in unmatched:
        mapping[int(c)] = next_id
        next_id += 1
    fresh = _name_clusters(
        z_profiles.loc[unmatched].rename(index=lambda c: mapping[int(c)]),
        config.labels,
        set(names.values()),
    )
    names.update(fresh)

    ids = np.array([mapping[int(a)] for a in assignment])
    members = pd.DataFrame(
        {
            "person_id": frame.person_id,
            "as_of_date": as_of,
            "cluster_id": ids,
            "cluster_label": [names[i] for i in ids],
        }
    )
    profiles = pd.DataFrame(
        {
            "as_of_date": as_of,
            "cluster_id": [mapping[int(c)] for c in raw_centroids.index],
            "cluster_label": [names[mapping[int(c)]] for c in raw_centroids.index],
            "members": [int((assignment == c).sum()) for c in raw_centroids.index],
            "centroid": [json.dumps(row.round(6).to_dict()) for _, row in raw_centroids.iterrows()],
            "profile": [
                json.dumps(
                    {
                        "mean": values[assignment == c].mean().round(4).to_dict(),
                        "z": z_profiles.loc[c].round(3).to_dict(),
                    }
                )
                for c in raw_centroids.index
            ],
        }
    )
    _write(settings, as_of, members, profiles)
    _track(settings, config, as_of, per_k, profiles)
    return ClusterResult(
        as_of=as_of,
        k=len(raw_centroids),
        labels=dict(zip(profiles.cluster_id, profiles.cluster_label, strict=True)),
        members=dict(zip(profiles.cluster_id, profiles.members, strict=True)),
        matched=len(raw_centroids) - len(unmatched),
        quality=quality,
    )


def _write(settings: Settings, as_of: date, members: pd.DataFrame, profiles: pd.DataFrame) -> None:
    with connect(settings) as con:
        con.execute("create schema if not exists marts")
        for ddl in TABLES_DDL:
            con.execute(ddl)
        con.execute("begin")
        for table in ("person_clusters", "cluster_profiles"):
            con.execute(f"delete from marts.{table} where as_of_date = ?", [as_of])
        con.register("new_members", members)
        con.register("new_profiles", profiles)
        con.execute("insert into marts.person_clusters by name select * from new_members")
        con.execute("insert into marts.cluster_profiles by name select * from new_profiles")
        con.execute(  # consent first, on every date
            "delete from marts.person_clusters "
            "where not marts.has_consent(person_id, ?, as_of_date)",
            [_purpose()],
        )
        con.execute("commit")


def _track(
    settings: Settings,
    config: ClusterConfig,
    as_of: date,
    per_k: dict[int, float],
    profiles: pd.DataFrame,
) -> None:
    import mlflow

    from ml import registry

    client = registry.client(settings)
    with mlflow.start_run(
        experiment_id=registry.experiment_id(settings, client, EXPERIMENT),
        run_name=f"clusters as of {as_of}",
    ):
        params: dict[str, Any] = {
            "method": config.method,
            "k_min": config.k_min,
            "k_max": config.k_max,
            "k": len(profiles),
            "as_of_date": as_of.isoformat(),
            "vector": ",".join(config.vector),
        }
        mlflow.log_params(params)
        mlflow.log_metrics({f"silhouette_k{k}": v for k, v in per_k.items()})
        mlflow.log_metrics(
            {
                f"members_cluster_{i}": int(n)
                for i, n in zip(profiles.cluster_id, profiles.members, strict=True)
            }
        )
        mlflow.log_text(profiles.to_csv(index=False), "cluster_profiles.csv")
        mlflow.set_tags(registry.lineage_tags(settings))
