from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import AnomalySettings
from jobs.features.anomaly import (
    GROUP_ANOMALY_FEATURES,
    fit_reference,
    group_anomaly,
    member_features,
    score_groups,
)
from jobs.features.group_signals import FAMILIES, SIGNAL_NAMES, group_signals, random_groups

PROFILE = (
    "account_id string, modal_mask int, signup_week long, young int, requests_cv double, "
    "active_share double, ips_per_day double, decline_rate double, virtual_card_share double"
)
ENTITIES = "account_id string, entity_type string, entity_id string"
STATS = "entity_type string, entity_id string, degree long, is_hub boolean"


def test_group_signals_by_hand(spark):
    profile = spark.createDataFrame(
        [
            ("f1", 255, 100, 1, 0.1, 0.9, 2.0, 0.2, 1.0),
            ("f2", 255, 100, 1, 0.2, 0.8, 1.0, 0.0, 1.0),
            ("f3", 7, 101, 0, 0.3, 0.7, 3.0, 0.1, 0.0),
            ("x1", 7, 50, 0, 1.0, 0.1, 0.5, 0.0, 0.0),
        ],
        PROFILE,
    )
    members = spark.createDataFrame(
        [("f1", "g"), ("f2", "g"), ("f3", "g"), ("x1", "h")], "account_id string, group_id string"
    )
    entities = spark.createDataFrame(
        [
            ("f1", "prompt", "t1"),
            ("f2", "prompt", "t1"),
            ("f3", "prompt", "t2"),  # alone in the group: not exclusive
            ("x1", "prompt", "t2"),
            ("f1", "device", "d1"),
            ("f2", "device", "d1"),
            ("x1", "device", "d1"),
            ("f3", "device", "d1"),  # d1: 3 of its 4 accounts are in g, exclusive
            ("f1", "instrument", "hub"),
            ("f2", "instrument", "hub"),
        ],
        ENTITIES,
    )
    stats = spark.createDataFrame(
        [
            ("prompt", "t1", 2, False),
            ("prompt", "t2", 2, False),
            ("device", "d1", 4, False),
            ("instrument", "hub", 2, True),  # hubs never count
        ],
        STATS,
    )
    rows = {
        r["group_id"]: r for r in group_signals(members, profile, entities, stats, 0.5).collect()
    }
    g = rows["g"]
    assert g["size"] == 3
    assert g["schedule_sync"] == pytest.approx(2 / 3) and g["schedule_hours"] == 8
    assert g["signup_week_share"] == pytest.approx(2 / 3)
    assert g["young_share"] == pytest.approx(2 / 3)
    assert g["median_requests_cv"] == pytest.approx(0.2)
    assert g["median_active_share"] == pytest.approx(0.8)
    assert g["median_ips_per_day"] == pytest.approx(2.0)
    assert g["mean_decline_rate"] == pytest.approx(0.1, abs=1e-6)
    assert g["mean_virtual_card_share"] == pytest.approx(2 / 3, abs=1e-6)
    assert g["exclusive_prompt"] == pytest.approx(2 / 3)
    assert g["exclusive_device"] == pytest.approx(1.0)
    assert g["exclusive_instrument"] == 0.0
    assert rows["h"]["exclusive_device"] == 0.0  # x1 alone in h


def test_group_signals_name_what_is_missing(spark):
    empty = spark.createDataFrame([], "account_id string")
    with pytest.raises(ValueError, match="members is missing column 'group_id'"):
        group_signals(empty, empty, empty, empty, 0.5)


def test_random_groups_are_seeded_sized_and_never_repeat_an_account(spark):
    accounts = spark.range(3000).selectExpr("concat('a', cast(id as string)) as account_id")
    settings = AnomalySettings(random_groups=20, min_random_groups=5, random_group_budget=400)
    drawn = random_groups(accounts, [3, 6, 11], 3000, settings)
    again = random_groups(accounts, [3, 6, 11], 3000, settings)
    assertDataFrameEqual(drawn, again)  # the same groups every time
    frame = drawn.toPandas()
    sizes = frame.groupby(["size_bin", "group_id"]).size()
    # bin 3: 20 groups of about 8; bin 6: budget 400 -> 6 groups of about 64; bin 11: at least
    # 5 groups of about 2048 (more than the accounts: drawn again in further rounds)
    assert sizes.loc[3].size == 20 and 4 <= sizes.loc[3].mean() <= 12
    assert sizes.loc[6].size == 6 and 50 <= sizes.loc[6].mean() <= 80
    assert sizes.loc[11].size == 5 and 1800 <= sizes.loc[11].mean() <= 2300
    assert not frame.duplicated(["group_id", "account_id"]).any()
    other = random_groups(accounts, [3], 3000, AnomalySettings(seed=8, random_groups=20))
    assert set(other.toPandas()["account_id"]) != set(frame[frame["size_bin"] == 3]["account_id"])


def _signals(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for name in SIGNAL_NAMES:
        if name not in frame:
            frame[name] = 0.0
    return frame


def test_z_scores_against_random_groups_and_the_sentences():
    rng = np.random.default_rng(0)
    random_part = _signals(
        [
            {"size_bin": 5, "schedule_sync": v, "median_requests_cv": c}
            for v, c in zip(rng.uniform(0.02, 0.06, 200), rng.uniform(0.5, 0.7, 200), strict=True)
        ]
    )
    reference = fit_reference(random_part)
    p50, p99 = reference.loc[(5, "schedule_sync"), ["p50", "p99"]]
    settings = AnomalySettings()
    groups = _signals(
        [
            {
                "group_id": "farm",
                "size": 40,
                "schedule_hours": 10,
                "schedule_sync": 0.9,
                "median_requests_cv": 0.1,
            },
            {
                "group_id": "office",
                "size": 40,
                "schedule_hours": 8,
                "schedule_sync": 0.05,
                "median_requests_cv": 0.8,
            },
        ]
    )
    scored = score_groups(groups, reference, settings).set_index("group_id")
    expected = min((0.9 - p50) / max(p99 - p50, settings.min_spread), settings.z_cap)
    assert scored.loc["farm", "z_schedule_sync"] == pytest.approx(expected)
    assert scored.loc["farm", "z_median_requests_cv"] > settings.z_anomalous  # low is farm-like
    assert scored.loc["office", "z_median_requests_cv"] == 0.0  # high is no evidence at all
    assert scored.loc["farm", "group_anomalous_families"] == 2.0  # timing and volume
    assert scored.loc["office", "group_anomalous_families"] == 0.0
    assert scored.loc["farm", "group_z_timing"] == scored.loc["farm", "z_schedule_sync"]
    evidence = scored.loc["farm", "evidence"]
    assert evidence[0].startswith("90% of its 40 accounts keep one identical 10-hour daily")
    assert "random groups of 32 accounts: at most" in evidence[0]
    assert set(scored.loc["farm", "family_evidence"]) == {"timing", "volume"}
    assert scored.loc["office", "evidence"] == []


def test_groups_larger_than_any_reference_use_the_largest_bin():
    reference = fit_reference(_signals([{"size_bin": 2, "schedule_sync": 0.5}] * 3))
    groups = _signals([{"group_id": "g", "size": 5000, "schedule_hours": 1}])
    assert score_groups(groups, reference, AnomalySettings())["size_bin"].tolist() == [2]


def _ordinary(rng: np.random.Generator, account: str) -> tuple:
    return (
        account,
        int(rng.integers(0, 400)),  # many different daily schedules
        int(rng.integers(2000, 2080)),  # signed up over 80 weeks
        int(rng.random() < 0.15),
        float(rng.uniform(0.4, 1.4)),
        float(rng.uniform(0.02, 0.3)),
        float(rng.uniform(0.1, 1.0)),
        float(rng.random() < 0.03),
        float(rng.random() < 0.05),
    )


def test_a_planted_farm_is_anomalous_and_an_office_is_not(spark):
    """A farm (one schedule, one signup week, templates, virtual cards) against an office
    (a shared IP, ordinary behaviour) among 2,000 ordinary accounts."""
    rng = np.random.default_rng(1)
    profile = [_ordinary(rng, f"u{i}") for i in range(2000)]
    profile += [(f"farm{i}", 0xFF00, 2070, 1, 0.1, 0.9, 1.5, 0.15, 1.0) for i in range(40)]
    office = [_ordinary(rng, f"off{i}") for i in range(40)]
    profile += office
    entities = [(f"farm{i}", "prompt", f"tmpl{i % 5}") for i in range(40)]
    entities += [(f"off{i}", "ip", "office-ip") for i in range(40)]
    entities += [(f"u{i}", "prompt", f"shape{i % 50}") for i in range(2000)]
    stats = [("prompt", f"tmpl{k}", 8, False) for k in range(5)]
    stats += [("prompt", f"shape{k}", 40, False) for k in range(50)]
    stats += [("ip", "office-ip", 40, False)]
    communities = spark.createDataFrame(
        [
            (
                a,
                a if a.startswith("u") else "farm0" if a.startswith("farm") else "off0",
                None if a.startswith("u") else f"farm_{a[:3]}",
            )
            for a, *_ in profile
        ],
        "account_id string, community_id string, farm_id string",
    )
    anomaly = group_anomaly(
        spark,
        communities,
        spark.createDataFrame(profile, PROFILE),
        spark.createDataFrame(entities, ENTITIES),
        spark.createDataFrame(stats, STATS),
        AnomalySettings(),
        0.5,
    )
    rows = {r["community_id"]: r for r in anomaly.collect()}
    assert set(rows) == {"farm0", "off0"}
    farm, office = rows["farm0"], rows["off0"]
    assert farm["group_anomalous_families"] >= 5
    assert office["group_anomalous_families"] <= 1
    assert farm["family_evidence"]["timing"].startswith("100% of its 40 accounts keep one")
    features = {r["account_id"]: r for r in member_features(communities, anomaly).collect()}
    assert features["farm3"]["group_anomaly"] == farm["group_anomaly"]
    assert all(features["u7"][c] == 0.0 for c in GROUP_ANOMALY_FEATURES)
    assert len(FAMILIES) == 7
