"""Predictive models for real: LightGBM trained on the generator's data, tracked in a real
MLflow registry (SQLite), gated promotion, fairness audit and scoring."""

from __future__ import annotations

import json
import re
import shutil
import socket
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from microseg.activation import activate
from microseg.config import PROJECT_ROOT, Settings
from microseg.errors import DataQualityError, MicrosegError, NothingToRunError
from microseg.generate import GeneratorConfig, generate
from microseg.generate.truth import true_no_session_probability
from microseg.ingest import ingest_paths
from microseg.pipeline import request_retraining_step
from microseg.privacy import consent_policy
from microseg.segments import run_segments
from microseg.transform import transform
from ml import registry
from ml.calibration import Platt
from ml.monitoring import summaries
from ml.own_table import train_own
from ml.promote import promote
from ml.score import score
from ml.scorer import SCORING_TAG, scoring_inputs
from ml.specs import FAIRNESS_GROUPS, load_spec
from ml.train import train
from ml.training_sets import people_at, training_set
from tests.helpers import champion_copy, query, run_cli, truth_connection

MODEL = "purchase_propensity"


@pytest.fixture
def home(eight_weeks_home: Path, tmp_path: Path) -> Path:
    """A copy of the shared warehouse with a registry of its own: versions count from 1
    whichever test trained before (the shared home is only read)."""
    copy = tmp_path / "home"
    copy.mkdir()
    shutil.copy(eight_weeks_home / "warehouse.duckdb", copy)
    return copy


def _spec_dir(tmp_path: Path, name: str, model: str = MODEL, **changes) -> Path:
    """A copy of the shipped spec with some fields replaced (dotted keys), in its own folder."""
    spec = yaml.safe_load((PROJECT_ROOT / "ml/specs" / f"{model}.yaml").read_text())
    spec["lightgbm"]["search"]["trials"] = 2  # keep the suite quick
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = spec
        for part in parents:
            target = target[part]
        target[last] = value
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{model}.yaml").write_text(yaml.safe_dump(spec))
    return folder


def _settings(home: Path, specs: Path) -> Settings:
    return Settings.from_env({"MICROSEG_HOME": str(home), "MICROSEG_ML_SPECS_DIR": str(specs)})


# A deliberately worse model: only a few weak signals (everything else excluded).
WEAK_FEATURES = {"sessions_90d", "bounce_sessions_28d", "return_visits_without_action_28d"}


def _weak_changes() -> dict:
    from microseg.segments import mart_columns

    columns = set(mart_columns("fct_user_features_daily")) - {"person_id", "as_of_date"}
    return {
        "features__exclude": sorted(columns - WEAK_FEATURES),
        "categorical": [],
        "fairness__min_disparate_impact": 0.0,  # it only has to become the first champion
        "fairness__max_equal_opportunity_gap": 1.0,
    }


def test_model_lifecycle(home: Path, eight_weeks: Path, tmp_path: Path) -> None:
    """Train, beat the baseline and most of the oracle; the gate, the audit, scoring."""
    full = _settings(home, _spec_dir(tmp_path, "full"))
    weak = _settings(home, _spec_dir(tmp_path, "weak", **_weak_changes()))
    strict = _settings(
        home,
        _spec_dir(
            tmp_path,
            "strict",
            fairness__max_equal_opportunity_gap=0.0,
            fairness__significance=1.0,  # any gap the sample shows, chance or not
        ),
    )

    # a weak first model: trained, registered as challenger, promoted (no champion yet)
    first = train(weak, MODEL)
    assert first.version == "1"
    initial = promote(weak, MODEL)
    assert initial.promoted, initial.reasons

    # the full model: better than the logistic baseline and close to the oracle, but not past
    # it: no model knows more than the generator's true propensity unless it read the test
    # labels (trained next to the test date, without the embargo, it scored 0.937 to 0.890)
    better = train(full, MODEL)
    assert better.metrics["roc_auc"] > better.baseline_metrics["roc_auc"]
    oracle = _oracle_auc(full, eight_weeks)
    assert 0.95 * oracle <= better.metrics["roc_auc"] <= oracle + 0.01, (better.metrics, oracle)

    # MLflow holds the run: params, metrics, spec, plots; the version carries lineage tags
    client = registry.client(full)
    run = client.get_run(better.run_id)
    assert run.data.params["rows_test"] == str(better.rows["test"])
    assert run.data.metrics["test_roc_auc"] == pytest.approx(better.metrics["roc_auc"])
    artifacts = {a.path for a in client.list_artifacts(better.run_id, "explanations")}
    assert {"explanations/roc.png", "explanations/contributions_by_score_decile.csv"} <= artifacts
    # and no person in any MLflow file: explanations are per score decile, not per person
    person = re.compile(rb"per_[0-9a-f]{24}")
    mlflow_files = [home / "mlflow.db", *(home / "mlartifacts").rglob("*")]
    mlflow_files = [p for p in mlflow_files if p.is_file()]
    assert len(mlflow_files) > 10
    assert [p for p in mlflow_files if person.search(p.read_bytes())] == []
    version = client.get_model_version(MODEL, better.version)
    assert len(version.tags["git_commit"]) == 40

    # calibrated on the validation dates, where the spec's policy (the lowest threshold with a
    # precision of 0.8) chose the threshold the version carries; test metrics are at it
    scorer = registry.load_scorer(full, MODEL, version=better.version)
    assert run.data.params["activation_threshold"] == str(scorer.threshold)
    rows = training_set(full, load_spec(MODEL, full.ml_specs_dir))
    valid = rows[rows.split == "valid"]
    scores, labels = scorer.predict(scorer.inputs(valid)), valid.label.to_numpy()
    assert labels[scores >= scorer.threshold].mean() >= 0.8
    lower = scores[scores < scorer.threshold].max()  # one more person: below the target
    assert labels[scores >= lower].mean() < 0.8
    # on ~600 test rows, 10 bins of ~60 people: sampling alone makes ~0.06
    assert better.metrics["calibration_error"] < 0.1, better.metrics
    assert better.metrics["uncalibrated_calibration_error"] < 0.1, better.metrics
    assert 0 < better.metrics["recall_at_threshold"] < 1
    assert str(registry.version_by_alias(client, MODEL, "challenger").version) == better.version

    # a failing fairness audit blocks the better model, naming the group and the metric
    blocked = promote(strict, MODEL)
    assert not blocked.promoted
    assert any(
        r.startswith("fairness audit failed: device_type: equal-opportunity gap")
        for r in blocked.reasons
    ), blocked.reasons
    assert str(registry.version_by_alias(client, MODEL, "champion").version) == first.version
    assert query(
        full,
        "select bool_and(not audit_passed), count(distinct attribute) "
        "from marts.model_fairness_audit where model_version = ?",
        [better.version],
    ) == [(True, 3)]

    # with the shipped limits the better model is promoted ...
    decision = promote(full, MODEL)
    assert decision.promoted, decision.reasons
    assert decision.challenger_value > decision.champion_value
    # ... and a worse challenger is not
    train(weak, MODEL)
    refused = promote(full, MODEL)
    assert not refused.promoted and "does not beat champion v2" in refused.reasons[0]
    assert str(registry.version_by_alias(client, MODEL, "champion").version) == better.version

    # scoring: every consenting person once; a re-run replaces; opted-out people never
    written = score(full)
    first_scores = query(full, "select * from marts.user_scores order by all")
    assert score(full) == written
    assert query(full, "select * from marts.user_scores order by all") == first_scores
    assert written[MODEL] == len(first_scores) > 300
    opted_out = query(
        full,
        "select count(*) from marts.fct_user_features_daily f "
        "join marts.user_scores s using (person_id, as_of_date) where f.is_opted_out",
    )
    assert opted_out == [(0,)]
    assert query(full, "select count(*) from marts.dim_persons where is_opted_out")[0][0] > 10
    assert {row[2] for row in first_scores} == {better.version}  # the champion's version


def _oracle_auc(settings: Settings, dataset: Path) -> float:
    """AUC of the generator's true propensity on the model's test rows."""
    from sklearn.metrics import roc_auc_score

    test = training_set(settings, load_spec(MODEL, settings.ml_specs_dir)).query("split == 'test'")
    with truth_connection(settings, dataset) as con:
        truth = con.execute("select person_id, true_purchase_propensity from truth_people").df()
    joined = test.merge(truth, on="person_id", how="inner")
    assert len(joined) == len(test)
    return roc_auc_score(joined.label, joined.true_purchase_propensity)


def test_changing_events_from_a_split_on_changes_no_earlier_split(
    home: Path, eight_weeks_home: Path
) -> None:
    """The embargo, on a rebuilt warehouse: take the commerce events (cart adds, checkouts,
    purchases) from the first validation date on out of raw.events and build again. No
    training row moves, features or label, while validation and test labels do, and so do the
    labels of the embargoed dates between training and validation: without the gap, training
    labels would have read the validation period."""
    shared = Settings.from_env({"MICROSEG_HOME": str(eight_weeks_home)})
    spec = load_spec(MODEL, shared.ml_specs_dir)
    before = training_set(shared, spec)
    valid_from = before[before.split == "valid"].as_of_date.min()
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    with duckdb.connect(str(settings.warehouse_path)) as con:
        [(removed,)] = con.execute(
            """delete from raw.events where event_at >= ?
                   and event_type in ('add_to_cart', 'checkout_start', 'purchase')""",
            [valid_from],
        ).fetchall()
    assert removed > 500
    transform(settings, full_refresh=True)
    after = training_set(settings, spec)
    key = ["person_id", "as_of_date"]

    def split(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return frame[frame.split == name].sort_values(key, ignore_index=True)

    pd.testing.assert_frame_equal(split(before, "train"), split(after, "train"))
    for later in ("valid", "test"):
        assert (split(before, later).label != split(after, later).label).sum() > 20, later
    embargoed = [
        d.date()
        for d in pd.date_range(before[before.split == "train"].as_of_date.max(), valid_from)[1:-1]
    ]
    assert len(embargoed) == spec.horizon_days - 1
    gap_before = people_at(shared, spec, embargoed, labelled=True).sort_values(key)
    gap_after = people_at(settings, spec, embargoed, labelled=True).sort_values(key)
    assert (gap_before.label.to_numpy() != gap_after.label.to_numpy()).sum() > 20


@pytest.fixture(scope="module")
def churning(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """600 people over 36 days, of whom each day one in a hundred still visiting lapses for
    good (--plant-churn 0.01): the data set and a home with it built."""
    dataset = tmp_path_factory.mktemp("churning")
    generate(GeneratorConfig(users=600, days=36, seed=3, lapse_hazard=0.01), dataset)
    home = tmp_path_factory.mktemp("churning_home")
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    ingest_paths(settings, [dataset])
    transform(settings)
    return dataset, home


def test_churn_risk_sees_lapses_coming_about_as_well_as_the_generator_knew(
    churning: tuple[Path, Path], tmp_path: Path
) -> None:
    """churn_risk on planted lapses, on two test dates: close to the oracle (the generator's
    chance of a quiet week for each person, knowing who had lapsed) and not past it; then
    promoted and scored for the active people only."""
    from sklearn.metrics import roc_auc_score

    dataset, home = churning
    name = "churn_risk"
    settings = _settings(home, _spec_dir(tmp_path, "churn", name, training__test_dates=2))
    trained = train(settings, name)
    spec = load_spec(name, settings.ml_specs_dir)
    test = training_set(settings, spec).query("split == 'test'")
    with truth_connection(settings, dataset) as con:
        truth = con.execute("select * from truth_people").df()
    joined = test.merge(truth, on="person_id")  # people whose devices the truth keys apart
    assert len(joined) >= 0.97 * len(test) and joined.label.sum() > 200
    odds = pd.concat(
        pd.Series(true_no_session_probability(rows, day.date(), spec.horizon_days), rows.index)
        for day, rows in joined.groupby("as_of_date")
    ).reindex(joined.index)
    oracle = roc_auc_score(joined.label, odds)
    scorer = registry.load_scorer(settings, name, version=trained.version)
    model = roc_auc_score(joined.label, scorer.predict(scorer.inputs(joined)))
    assert 0.95 * oracle <= model <= oracle + 0.01, (model, oracle)
    assert model > trained.baseline_metrics["roc_auc"] - 0.01  # at least the logistic line's

    assert promote(settings, name).promoted
    written = score(settings, models=[name])
    [(lapsed_long_ago, scored, scored_inactive)] = query(
        settings,
        """select count(*) filter (where f.sessions_28d = 0), count(s.person_id),
                  count(s.person_id) filter (where f.sessions_28d = 0)
           from marts.fct_user_features_daily f left join marts.user_scores s
             on s.person_id = f.person_id and s.as_of_date = f.as_of_date
                and s.model_name = 'churn_risk'
           where f.as_of_date = (select max(as_of_date) from marts.user_scores)""",
    )
    assert written[name] == scored > 200
    assert lapsed_long_ago > 10 and scored_inactive == 0  # no session in 28 days: not scored


def test_too_little_data_stops_training(home: Path, tmp_path: Path) -> None:
    greedy = _settings(home, _spec_dir(tmp_path, "greedy", training__min_positives=10**6))
    client = registry.client(greedy)
    versions_before = len(client.search_model_versions(f"name = '{MODEL}'"))
    with pytest.raises(MicrosegError, match=r"not enough training data: .* no model was trained"):
        train(greedy, MODEL)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions_before


def test_only_a_missing_champion_means_none_a_registry_outage_fails_the_step(
    built: Settings, tmp_path: Path
) -> None:
    """An empty registry says 'no champion yet' and scoring skips; an unreachable one (a real
    MLflow client against a closed port) is a one-line error, so the nightly step fails and
    Airflow retries it instead of writing no scores."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(built.warehouse_path, home)
    empty = run_cli("score", home=home)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.startswith("no model has a champion yet")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outage = {
        "MICROSEG_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    for command, alias in (("score", "champion"), ("promote", "challenger")):
        failed = run_cli(command, "--model", MODEL, home=home, env=outage)
        assert failed.returncode == 1, failed.stdout
        [line] = failed.stderr.strip().splitlines()
        assert line.startswith(f"error: the MLflow registry failed looking up {MODEL}@{alias}: ")
        assert "Connection refused" in line
    failed = run_cli("score", home=home, env=outage)  # every model: the same, not "none yet"
    assert failed.returncode == 1 and "no model has a champion" not in failed.stdout


def test_fairness_groups_are_what_was_known_on_the_date(champion_home: Path):
    """A training or holdout row is audited by the device and country of the person's latest
    session before its as-of date and new/returning counted to that date, not by what
    dim_persons knows today: someone who switched devices later keeps the old one."""
    settings = Settings.from_env({"MICROSEG_HOME": str(champion_home)})
    spec = load_spec(MODEL, settings.ml_specs_dir)
    [(first,)] = query(settings, "select min(as_of_date) from marts.fct_user_features_daily")
    dates = [first + timedelta(days=3), first + timedelta(days=9)]  # new people, returning ones
    rows = people_at(settings, spec, dates, labelled=False)
    known = pd.DataFrame(
        query(
            settings,
            """select person_id, d.as_of_date,
                      arg_max(device_type, (session_start_at, session_id)),
                      arg_max(country, (session_start_at, session_id)),
                      case when d.as_of_date - min(session_start_at)::date <= 7
                           then 'new' else 'returning' end
               from marts.fct_sessions, (select unnest(?::date[]) as as_of_date) d
               where session_start_at < d.as_of_date group by person_id, d.as_of_date""",
            [dates],
        ),
        columns=["person_id", "as_of_date", *FAIRNESS_GROUPS],
    )
    audited = rows[["person_id", "as_of_date", *FAIRNESS_GROUPS]].astype({"as_of_date": object})
    audited["as_of_date"] = rows.as_of_date.dt.date
    merged = audited.merge(known, on=["person_id", "as_of_date"], suffixes=("", "_known"))
    assert len(merged) == len(rows) > 200
    for column in FAIRNESS_GROUPS:
        assert (merged[column] == merged[f"{column}_known"]).all(), column
    latest = dict(query(settings, "select person_id, latest_device_type from marts.dim_persons"))
    earlier = merged[merged.as_of_date == dates[0]]
    switched = earlier[earlier.person_id.map(latest) != earlier.device_type]
    assert len(switched) >= 5  # people whose newest device is another one: audited on the old
    assert set(merged.visitor_type) == {"new", "returning"}


def test_each_score_says_which_three_features_moved_it(champion_home: Path, tmp_path: Path):
    """user_scores.explanation: the three largest tree-SHAP contributions, with the person's
    feature values, on the calibrated log-odds (the trees' times the Platt slope): all of
    them and the bias, mapped through the calibration, add up to the score's log-odds."""
    env = champion_copy(champion_home, tmp_path / "home")
    settings = Settings.from_env(env)
    home = settings.home
    score(settings, models=[MODEL])
    rows = query(
        settings,
        "select person_id, as_of_date, score, explanation from marts.user_scores "
        "where model_name = ? order by person_id",
        [MODEL],
    )
    scorer = registry.load_scorer(settings, MODEL, registry.CHAMPION)
    slope, intercept = scorer.platt.slope, scorer.platt.intercept
    assert slope > 0 and (slope, intercept) != (1.0, 0.0)  # a fitted map, not the identity
    # a version registered before calibration (no `scoring` tag) still scores: uncalibrated,
    # at the threshold its run logged
    client = registry.client(settings)
    version = client.get_model_version(MODEL, scorer.version)
    client.delete_model_version_tag(MODEL, scorer.version, SCORING_TAG)
    older = registry.load_scorer(settings, MODEL, registry.CHAMPION)
    logged = float(client.get_run(version.run_id).data.params["activation_threshold"])
    assert (older.platt, older.threshold) == (Platt(), logged)
    client.set_model_version_tag(MODEL, scorer.version, SCORING_TAG, version.tags[SCORING_TAG])
    as_of = rows[0][1]
    people = people_at(settings, load_spec(MODEL, settings.ml_specs_dir), [as_of], labelled=False)
    inputs = scoring_inputs(scorer.booster, people.set_index("person_id").loc[[r[0] for r in rows]])
    raw = scorer.booster.predict(inputs, pred_contrib=True)
    for (person, _, value, explanation), contribution in zip(rows, raw, strict=True):
        items = json.loads(explanation)
        top = np.argsort(-np.abs(contribution[:-1]), kind="stable")[:3]
        assert [i["feature"] for i in items] == [inputs.columns[j] for j in top], person
        for item, j in zip(items, top, strict=True):
            assert item["contribution"] == pytest.approx(slope * contribution[j], abs=1e-5)
            feature = inputs.iat[inputs.index.get_loc(person), j]
            assert item["value"] == (None if pd.isna(feature) else pytest.approx(feature, abs=1e-6))
        log_odds = slope * contribution.sum() + intercept
        assert log_odds == pytest.approx(np.log(value / (1 - value)), abs=1e-6)
    csv = tmp_path / "hot.csv"
    assert run_cli("segments", "--as-of", str(as_of), home=home, env=env).returncode == 0
    exported = run_cli(
        "export", "--segment", "product_hesitators", "--as-of", str(as_of), "--min-score", "0",
        "--out", str(csv), home=home,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    header, first = csv.read_text().splitlines()[:2]
    assert header.endswith(",score,score_explanation")
    assert '""feature""' in first
    # and the abandoned-cart emails carry them (triggers.yml: payload score_explanations)
    activate(settings, as_of)
    sent = query(
        settings,
        """select o.payload, s.explanation from marts.activation_outbox o
           left join marts.user_scores s
             on s.person_id = o.person_id and s.as_of_date = ? and s.model_name = ?
           where o.trigger_name = 'cart_abandoned'""",
        [as_of, MODEL],
    )
    assert len(sent) >= 3
    for payload, why in sent:
        carried = json.loads(payload)["score_explanations"]
        assert carried == ({MODEL: json.loads(why)} if why else {})


def test_a_planted_shift_is_drift_and_stops_that_nights_scores(champion_home: Path, tmp_path):
    """marts.model_monitoring: PSI of every input and of the score against the training run's
    reference and the night before. Night over night the real inputs hardly move; an input
    broken on the next night (its values gone) is the one that moves, and with a fail level in
    the spec that night's scores are refused in one line, its monitoring rows kept."""
    env = champion_copy(champion_home, tmp_path / "home")
    settings = Settings.from_env(env)
    (latest,) = query(settings, "select max(as_of_date) from marts.fct_user_features_daily")[0]
    before, planted = latest - timedelta(days=2), latest - timedelta(days=1)
    score(settings, before, [MODEL])
    score(settings, planted, [MODEL])
    calm = dict(query(
        settings,
        "select subject, psi from marts.model_monitoring "
        "where as_of_date = ? and baseline = 'previous_night'",
        [planted],
    ))  # fmt: skip
    spec = load_spec(MODEL, settings.ml_specs_dir)
    assert set(calm) == {*spec.features, "score"} and max(calm.values()) < 0.1
    with duckdb.connect(str(settings.warehouse_path)) as con:  # scroll tracking broke
        con.execute(
            "update marts.fct_user_features_daily set avg_max_scroll_percent_28d = null "
            "where as_of_date = ?",
            [latest],
        )
    strict_specs = _spec_dir(tmp_path, "strict", monitoring={"fail_psi": 4.0})
    strict = Settings.from_env({**env, "MICROSEG_ML_SPECS_DIR": str(strict_specs)})
    with pytest.raises(DataQualityError) as refused:
        score(strict, latest, [MODEL])
    assert f"{MODEL} v1: " in str(refused.value)
    assert "most avg_max_scroll_percent_28d (PSI " in str(refused.value)
    assert "\n" not in str(refused.value)
    written = "select count(*) from marts.user_scores where as_of_date = ?"
    assert query(settings, written, [latest]) == [(0,)]
    night = {
        (subject, baseline): (psi, status)
        for subject, baseline, psi, status in query(
            settings,
            "select subject, baseline, psi, status from marts.model_monitoring "
            "where as_of_date = ?",
            [latest],
        )
    }
    planted_rows = [
        night[("avg_max_scroll_percent_28d", b)] for b in ("previous_night", "training")
    ]
    assert all(psi >= 4.0 and status == "fail" for psi, status in planted_rows)
    moved = {s for (s, b), (psi, _) in night.items() if b == "previous_night" and psi >= 0.1}
    assert moved - {"score"} == {"avg_max_scroll_percent_28d"}  # no other input moved
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert summaries(con, latest)[0].startswith(f"{MODEL} v1 drift against its training set")
    # with retrain_psi just above the calm night's worst drift against training, the planted
    # night (and only it) asks models_weekly to retrain, naming the input
    ((calm_worst,),) = query(
        settings,
        "select max(psi) from marts.model_monitoring where as_of_date = ? and baseline = ?",
        [planted, "training"],
    )
    level = round(calm_worst + 0.01, 3)
    assert level < night[("avg_max_scroll_percent_28d", "training")][0]
    retrain = Settings.from_env(
        {
            **env,
            "MICROSEG_ML_SPECS_DIR": str(
                _spec_dir(tmp_path, "retrain", monitoring={"retrain_psi": level})
            ),
        }
    )
    client = registry.client(retrain)
    if registry.RETRAIN_REQUEST_TAG in client.get_model_version(MODEL, "1").tags:
        # the copied registry may be the one the Airflow test's nights asked in
        client.delete_model_version_tag(MODEL, "1", registry.RETRAIN_REQUEST_TAG)
    with pytest.raises(NothingToRunError, match="no champion drifted past its retrain_psi"):
        request_retraining_step(retrain, planted)
    assert request_retraining_step(retrain, latest).startswith(
        f"retrain: {MODEL} v1 drifted past its retrain_psi {level:g} "
        "(avg_max_scroll_percent_28d: PSI "
    )
    # once per champion version: re-running the night asks nothing again
    with pytest.raises(NothingToRunError, match=f"already requested for {MODEL} v1"):
        request_retraining_step(retrain, latest)
    assert client.get_model_version(MODEL, "1").tags[registry.RETRAIN_REQUEST_TAG] == str(latest)


def test_segments_can_use_scores(champion_home: Path, tmp_path: Path) -> None:
    """Scores of the champion feed a score segment (on a private copy of the warehouse, so
    that no other test has to run first)."""
    env = champion_copy(champion_home, tmp_path / "home")
    home, registry_uri = Path(env["MICROSEG_HOME"]), env["MICROSEG_MLFLOW_TRACKING_URI"]
    scoring = Settings.from_env(env)
    assert score(scoring, models=[MODEL])[MODEL] > 100
    definitions = tmp_path / "segments.yml"
    rule = {"score": MODEL, ">=": 0.75, "as": "propensity"}
    segment = {"name": "likely_buyers", "description": "d", "owner": "o", "kind": "score"}
    segment["rule"] = rule
    definitions.write_text(yaml.safe_dump({"segments": [segment]}))
    settings = Settings.from_env(
        {
            "MICROSEG_HOME": str(home),
            "MICROSEG_SEGMENTS_FILE": str(definitions),
            "MICROSEG_MLFLOW_TRACKING_URI": registry_uri,
        }
    )
    (as_of,) = query(settings, "select max(as_of_date) from marts.user_scores")[0]
    sizes = run_segments(settings, as_of).members
    expected = query(
        settings,
        "select count(*) from marts.user_scores where as_of_date = ? and score >= 0.75",
        [as_of],
    )[0][0]
    assert sizes == {"likely_buyers": expected} and expected > 10
    assert query(settings, "select count(*) from marts.user_scores where decayed_score <> score")[
        0
    ] == (0,)  # no decay declared: the score to act on is the score

    # the same champion, its spec declaring a 2-day half-life: scores fade with recency
    specs = tmp_path / "specs"
    shutil.copytree(PROJECT_ROOT / "ml/specs", specs)
    spec = specs / f"{MODEL}.yaml"
    spec.write_text(spec.read_text() + "decay_half_life_days: 2\n")
    decaying = Settings.from_env(
        {
            "MICROSEG_HOME": str(home),
            "MICROSEG_SEGMENTS_FILE": str(definitions),
            "MICROSEG_MLFLOW_TRACKING_URI": registry_uri,
            "MICROSEG_ML_SPECS_DIR": str(specs),
        }
    )
    score(decaying, as_of, models=[MODEL])
    off = query(
        decaying,
        """select count(*), max(abs(s.decayed_score
                  - s.score * exp(-ln(2) * coalesce(f.days_since_last_session, 0) / 2)))
           from marts.user_scores s
           join marts.fct_user_features_daily f using (person_id, as_of_date)
           where s.as_of_date = ?""",
        [as_of],
    )[0]
    assert off[0] > 100 and off[1] < 1e-9
    faded = query(
        decaying,
        "select count(*) from marts.user_scores where as_of_date = ? and decayed_score >= 0.75",
        [as_of],
    )[0][0]
    assert run_segments(decaying, as_of).members == {"likely_buyers": faded} and faded < expected


def test_content_preference_is_a_multiclass_model_end_to_end(home: Path, tmp_path: Path) -> None:
    name = "content_preference"
    spec = yaml.safe_load((PROJECT_ROOT / "ml/specs" / f"{name}.yaml").read_text())
    spec["lightgbm"]["search"]["trials"] = 2
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    settings = _settings(home, folder)

    result = train(settings, name)
    m, b = result.metrics, result.baseline_metrics
    assert m["macro_f1"] > b["macro_f1"] and m["macro_f1"] > 0.5, (m, b)  # 8 categories
    assert m["top2_accuracy"] >= m["accuracy"]
    assert promote(settings, name).promoted
    written = score(settings, models=[name])
    rows = query(
        settings,
        "select predicted_class, score, model_version from marts.user_scores "
        "where model_name = ? and as_of_date = (select max(as_of_date) from marts.user_scores)",
        [name],
    )
    categories = {
        r[0]
        for r in query(
            settings, "select distinct content_category from marts.fct_person_category_daily"
        )
    }
    assert len(rows) == written[name] > 100
    assert {r[0] for r in rows} <= categories and all(0 < r[1] <= 1 for r in rows)

    spec["training"]["min_rows_per_class"] = 10**6
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(MicrosegError, match="0 categories have at least 1000000 training rows"):
        train(settings, name)


def test_an_own_table_in_the_warehouse_is_read_for_consenting_people_only(home: Path) -> None:
    """The README's example (docs/examples/session_purchase.yaml) on a built warehouse:
    sessions of people who refused scoring are not learned from; the audit reaches the
    fairness table beside the built-in models'."""
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    result = train_own(settings, PROJECT_ROOT / "docs" / "examples" / "session_purchase.yaml")
    [(sessions, consenting)] = query(
        settings,
        """select count(*), count(*) filter (
               where marts.has_consent(person_id, ?, session_start_at::date))
           from marts.fct_sessions""",
        [consent_policy().purpose_of["scores"]],
    )
    assert consenting < sessions
    assert sum(result.trained.rows.values()) == consenting
    assert "rows: people who consent to" in result.summary()
    audited = query(
        settings,
        "select distinct attribute from marts.model_fairness_audit "
        "where model_name = 'session_purchase'",
    )
    assert sorted(audited) == [("country",), ("device_type",)]
