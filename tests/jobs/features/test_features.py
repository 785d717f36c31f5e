from __future__ import annotations

import math
from datetime import date, datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.communities.assign import assign_farms, describe_communities
from jobs.core.config import GraphSettings
from jobs.core.contracts import API_USAGE, IP_EVENTS, PAYMENTS, SIGNUPS
from jobs.features.account import account_features, known_bad_members
from jobs.features.neighbourhood import neighbour_aggregates
from jobs.features.table import GROUP_EVIDENCE, NEIGHBOUR_SOURCE_FEATURES, feature_table
from jobs.graph.entities import account_entities
from jobs.graph.links import account_links, entity_stats, farm_shared_entities

END = datetime(2026, 6, 6)


@pytest.fixture(scope="module")
def small_world(spark):
    signups = spark.createDataFrame(
        [
            ("a1", datetime(2026, 6, 1), "x1@farm.xyz", "24.0.0.1", 7922, "dev", "c1", "US"),
            ("a2", datetime(2026, 6, 1), "x2@farm.xyz", "24.0.0.2", 7922, "dev", "c1", "US"),
            ("a3", datetime(2026, 6, 1), "x3@farm.xyz", "24.0.0.3", 7922, "dev", "c1", "US"),
            ("b1", datetime(2025, 6, 6), "bob@gmail.com", "98.0.0.1", 701, "devb", "c2", "US"),
        ],
        SIGNUPS.schema,
    )
    payments = spark.createDataFrame(
        [
            (
                "a1",
                datetime(2026, 6, 2),
                "pi_f",
                "512345",
                "virtual",
                "11111",
                "US",
                20.0,
                "approved",
            ),
            (
                "a2",
                datetime(2026, 6, 2),
                "pi_f",
                "512345",
                "virtual",
                "11111",
                "US",
                20.0,
                "declined",
            ),
            (
                "a3",
                datetime(2026, 6, 2),
                "pi_f",
                "512345",
                "virtual",
                "11111",
                "US",
                20.0,
                "approved",
            ),
            (
                "b1",
                datetime(2026, 6, 2),
                "pi_b1",
                "411111",
                "credit",
                "22222",
                "US",
                20.0,
                "approved",
            ),
            (
                "b1",
                datetime(2026, 6, 3),
                "pi_b2",
                "411111",
                "credit",
                "22222",
                "US",
                20.0,
                "declined",
            ),
        ],
        PAYMENTS.schema,
    )
    ip_events = spark.createDataFrame(
        [
            ("a1", datetime(2026, 6, 2, 3), "24.0.0.9", 7922, "residential", "api_session"),
            ("b1", datetime(2026, 6, 2, 3), "3.0.0.1", 16509, "hosting", "api_session"),
            ("b1", datetime(2026, 6, 3, 3), "98.0.0.1", 701, "residential", "login"),
        ],
        IP_EVENTS.schema,
    )
    usage = spark.createDataFrame(
        [
            ("a1", date(2026, 6, 2), 20, 2000, "ps_t", 255, "c1"),
            ("a1", date(2026, 6, 3), 30, 3000, "ps_t", 255, "c1"),
            ("b1", date(2026, 6, 4), 10, 500, "ps_b", 3, "c2"),
        ],
        API_USAGE.schema,
    )
    entities = account_entities(signups, payments, ip_events, usage, "k")
    stats = entity_stats(entities, GraphSettings(), 4)
    links = account_links(entities, stats)
    # the communities table as the communities stage writes it (sizes, density, farm ids)
    components = spark.createDataFrame(
        [("a1", "a1"), ("a2", "a1"), ("a3", "a1"), ("b1", "b1")],
        "account_id string, component_id string",
    )
    farms = assign_farms(components, min_farm_size=3)
    communities = describe_communities(
        farms, links, farm_shared_entities(farms, entities), GraphSettings().binding_entities
    )
    return signups, payments, ip_events, usage, entities, stats, links, communities


def test_account_features_by_hand(small_world):
    signups, payments, ip_events, usage, entities, stats, _, _ = small_world
    rows = {
        r["account_id"]: r
        for r in account_features(
            signups, payments, ip_events, usage, entities, stats, END
        ).collect()
    }
    a1, b1 = rows["a1"], rows["b1"]
    assert a1["account_age_days"] == pytest.approx(5.0)
    assert a1["first_use_delay_days"] == pytest.approx(1.0)
    assert (a1["active_days"], a1["requests_total"]) == (2, 50)
    assert a1["requests_per_active_day"] == pytest.approx(25.0)
    assert a1["requests_cv"] == pytest.approx(5 / 25)
    assert a1["tokens_per_request"] == pytest.approx(100.0)
    assert a1["prompt_diversity"] == pytest.approx(0.5)
    assert a1["active_hours_per_day"] == pytest.approx(8.0)
    assert a1["max_share_instrument"] == pytest.approx(math.log1p(3))
    assert a1["max_share_device"] == pytest.approx(math.log1p(3))
    assert a1["virtual_card_share"] == pytest.approx(1.0)
    assert rows["a2"]["decline_rate"] == pytest.approx(1.0)
    assert rows["a2"]["first_use_delay_days"] == pytest.approx(-1.0)
    assert (b1["n_instruments"], b1["n_payments"]) == (2, 2)
    assert b1["decline_rate"] == pytest.approx(0.5)
    assert b1["hosting_vpn_share"] == pytest.approx(0.5)
    assert b1["max_share_instrument"] == pytest.approx(math.log1p(1))


def test_feature_table_carries_the_group_anomaly_and_its_sentences(spark, small_world):
    signups, payments, ip_events, usage, entities, stats, links, communities = small_world
    accounts = account_features(signups, payments, ip_events, usage, entities, stats, END)
    anomaly = spark.createDataFrame(
        [("a1", ["97% keep one schedule", "all templates are theirs"], 5.0, 41.5)],
        "community_id string, evidence array<string>, group_anomalous_families double, "
        "group_anomaly double",
    )
    table = feature_table(accounts, communities, anomaly)
    farm_id = communities.where("account_id = 'a1'").first()["farm_id"]
    got = table.select(
        "account_id",
        "farm_id",
        "component_id",
        "group_anomalous_families",
        "group_anomaly",
        GROUP_EVIDENCE,
    )
    sentences = ["97% keep one schedule", "all templates are theirs"]
    expected = spark.createDataFrame(
        [
            ("a1", farm_id, "a1", 5.0, 41.5, sentences),
            ("a2", farm_id, "a1", 5.0, 41.5, sentences),
            ("a3", farm_id, "a1", 5.0, 41.5, sentences),
            ("b1", None, "b1", 0.0, 0.0, []),  # no farm candidate: zeros, no sentences
        ],
        got.schema,
    )
    assertDataFrameEqual(got, expected)
    assert table.where("nbr1_count is null or community_known_bad is null").count() == 0
    with pytest.raises(ValueError, match="group_anomaly is missing column 'evidence'"):
        feature_table(accounts, communities, anomaly.drop("evidence"))


def test_assign_farms_contract(spark):
    components = spark.createDataFrame(
        [("a", "a"), ("b", "a"), ("c", "c")], "account_id string, component_id string"
    )
    farms = {r["account_id"]: r for r in assign_farms(components, 2).collect()}
    assert farms["a"]["farm_id"] == farms["b"]["farm_id"]
    assert farms["a"]["farm_id"].startswith("farm_") and farms["c"]["farm_id"] is None
    assert farms["a"]["community_size"] == 2
    with pytest.raises(ValueError, match="min_farm_size"):
        assign_farms(components, 1)
    with pytest.raises(ValueError, match="component_id"):
        assign_farms(components.drop("component_id"), 2)
    with pytest.raises(ValueError, match="communities is missing column 'community_id'"):
        feature_table(components, components, components)


def test_neighbour_features_reach_the_feature_table(spark, small_world):
    signups, payments, ip_events, usage, entities, stats, links, communities = small_world
    accounts = account_features(signups, payments, ip_events, usage, entities, stats, END)
    neighbours = neighbour_aggregates(
        accounts.select("account_id", *NEIGHBOUR_SOURCE_FEATURES),
        links,
        NEIGHBOUR_SOURCE_FEATURES,
        hops=2,
    )
    rows = {
        r["account_id"]: r for r in feature_table(accounts, communities, None, neighbours).collect()
    }
    # the farm is a star a1 <- a2, a3: a2 sees a1 directly and a3 within two links
    assert (rows["a1"]["nbr1_count"], rows["a2"]["nbr1_count"], rows["a2"]["nbr2_count"]) == (
        2.0,
        1.0,
        2.0,
    )
    assert rows["a2"]["nbr2_mean_decline_rate"] == pytest.approx((0.0 + 0.0) / 2)
    assert rows["a1"]["nbr1_mean_decline_rate"] == pytest.approx(0.5)  # a2 declined, a3 not
    assert rows["b1"]["nbr1_count"] == 0.0 and rows["b1"]["nbr2_mean_decline_rate"] == 0.0
    with pytest.raises(ValueError, match="neighbour features is missing column 'nbr1_count'"):
        feature_table(accounts, communities, None, neighbours.drop("nbr1_count"))


def test_known_bad_members_never_include_the_account_itself_or_future_labels(spark):
    communities = spark.createDataFrame(
        [("a1", "a1"), ("a2", "a1"), ("a3", "a1"), ("b1", "b1")],
        "account_id string, community_id string",
    )
    labels = spark.createDataFrame(
        [
            ("a1", 1, datetime(2026, 6, 1)),
            ("a2", 1, datetime(2026, 6, 1)),
            ("a2", 0, datetime(2026, 6, 2)),  # cleared later: the latest label wins
            ("a3", 1, datetime(2026, 7, 1)),  # after the window: not known yet
            ("b1", 1, datetime(2026, 6, 1)),
        ],
        "account_id string, label int, labelled_at timestamp",
    )
    rows = known_bad_members(communities, labels, END)
    expected = spark.createDataFrame(
        [("a1", 0.0, 0.0), ("a2", 1.0, 0.5), ("a3", 1.0, 0.5), ("b1", 0.0, 0.0)],
        "account_id string, community_known_bad double, community_known_bad_share double",
    )
    assertDataFrameEqual(rows, expected)
    with pytest.raises(ValueError, match="labels is missing column 'labelled_at'"):
        known_bad_members(communities, labels.drop("labelled_at"), END)


def test_hub_entities_count_the_hubs_an_account_touches(small_world):
    signups, payments, ip_events, usage, entities, _, _, _ = small_world
    stats = entity_stats(entities, GraphSettings(entity_degree_cap=2), 4)  # degree 3 is a hub
    hubs = {(r["entity_type"], r["entity_id"]) for r in stats.where("is_hub").collect()}
    expected: dict[str, int] = {}
    for r in entities.collect():
        if (r["entity_type"], r["entity_id"]) in hubs:
            expected[r["account_id"]] = expected.get(r["account_id"], 0) + 1
    assert expected.get("a1", 0) >= 2  # the shared card and device at least
    rows = account_features(signups, payments, ip_events, usage, entities, stats, END).collect()
    got = {r["account_id"]: r["hub_entities"] for r in rows}
    assert got == {a: expected.get(a) for a in got}  # None where an account touches no hub
    assert got["b1"] is None
