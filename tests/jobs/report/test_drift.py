"""Drift and adversary watch: PSI, farms lost since last night, farm age, the alerts.

The two-night test draws per-account feature and score tables the way a world of legitimate
accounts and three farm operators looks to the model (fixed seeds, fresh draws each night, so an
unchanged world still has sampling noise). On the second night of the changed world one operator
adapts: its accounts blend into ordinary behaviour, their scores fall under the ban band and its
farm drops off the list. The alert must fire for that world and stay quiet for the unchanged one.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.core.sections import ReportSettings
from jobs.report.drift import (
    PROFILE_PROBABILITIES,
    bans_by_farm_age,
    farm_age_days,
    farm_loss,
    judge_drift,
    psi,
    quantile_profile,
)

FEATURES = ("requests_per_day", "hour_entropy", "max_share_instrument")
OPERATORS = {"op_a": 120, "op_b": 80, "op_c": 60}
LEGIT = 2_700


def _night(seed: int, adapted: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One night's per-account features and ban list (``adapted``: an operator that blended in)."""
    rng = np.random.default_rng(seed)
    rows = []
    legit = pd.DataFrame(
        {
            "account_id": [f"u{i:05d}" for i in range(LEGIT)],
            "farm_id": None,
            "requests_per_day": rng.lognormal(1.5, 0.8, LEGIT),
            "hour_entropy": rng.uniform(1.0, 3.0, LEGIT),
            "max_share_instrument": rng.poisson(0.3, LEGIT).astype(float),
            "score": rng.beta(1, 30, LEGIT),
        }
    )
    rows.append(legit)
    for operator, size in OPERATORS.items():
        blended = operator == adapted
        rows.append(
            pd.DataFrame(
                {
                    "account_id": [f"{operator}-{i:04d}" for i in range(size)],
                    "farm_id": f"farm-{operator}",
                    "requests_per_day": (
                        rng.lognormal(1.5, 0.8, size) if blended else rng.normal(26, 3, size)
                    ),
                    "hour_entropy": (
                        rng.uniform(1.0, 3.0, size) if blended else rng.uniform(0.1, 0.4, size)
                    ),
                    "max_share_instrument": (
                        rng.poisson(0.3, size).astype(float)
                        if blended
                        else rng.poisson(8, size).astype(float)
                    ),
                    "score": rng.beta(2, 20, size) if blended else rng.beta(40, 1, size),
                }
            )
        )
    accounts = pd.concat(rows, ignore_index=True)
    band = np.select(
        [accounts["score"] >= 0.9, accounts["score"] >= 0.6, accounts["score"] >= 0.3],
        ["ban", "review", "watch"],
        default="",
    )
    banlist = accounts.assign(action=band)[band != ""][["account_id", "farm_id", "action"]]
    return accounts, banlist


def _profile(spark, accounts: pd.DataFrame, run_id: str) -> dict:
    frame = spark.createDataFrame(accounts[[*FEATURES, "score"]])
    quantiles = quantile_profile(frame, [*FEATURES, "score"], 0.001)
    return {"run_id": run_id, "score": quantiles.pop("score"), "features": quantiles}


def _judge(spark, first: int, second: int, adapted: str | None) -> dict:
    settings = ReportSettings()
    night1, list1 = _night(first)
    night2, list2 = _night(second, adapted)
    profile1 = _profile(spark, night1, "night1")
    profile2 = _profile(spark, night2, "night2")
    loss = farm_loss(list1, list2, settings.farm_shrink_ratio)
    return judge_drift(profile2, [profile1], loss, settings)


def test_an_operator_that_changes_tactics_raises_the_alert(spark):
    drift = _judge(spark, 11, 12, adapted="op_a")
    assert drift["farms"] == {"banned_before": 3, "vanished": 1, "shrank": 0, "share_lost": 0.3333}
    assert any("vanished" in alert for alert in drift["alerts"]), drift["alerts"]
    assert drift["compared_runs"] == ["night1"]


def test_two_nights_of_an_unchanged_world_raise_nothing(spark):
    drift = _judge(spark, 11, 12, adapted=None)
    assert drift["alerts"] == []
    assert drift["farms"]["vanished"] == drift["farms"]["shrank"] == 0
    assert max(drift["features"].values()) < 0.1
    assert drift["score_psi"] < 0.1


def test_a_shifted_feature_and_score_raise_their_own_alerts(spark):
    night, _ = _night(11)
    shifted = night.assign(
        requests_per_day=night["requests_per_day"] * 4, score=night["score"] ** 0.2
    )
    drift = judge_drift(
        _profile(spark, shifted, "now"),
        [_profile(spark, night, "before")],
        farm_loss(None, shifted.assign(action="ban"), 0.5),
        ReportSettings(),
    )
    assert next(iter(drift["features"])) == "requests_per_day"
    assert drift["features"]["requests_per_day"] > 0.25
    assert drift["features"]["hour_entropy"] == 0.0
    assert [a.split(" ")[0] for a in drift["alerts"]] == ["1", "the"]


def test_the_profile_is_sparks_approx_quantile_without_nulls_and_nan(spark):
    rng = np.random.default_rng(7)
    values = rng.lognormal(size=5_000)
    values[rng.random(5_000) < 0.1] = np.nan  # NaN, and below nulls: both left out
    frame = spark.createDataFrame(
        pd.DataFrame({"x": values, "n": pd.array(rng.integers(0, 9, 5_000), "Int64")})
    ).withColumn("n", F.when(F.col("n") > 6, None).otherwise(F.col("n")))
    for error in (0.001, 0.05, 0.0):
        profile = quantile_profile(frame, ["x", "n"], error)
        expected = frame.approxQuantile(["x", "n"], list(PROFILE_PROBABILITIES), error)
        assert [profile["x"], profile["n"]] == expected, error
    exact = quantile_profile(frame, ["x"], 0.0)["x"]
    kept = np.sort(values[~np.isnan(values)])
    assert exact[0] == kept[0] and exact[-1] == kept[-1] and exact[50] in kept
    empty = quantile_profile(frame.where("x < 0"), ["x"], 0.001)
    assert empty == {"x": []}


def test_psi_is_zero_for_the_same_profile_and_handles_ties():
    values = np.r_[np.zeros(900), np.arange(1, 101)]
    profile = np.quantile(values, PROFILE_PROBABILITIES).tolist()
    assert psi(profile, [profile, profile]) == pytest.approx(0.0)
    moved = np.quantile(np.r_[np.zeros(500), np.arange(1, 501)], PROFILE_PROBABILITIES)
    assert psi(moved.tolist(), [profile]) > 0.25
    assert psi([], [profile]) == 0.0 and psi(profile, []) == 0.0


def test_farm_loss_tells_kept_shrunk_and_vanished_farms_by_account():
    previous = pd.DataFrame(
        {
            "account_id": ["a1", "a2", "b1", "b2", "b3", "c1", "c2", "d1"],
            "farm_id": ["A", "A", "B", "B", "B", "C", "C", None],
            "action": ["ban"] * 7 + ["ban"],
        }
    )
    current = pd.DataFrame(  # A kept under another farm id; B down to one of three; C gone
        {"account_id": ["a1", "a2", "b1", "c1"], "action": ["ban", "ban", "ban", "review"]}
    )
    loss = farm_loss(previous, current, shrink_ratio=0.5)
    assert loss.to_dict(orient="list") == {
        "farm_id": ["B", "A", "C"],
        "banned_before": [3, 2, 2],
        "still_banned": [1, 2, 0],
        "status": ["shrank", "kept", "vanished"],
    }
    assert farm_loss(None, current, 0.5).empty


def test_farm_age_is_days_since_the_earliest_member_signup(spark):
    signups = spark.createDataFrame(
        [
            ("a1", "2026-05-01 10:00:00"),
            ("a2", "2026-05-20 00:00:00"),
            ("b1", "2026-06-04 23:00:00"),
        ],
        "account_id string, signup_ts string",
    ).selectExpr("account_id", "cast(signup_ts as timestamp) as signup_ts")
    communities = spark.createDataFrame(
        [("a1", "A"), ("a2", "A"), ("b1", "B"), ("x", None)], "account_id string, farm_id string"
    )
    ages = farm_age_days(signups, communities, date(2026, 6, 5)).toPandas()
    assert dict(zip(ages["farm_id"], ages["farm_age_days"], strict=True)) == {"A": 35, "B": 1}
    banlist = pd.DataFrame(
        {"account_id": ["a1", "a2", "b1"], "farm_id": ["A", "A", "B"], "action": ["ban"] * 3}
    )
    by_age = bans_by_farm_age(banlist, ages)
    assert by_age.to_dict(orient="list") == {
        "band": ["< 7 days", "7-29 days", "30-89 days", ">= 90 days"],
        "farms": [1, 0, 1, 0],
        "banned": [1, 0, 2, 0],
    }


def test_farm_age_names_the_missing_column(spark):
    signups = spark.createDataFrame([("a1",)], "account_id string")
    communities = spark.createDataFrame([("a1", "A")], "account_id string, farm_id string")
    with pytest.raises(ValueError, match="signup_ts"):
        farm_age_days(signups, communities, date(2026, 6, 5))
