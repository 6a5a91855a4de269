"""Drift monitoring: the population stability index (PSI) of every model input and of the
score, tonight against the training set and against the previous night.

Training logs a person-free reference (`monitoring/reference.json` in the run): per feature,
the bins (deciles of the training rows for a number, the categories for a category, missing
values as their own bin) and the training share in each; the same for the score. Scoring
puts tonight's rows, and the previous night's, in those bins and writes one row per subject
and baseline to marts.model_monitoring:

    PSI = sum over bins of (tonight - baseline) * ln(tonight / baseline)

(shares floored at 1e-4). Common reading: below 0.1 stable, 0.1-0.25 shifting, above 0.25 a
different population. The spec's `monitoring: {warn_psi, fail_psi}` set the statuses (warn
from 0.1 by default; fail only when fail_psi is set: on a history younger than the longest
feature window, windows fill up night after night and every count drifts from the training
rows). A subject at `fail` against either baseline stops the scoring of that model with one
line naming it, after the monitoring rows are written: scores computed on a population the
champion never saw, or on a night unlike the one before (a broken tracker), are not acted on.
With `retrain_psi` set, drift against the training set at or past it asks for a retraining:
in Airflow the nightly's `request_retraining` task then updates the asset that starts
models_weekly at once, once per champion version (dags/).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas loads where frames are made: DAG files read specs at each parse
    import pandas as pd

REFERENCE_ARTIFACT = "monitoring/reference.json"
SHARE_FLOOR = 1e-4
SCORE = "score"  # the subject name of the score itself

MONITORING_DDL = """
create table if not exists marts.model_monitoring (
    as_of_date date not null,
    model_name varchar not null,
    model_version varchar not null,
    subject varchar not null,      -- a feature, or 'score'
    baseline varchar not null,     -- training | previous_night (as_of_date - 1)
    psi double not null,
    status varchar not null,       -- ok | warn | fail
    primary key (as_of_date, model_name, subject, baseline)
)"""


@dataclass(frozen=True)
class Thresholds:
    warn: float = 0.1
    fail: float | None = None  # opt-in: a young history drifts from its own training rows
    retrain: float | None = None  # opt-in: drift against training that asks for a retraining

    def status(self, psi: float) -> str:
        if self.fail is not None and psi >= self.fail:
            return "fail"
        return "warn" if psi >= self.warn else "ok"


def _bins(values: pd.Series, categorical: bool) -> dict:
    """How to bin a subject: its categories, or the inner decile edges of its numbers."""
    if categorical:
        return {"categories": sorted(values.dropna().astype(str).unique().tolist())}
    numbers = values.dropna().to_numpy(dtype=float)
    edges = np.unique(np.quantile(numbers, np.linspace(0.1, 0.9, 9))) if numbers.size else []
    return {"edges": [float(e) for e in edges]}


def shares(values: pd.Series, bins: dict) -> np.ndarray:
    """The share of the values in each bin (the last bin: missing, and unseen categories)."""
    if "categories" in bins:
        known = {c: i for i, c in enumerate(bins["categories"])}
        index = values.astype("string").map(known).fillna(len(known)).to_numpy(dtype=int)
        counts = np.bincount(index, minlength=len(known) + 1)
    else:
        numbers = values.to_numpy(dtype=float, na_value=np.nan)
        index = np.searchsorted(np.asarray(bins["edges"]), numbers, side="right")
        index[np.isnan(numbers)] = len(bins["edges"]) + 1
        counts = np.bincount(index, minlength=len(bins["edges"]) + 2)
    return counts / max(counts.sum(), 1)


def psi(current: np.ndarray, baseline: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    p, q = np.maximum(current, SHARE_FLOOR), np.maximum(baseline, SHARE_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def reference(frame: pd.DataFrame, scores: np.ndarray, categorical: tuple[str, ...]) -> dict:
    """The training reference: bins and training shares per feature and for the score."""
    import pandas as pd

    subjects = {}
    for column in frame.columns:
        bins = _bins(frame[column], column in categorical)
        subjects[column] = {**bins, "shares": shares(frame[column], bins).tolist()}
    score = pd.Series(scores)
    bins = _bins(score, categorical=False)
    subjects[SCORE] = {**bins, "shares": shares(score, bins).tolist()}
    return {"subjects": subjects}


def training_reference(mlflow_client, model: str, version: str) -> dict | None:
    """The reference the version's training run logged; None for a version trained before
    runs logged one (it is then not monitored until retrained)."""
    import mlflow

    run_id = mlflow_client.get_model_version(model, version).run_id
    logged = {a.path for a in mlflow_client.list_artifacts(run_id, "monitoring")}
    if REFERENCE_ARTIFACT not in logged:
        return None
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")


def compare(
    ref: dict,
    tonight: pd.DataFrame,
    previous: pd.DataFrame | None,
    thresholds: Thresholds,
) -> pd.DataFrame:
    """One row per subject and baseline: PSI of tonight against training and, when there is
    one, against the previous night (frames of the features and a `score` column)."""
    import pandas as pd

    rows = []
    for subject, bins in ref["subjects"].items():
        now = shares(tonight[subject], bins)
        value = psi(now, np.asarray(bins["shares"]))
        rows.append({"subject": subject, "baseline": "training", "psi": value})
        if previous is not None and not previous.empty:
            before = psi(now, shares(previous[subject], bins))
            rows.append({"subject": subject, "baseline": "previous_night", "psi": before})
    frame = pd.DataFrame(rows)
    frame["status"] = frame.psi.map(thresholds.status)
    return frame


def write(con, rows: pd.DataFrame, *, model: str, version: str, as_of: date) -> None:
    """Replace the model's rows of the date (a re-run of the date writes the same rows)."""
    table = rows.assign(as_of_date=as_of, model_name=model, model_version=version)
    con.execute("create schema if not exists marts")
    con.execute(MONITORING_DDL)
    con.execute("begin")
    con.execute(
        "delete from marts.model_monitoring where model_name = ? and as_of_date = ?",
        [model, as_of],
    )
    con.register("monitoring_rows", table)
    con.execute("insert into marts.model_monitoring by name select * from monitoring_rows")
    con.unregister("monitoring_rows")
    con.execute("commit")


def retraining_due(con, as_of: date, levels: dict[str, float]) -> list[tuple[str, str, str]]:
    """(model, version, line) per model (levels: model -> its retrain_psi) with an input or
    its score at or past that level against its training set on the date; the line names
    the worst."""
    if not levels:
        return []
    rows = con.execute(
        """
        select model_name, model_version, arg_max(subject, psi), max(psi)
        from marts.model_monitoring
        where as_of_date = ? and baseline = 'training' and list_contains(?, model_name)
        group by all order by model_name
        """,
        [as_of, sorted(levels)],
    ).fetchall()
    return [
        (
            model,
            version,
            f"{model} v{version} drifted past its retrain_psi {levels[model]:g} ({worst}: PSI "
            f"{value:.3f} against its training set)",
        )
        for model, version, worst, value in rows
        if value >= levels[model]
    ]


def summaries(con, as_of: date) -> list[str]:
    """One line per model monitored on the date: its largest drift against training, and how
    many subjects warn or fail."""
    rows = con.execute(
        """
        select model_name, model_version,
               arg_max(subject, psi) as worst, max(psi) as psi,
               count(*) filter (where status = 'warn') as warn,
               count(*) filter (where status = 'fail') as fail,
               count(*) as subjects
        from marts.model_monitoring
        where as_of_date = ? and baseline = 'training'
        group by all order by model_name
        """,
        [as_of],
    ).fetchall()
    return [
        f"{model} v{version} drift against its training set: largest PSI {value:.3f} "
        f"({worst}); {warn} warn, {fail} fail of {subjects} (marts.model_monitoring)"
        for model, version, worst, value, warn, fail, subjects in rows
    ]
