from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import ModelSettings
from jobs.features import FEATURE_COLUMNS
from jobs.reasons import reason_text
from jobs.score import (
    CompiledForest,
    ReasonSettings,
    _local_path,
    _own_reasons,
    _reasons,
    _slices,
    check_agreement,
    compile_forest,
    load_forest,
    score_accounts,
    score_parquet,
)
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

FEATURE_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType()),
        T.StructField("farm_id", T.StringType()),
        T.StructField("component_id", T.StringType()),
    ]
    + [T.StructField(c, T.DoubleType()) for c in FEATURE_COLUMNS]
)
SETTINGS = ModelSettings(
    num_boost_round=60,
    early_stopping_rounds=10,
    cv_folds=3,
    candidates=[{}],
    params={
        "objective": "binary",
        "learning_rate": 0.2,
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "verbose": -1,
    },
)


def world(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Farms share cards with many accounts; everything else is noise."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.2).astype(int)
    feats = pd.DataFrame(rng.random((n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    feats["max_share_instrument"] = np.log1p(np.where(label == 1, rng.integers(5, 30, n), 1))
    feats["group_anomalous_families"] = np.where(label == 1, 5.0, 0.0)
    feats.insert(0, "component_id", [f"c{i % 50}" for i in range(n)])
    feats.insert(0, "farm_id", [f"farm_{i % 7}" if y else None for i, y in enumerate(label)])
    feats.insert(0, "account_id", [f"a{i:04d}" for i in range(n)])
    start = datetime(2026, 5, 1)
    labels = pd.DataFrame(
        {
            "account_id": feats["account_id"],
            "label": label,
            "labelled_at": [start + timedelta(hours=i) for i in range(n)],
            "source": "trust_review",
        }
    )
    return feats, labels


def spark_frames(spark, feats, labels):
    return (
        spark.createDataFrame(feats, FEATURE_SCHEMA),
        spark.createDataFrame(
            labels, "account_id string, label int, labelled_at timestamp, source string"
        ),
    )


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


def test_scoring_in_spark_matches_the_two_models(spark):
    feats, labels = world(300, seed=3)
    f, lab = spark_frames(spark, feats, labels)
    model = train(build_training_set(f, lab, 0.3), SETTINGS)
    reasons = ReasonSettings(top_n=2)
    scored = score_accounts(f, model, "7", reasons).toPandas().sort_values("account_id")
    own, expected = model.predict(feats.sort_values("account_id"))
    np.testing.assert_allclose(scored["score"].to_numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(scored["account_score"].to_numpy(), own, rtol=1e-9)
    assert set(scored["model_version"]) == {"7"}
    assert (scored["own_evidence"] == (scored["account_score"] >= 0.5)).all()
    top = scored.sort_values("score").iloc[-1]
    assert any(r.startswith("shares a payment card with") for r in top["reasons"])
    assert top["own_evidence"]  # the shared card is about the account itself
    with pytest.raises(ValueError, match="max_share_device"):
        score_accounts(f.drop("max_share_device"), model, "7")
    # accounts below the explanation floor are scored the same but carry no reasons
    floor = float(np.median(expected))
    partial = score_accounts(f, model, "7", ReasonSettings(2, floor)).toPandas()
    partial = partial.sort_values("account_id")
    np.testing.assert_allclose(partial["score"].to_numpy(), expected, rtol=1e-9)
    low = partial["score"] < floor
    assert low.any() and all(len(r) == 0 for r in partial.loc[low, "reasons"])
    assert list(partial.loc[~low, "reasons"].map(list)) == list(
        scored.loc[~low.to_numpy(), "reasons"].map(list)
    )


def test_scoring_from_parquet_files_equals_scoring_the_dataframe(spark, tmp_path):
    feats, labels = world(900, seed=8)
    f, lab = spark_frames(spark, feats, labels)
    model = train(build_training_set(f, lab, 0.3), SETTINGS)
    # nulls (missing to the model), a long column, several files and several row groups each
    holed = f.withColumn(
        "decline_rate",
        F.when(F.col("account_id").endswith("3"), None).otherwise(F.col("decline_rate")),
    ).withColumn("n_instruments", F.round(F.col("n_instruments") * 10).cast("long"))
    holed = holed.withColumn(
        "group_evidence",
        F.when(F.col("farm_id").isNotNull(), F.array(F.lit("its group does X"))).otherwise(
            F.array().cast("array<string>")
        ),
    )
    path = str(tmp_path / "features")
    holed.repartition(3).write.option("parquet.block.size", 4096).parquet(path)
    groups = [pq.ParquetFile(p).metadata.num_row_groups for p in Path(path).glob("*.parquet")]
    assert len(groups) == 3 and min(groups) > 1
    reasons = ReasonSettings(3, 0.3)
    from_files, way = score_parquet(spark, path, model, "7", reasons)
    assert way == "parquet"
    got = from_files.toPandas().sort_values("account_id", ignore_index=True)
    want = (
        score_accounts(spark.read.parquet(path), model, "7", reasons)
        .toPandas()
        .sort_values("account_id", ignore_index=True)
    )
    assert len(got) == 900 and got["account_id"].is_unique
    assert (got["score"].to_numpy() == want["score"].to_numpy()).all()  # the same bits
    assert got["reasons"].map(list).tolist() == want["reasons"].map(list).tolist()
    assert got.drop(columns="reasons").equals(want.drop(columns="reasons"))
    assert (got["score"] >= 0.3).any() and got["reasons"].map(len).gt(0).any()
    # LightGBM's own trees give the same scores (to rounding) and the same reasons
    plain, _ = score_parquet(spark, path, model, "7", reasons, evaluator="lightgbm")
    plain = plain.toPandas().sort_values("account_id", ignore_index=True)
    np.testing.assert_allclose(plain["score"], got["score"], rtol=0, atol=1e-12)
    assert plain["reasons"].map(list).tolist() == got["reasons"].map(list).tolist()
    # row groups cut into slices of at most 70 rows, one per task: the same rows, once each
    files = [str(p) for p in Path(path).glob("*.parquet")]
    assert len(_slices(files, 70)) > sum(groups)  # some row group is cut
    sliced, _ = score_parquet(spark, path, model, "7", reasons, max_rows_per_task=70)
    sliced = sliced.toPandas().sort_values("account_id", ignore_index=True)
    assert sliced["account_id"].is_unique
    assert sliced.drop(columns="reasons").equals(got.drop(columns="reasons"))
    f.drop("max_share_device").write.parquet(str(tmp_path / "no_device"))
    with pytest.raises(ValueError, match="max_share_device"):
        score_parquet(spark, str(tmp_path / "no_device"), model, "7")
    with pytest.raises(ValueError, match="unknown evaluator"):
        score_parquet(spark, path, model, "7", evaluator="xgboost")


def test_only_local_files_are_read_by_the_executors():
    assert _local_path("file:///tmp/run/features/part-0.parquet") == (
        "/tmp/run/features/part-0.parquet"
    )
    assert _local_path("file:/tmp/a%20b/part-0.parquet") == "/tmp/a b/part-0.parquet"
    assert _local_path("s3a://bucket/runs/features/part-0.parquet") is None
    assert _local_path("hdfs://nn/runs/features/part-0.parquet") is None


def test_the_compiled_forest_predicts_what_lightgbm_predicts_and_is_rebuilt_for_another_cpu():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4000, 12))
    x[rng.random(x.shape) < 0.15] = np.nan  # trees learn where missing values go
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 3]) * np.isnan(x[:, 5]) > 0.4).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1},
        lgb.Dataset(x, y),
        num_boost_round=80,
    )
    probe = rng.normal(size=(3000, 12))
    probe[rng.random(probe.shape) < 0.3] = np.nan
    probe[:5] = np.nan  # rows with nothing known
    expected = booster.predict(probe)
    forest = compile_forest(booster)
    got = load_forest(forest).predict(probe, n_jobs=1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    check_agreement(booster, probe, got)
    with pytest.raises(RuntimeError, match="differ from LightGBM's"):
        check_agreement(booster, probe, got + 1e-6)
    # code compiled for another CPU is never run: the worker compiles the model again
    foreign = CompiledForest(forest.model_text, b"not machine code", "some-other-cpu;+avx9")
    rebuilt = load_forest(foreign).predict(probe, n_jobs=1)
    np.testing.assert_allclose(rebuilt, expected, rtol=0, atol=1e-12)


def test_every_feature_has_a_readable_reason_against_normal():
    fallback = [c for c in FEATURE_COLUMNS if reason_text(c, 1.0) == f"{c} = 1"]
    assert fallback == []
    reference = {"decline_rate": [0.0, 0.0, 0.04], "account_age_days": [2.0, 270.0, 530.0]}
    assert reason_text("decline_rate", 0.17, reference) == (
        "17% of its payment attempts were declined (99% of accounts: at most 4%)"
    )
    assert reason_text("account_age_days", 12.4, reference) == (
        "its account is 12 days old (median account: 270 days)"
    )
    assert reason_text("nbr1_mean_decline_rate", 0.42, reference) == (
        "average payment decline rate of its directly linked accounts: 42% "
        "(99% of accounts: at most 4%)"
    )
    assert reason_text("nbr2_count", 212) == "has 212 accounts within two links"
    assert reason_text("nbr2_std_no_such_feature", 1.0) == "nbr2_std_no_such_feature = 1"
    row = {"group_anomalous_families": 5.0}
    assert reason_text("group_anomalous_families", 5.0, row=row) == (
        "its group is unlike random groups of its size in 5 of 7 kinds of behaviour"
    )
    assert reason_text("group_anomaly", 40.0, evidence=["its 500 accounts do X"]) == (
        "its 500 accounts do X"
    )
    assert reason_text("group_anomaly", 0.0) == ""  # no anomaly, no group reason


def test_own_reasons_put_unusual_values_first_and_never_repeat():
    names = ["decline_rate", "max_share_bin_postcode", "max_share_device"]
    values = np.array([0.17, np.log1p(27.0), np.log1p(3.0)])
    reference = {
        "decline_rate": [0.0, 0.0, 0.04],
        "max_share_bin_postcode": [0.0, np.log1p(3.0), np.log1p(74.0)],
        "max_share_device": [0.0, np.log1p(1.0), np.log1p(2.0)],
    }
    settings = ReasonSettings(top_n=3, reference=reference)
    contrib = np.array([0.1, 2.0, 0.5])  # the BIN sharing counts most but is ordinary
    texts = _own_reasons(names, values, contrib, settings)
    assert texts == [
        "shares a device fingerprint with 2 other accounts (99% of accounts: at most 1)",
        "17% of its payment attempts were declined (99% of accounts: at most 4%)",
        "shares a card BIN and billing postcode with 26 other accounts "
        "(99% of accounts: at most 73)",
    ]
    assert _own_reasons(names, values, np.array([-1.0, 0.0, -0.2]), settings) == []


def test_combined_reasons_cite_the_account_and_its_group_in_rank_order():
    names = ["account_score", "group_anomalous_families", "group_anomaly", "community_known_bad"]
    values = np.array([0.97, 6.0, 40.0, 2.0])
    own = ["own reason 1", "own reason 2", "own reason 3"]
    evidence = ["group sentence 1", "group sentence 2", "group sentence 3"]
    settings = ReasonSettings(top_n=4)
    contrib = np.array([1.0, 0.5, 3.0, -0.2])
    picked = _reasons(names, values, contrib, own, evidence, settings)
    assert picked == [
        "group sentence 1",
        "group sentence 2",
        "own reason 1",
        "own reason 2",
    ]
    # duplicates collapse; a group that is not anomalous says nothing
    quiet = np.array([0.97, 0.0, 0.0, 2.0])
    picked = _reasons(names, quiet, np.array([1.0, 0.5, 0.4, 0.3]), own, [], settings)
    assert picked == [
        "own reason 1",
        "own reason 2",
        "2 other accounts of its group are confirmed farm accounts",
    ]
