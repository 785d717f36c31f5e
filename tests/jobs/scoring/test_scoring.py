"""Scoring in Spark with the two models, the compiled forest, and the reasons."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.features.table import FEATURE_COLUMNS
from jobs.scoring.explain import ReasonSettings, _own_reasons, _reasons
from jobs.scoring.forest import CompiledForest, check_agreement, compile_forest, load_forest
from jobs.scoring.reasons import reason_text
from jobs.scoring.score import _local_path, _slices, score_accounts, score_parquet
from models.farm_model import build_training_set, train
from tests.model_tables import SETTINGS, spark_frames, world


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
    assert (scored["own_evidence"] == (scored["account_score"] >= reasons.own_min_score)).all()
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
