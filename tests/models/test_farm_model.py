from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from jobs.core.config import ModelSettings
from models.farm_model import (
    ACCOUNT_MODEL_FEATURES,
    COMBINED_MODEL_FEATURES,
    ModelUnavailableError,
    build_training_set,
    fit_grouped,
    grouped_folds,
    recall_at_precision,
    train,
)
from models.registry import load_champion, rollback_champion, train_and_register
from tests.model_tables import SETTINGS, spark_frames, world


def test_recall_at_precision_by_hand():
    y = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.4, 0.5, 0.1])
    assert recall_at_precision(y, scores, 0.99) == 0.5
    assert recall_at_precision(y, scores, 0.6) == 1.0


def test_time_split_and_validation(spark):
    feats, labels = world()
    f, lab = spark_frames(spark, feats, labels)
    split = build_training_set(f, lab, 0.3)
    assert split.train["labelled_at"].max() <= split.cutoff < split.test["labelled_at"].min()
    assert split.fingerprint["rows_test"] == len(split.test)
    assert split.fingerprint["farms_with_positives_train"] == 7
    assert len(split.train) + len(split.test) == len(feats)
    with pytest.raises(ValueError, match="missing column"):
        build_training_set(f.drop("decline_rate"), lab, 0.3)
    only_legit = spark_frames(spark, feats, labels.assign(label=0))[1]
    with pytest.raises(ValueError, match="only one class"):
        build_training_set(f, only_legit, 0.3)


@pytest.mark.parametrize("session_zone", ["UTC", "America/New_York"])
def test_known_bad_features_only_count_labels_before_the_cut_off(spark, session_zone):
    # 600 hourly labels, 30% held out: the cut-off is 419h18m after the first label, so a0419
    # is labelled 18 minutes before it and a0420 42 minutes after it.
    feats, labels = world()
    farm = ["a0300", "a0419", "a0420", "a0595"]
    labels.loc[labels["account_id"].isin(farm), "label"] = [0, 1, 1, 0]
    # what the features stage wrote: every label before the run's end counts (a0300 and a0595
    # see both farm labels)
    run_end = {"a0300": 2.0, "a0419": 1.0, "a0420": 1.0, "a0595": 2.0}
    feats["community_known_bad"] = feats["account_id"].map(run_end).fillna(0.0)
    feats["community_known_bad_share"] = feats["community_known_bad"] / 3
    previous_zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", session_zone)
    try:
        f, lab = spark_frames(spark, feats, labels)
        communities = spark.createDataFrame(
            [(a, "a0300") for a in farm] + [("a0001", "a0001")],
            "account_id string, community_id string",
        )
        split = build_training_set(f, lab, 0.3, communities)
        stale = build_training_set(f, lab, 0.3)
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous_zone)
    assert split.cutoff == pd.Timestamp("2026-05-01") + pd.Timedelta(hours=419, minutes=18)
    rows = pd.concat([split.train, split.test]).set_index("account_id")
    assert set(split.test["account_id"]) >= {"a0420", "a0595"}
    # a0420's label (after the cut-off) counts for nobody; a0419's (before it) counts for the
    # other members, in training and in the holdout alike
    as_of_cutoff = {"a0300": 1.0, "a0419": 0.0, "a0420": 1.0, "a0595": 1.0}
    assert rows.loc[farm, "community_known_bad"].to_dict() == as_of_cutoff
    assert rows.loc[farm, "community_known_bad_share"].to_dict() == pytest.approx(
        {a: v / 3 for a, v in as_of_cutoff.items()}
    )
    others = rows.drop(index=farm)
    assert (others[["community_known_bad", "community_known_bad_share"]] == 0.0).all().all()
    assert split.fingerprint["known_bad_as_of"] == str(split.cutoff)
    assert len(split.train) + len(split.test) == len(feats)
    # without the communities table the features table's values stay (and the leak with them)
    stale_rows = pd.concat([stale.train, stale.test]).set_index("account_id")
    assert stale_rows.loc[farm, "community_known_bad"].to_dict() == run_end
    assert stale.fingerprint["known_bad_as_of"] is None


def test_registry_lifecycle_on_a_tracking_server(spark, tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    feats, labels = world()
    f, lab = spark_frames(spark, feats, labels)
    good = build_training_set(f, lab, 0.3)
    bad = good.__class__(
        good.train.assign(label=np.random.default_rng(1).permutation(good.train["label"])),
        good.test,
        good.cutoff,
        good.fingerprint,
    )
    uri = mlflow_server.url
    first = train_and_register(bad, SETTINGS, uri, 0.9)  # no champion yet: promoted
    assert (first["version"], first["promoted"]) == ("1", True)
    second = train_and_register(good, SETTINGS, uri, 0.9)  # better on the same holdout
    assert (second["version"], second["promoted"]) == ("2", True)
    assert second["champion_auprc"] == pytest.approx(first["metrics"]["auprc"])
    assert second["metrics"]["auroc"] > 0.95
    third = train_and_register(bad, SETTINGS, uri, 0.9)  # worse: registered, not promoted
    assert (third["version"], third["promoted"]) == ("3", False)
    assert third["champion_version"] == "2"

    client = MlflowClient(uri)
    assert client.get_model_version_by_alias(SETTINGS.registered_model, "challenger").version == "3"
    artifacts = client.list_artifacts(second["run_id"])
    assert {
        "promotion_decision.json",
        "feature_list.json",
        "dataset_fingerprint.json",
        "training_report.json",
        "account_model.txt",
    } <= {a.path for a in artifacts}
    metrics = client.get_run(second["run_id"]).data.metrics
    assert 0 < metrics["combined_max_gain_share"] <= 1 and "account_cv_auprc" in metrics
    model, version = load_champion(SETTINGS, uri)
    assert version == "2" and model.combined.num_trees() > 0
    assert list(model.account.feature_name()) == list(ACCOUNT_MODEL_FEATURES)
    with pytest.raises(ModelUnavailableError, match="no champion"):
        load_champion(ModelSettings(registered_model="nobody"), uri)

    assert rollback_champion(SETTINGS, uri) == ("2", "1")  # back to what 2 replaced
    assert load_champion(SETTINGS, uri)[1] == "1"
    with pytest.raises(ModelUnavailableError, match="replaced no earlier champion"):
        rollback_champion(SETTINGS, uri)
    assert rollback_champion(SETTINGS, uri, "2") == ("1", "2")
    with pytest.raises(ModelUnavailableError, match="no version 9"):
        rollback_champion(SETTINGS, uri, "9")

    mlflow_server.stop()
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        load_champion(SETTINGS, uri)


def test_sqlite_registry_keeps_artifacts_where_told(spark, tmp_path):
    feats, labels = world(300, seed=5)
    f, lab = spark_frames(spark, feats, labels)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "artifacts").as_uri()
    result = train_and_register(
        build_training_set(f, lab, 0.3), SETTINGS, uri, 0.9, artifact_location=artifacts
    )
    assert result["promoted"] is True
    assert any((tmp_path / "artifacts").rglob("MLmodel")), "artifacts not under the given root"
    assert load_champion(SETTINGS, uri)[1] == "1"


def test_grouped_folds_keep_every_farm_on_one_side():
    y = np.array([1] * 12 + [0] * 30)
    groups = np.array([f"farm{i % 4}" for i in range(12)] + [f"acct{i}" for i in range(30)])
    folds, grouping = grouped_folds(y, groups, 5, seed=1)
    assert grouping == "farm" and len(folds) == 4  # one fold per labelled farm at most
    for train_idx, valid_idx in folds:
        assert not set(groups[train_idx]) & set(groups[valid_idx])
    one_farm = np.array(["farm0"] * 12 + [f"acct{i}" for i in range(30)])
    assert grouped_folds(y, one_farm, 5, seed=1)[1] == "account"  # nothing to group by
    with pytest.raises(ValueError, match="at least two labelled farm accounts"):
        grouped_folds(np.array([1] + [0] * 10), np.arange(11).astype(str), 5, seed=1)


def test_memorising_an_operator_scores_badly_on_grouped_folds():
    """A feature that only names the operator (a code per farm) separates every training farm
    but says nothing about a farm it has not seen: farm-grouped folds show it, plain folds
    do not."""
    rng = np.random.default_rng(2)
    farms = np.repeat(np.arange(6), 40)
    legit = 1200
    code = np.concatenate([farms * 10.0 + 5.0, rng.uniform(0, 60, legit)])
    y = np.concatenate([np.ones(len(farms)), np.zeros(legit)]).astype(int)
    x = pd.DataFrame({"operator_code": code})
    groups = np.concatenate([[f"farm{f}" for f in farms], [f"a{i}" for i in range(legit)]])
    settings = SETTINGS.model_copy(update={"monotone": {}, "cv_folds": 5})
    _, grouped_oof, report = fit_grouped(x, y, groups, settings)
    _, plain_oof, plain = fit_grouped(x, y, np.arange(len(y)).astype(str), settings)
    assert report["grouping"] == "farm" and plain["grouping"] == "farm"
    assert plain["cv_auprc"] > 0.9  # every farm was in some training fold
    assert report["cv_auprc"] < 0.5  # no farm was: the code is worth nothing


def test_monotone_features_never_lower_the_score():
    feats, labels = world(600, seed=4)
    frame = feats.merge(labels, on="account_id")
    model = train(_as_training(frame), SETTINGS)
    probe = frame.head(50).copy()
    lower = model.account.predict(probe[list(ACCOUNT_MODEL_FEATURES)])
    probe["max_share_instrument"] += 1.0  # shares its card with more accounts
    higher = model.account.predict(probe[list(ACCOUNT_MODEL_FEATURES)])
    assert (higher >= lower - 1e-12).all()
    assert list(model.combined.feature_name()) == list(COMBINED_MODEL_FEATURES)
    assert model.report["combined"]["max_gain_share"]["share"] > 0


def _as_training(frame: pd.DataFrame):
    from models.farm_model import TrainingSet

    return TrainingSet(frame, frame, pd.Timestamp("2026-05-01"), {})
