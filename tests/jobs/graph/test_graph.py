from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import GraphSettings
from jobs.core.contracts import API_USAGE, IP_EVENTS, PAYMENTS, SIGNUPS
from jobs.graph.entities import account_entities, email_shape
from jobs.graph.links import account_links, entity_stats

T0 = datetime(2026, 6, 1, 9, 30)


def tables(spark, n_cgnat: int = 0):
    signups = spark.createDataFrame(
        [
            ("a1", T0, "Jane.Doe+promo@gmail.com", "10.0.0.1", 7922, "dev1", "c1", "US"),
            ("a2", T0, "janedoe@gmail.com", "10.0.0.2", 7922, "dev2", "c1", "US"),
            ("a3", T0, "bob77@corp.com", "10.0.0.3", 7922, "dev3", "c1", "US"),
        ],
        SIGNUPS.schema,
    )
    payments = spark.createDataFrame(
        [
            ("a1", T0, "pi_family", "411111", "credit", "94107", "US", 20.0, "approved"),
            ("a2", T0, "pi_family", "411111", "credit", "94107", "US", 20.0, "approved"),
            ("a3", T0, "pi_family", "411111", "credit", "94107", "US", 20.0, "approved"),
        ],
        PAYMENTS.schema,
    )
    cgnat = spark.range(n_cgnat).select(
        F.concat(F.lit("m"), F.col("id").cast("string")).alias("account_id"),
        F.lit(T0).alias("event_ts"),
        F.lit("172.56.0.1").alias("ip"),
        F.lit(21928).alias("asn"),
        F.lit("mobile").alias("asn_type"),
        F.lit("login").alias("event_type"),
    )
    ip_events = spark.createDataFrame([], IP_EVENTS.schema).unionByName(cgnat)
    usage = spark.createDataFrame([], API_USAGE.schema)
    return signups, payments, ip_events, usage


def _memberships(entities, entity_type):
    grouped = (
        entities.where(F.col("entity_type") == entity_type)
        .groupBy("entity_id")
        .agg(F.sort_array(F.collect_list("account_id")).alias("accounts"))
    )
    return sorted(tuple(r["accounts"]) for r in grouped.collect())


def test_email_normalisation_links_gmail_aliases_and_hides_raw_values(spark):
    signups, payments, ip_events, usage = tables(spark)
    entities = account_entities(signups, payments, ip_events, usage, "k")
    assert _memberships(entities, "email") == [("a1", "a2"), ("a3",)]
    text = " ".join(str(r) for r in entities.collect())
    for raw in ("gmail", "10.0.0.1", "pi_family", "dev1", "94107"):
        assert raw not in text


def test_email_shape(spark):
    df = spark.createDataFrame([("MaryJones4821@x.xyz",), ("j.doe@gmail.com",)], "e string")
    got = [r[0] for r in df.select(email_shape(F.col("e"))).collect()]
    assert got == ["a9@x.xyz", "a.a@gmail.com"]


def test_star_edges_not_cliques_and_soft_keys_do_not_link(spark):
    signups, payments, ip_events, usage = tables(spark)
    entities = account_entities(signups, payments, ip_events, usage, "k")
    stats = entity_stats(entities, GraphSettings(), 3)
    links = account_links(entities, stats).select("src", "dst")
    # pi_family joins all three (star from a1: 2 edges); the shared email adds a1-a2 again;
    # bin_postcode and client are soft keys and add nothing.
    expected = spark.createDataFrame([("a1", "a2"), ("a1", "a3")], "src string, dst string")
    assertDataFrameEqual(links, expected)


def test_entity_stats_hold_only_entities_two_accounts_share(spark):
    signups, payments, ip_events, usage = tables(spark)
    entities = account_entities(signups, payments, ip_events, usage, "k")
    stats = entity_stats(entities, GraphSettings(), 3)
    degrees = entities.groupBy("entity_type", "entity_id").count()
    shared = degrees.where("count >= 2").select("entity_type", "entity_id")
    # every device is one account's: none is in the table, and every shared entity is
    assert entities.where("entity_type = 'device'").count() == 3
    assert stats.where("entity_type = 'device'").count() == 0
    assertDataFrameEqual(stats.select("entity_type", "entity_id"), shared)
    assert stats.where("degree < 2").count() == 0


def test_the_memberships_are_not_shuffled_to_meet_small_entity_stats(spark, tmp_path):
    """The session's broadcast threshold (``spark.broadcast_threshold``) lets the shared-entity
    statistics be broadcast to the memberships; below the file sizes, both sides shuffle."""
    signups, payments, ip_events, usage = tables(spark)
    account_entities(signups, payments, ip_events, usage, "k").write.parquet(str(tmp_path / "e"))
    entities = spark.read.parquet(str(tmp_path / "e"))
    entity_stats(entities, GraphSettings(), 3).write.parquet(str(tmp_path / "s"))
    stats = spark.read.parquet(str(tmp_path / "s"))

    def plan() -> str:
        return account_links(entities, stats)._jdf.queryExecution().executedPlan().toString()

    assert spark.conf.get("spark.sql.autoBroadcastJoinThreshold") == "64MB"
    assert "BroadcastHashJoin" in plan()
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        assert "BroadcastHashJoin" not in plan()
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "64MB")


def test_cgnat_hub_is_pruned_but_kept_as_a_feature(spark):
    signups, payments, ip_events, usage = tables(spark, n_cgnat=1000)
    entities = account_entities(signups, payments, ip_events, usage, "k")
    stats = entity_stats(entities, GraphSettings(entity_degree_cap=400), 1003)
    ip_hub = stats.where("entity_type = 'ip' and degree = 1000").collect()
    assert len(ip_hub) == 1 and ip_hub[0]["is_hub"] is True
    links = account_links(entities, stats)
    assert links.where(F.col("src").startswith("m") | F.col("dst").startswith("m")).count() == 0
    # a per-type cap can let it through (and then it is a star of 999 edges, not 499,500)
    loose = entity_stats(entities, GraphSettings(entity_degree_cap_by_type={"ip": 5000}), 1003)
    assert account_links(entities, loose).where(F.col("src").startswith("m")).count() == 999


def test_missing_column_is_named(spark):
    signups, payments, ip_events, usage = tables(spark)
    with pytest.raises(ValueError, match="payments is missing column 'card_bin'"):
        account_entities(signups, payments.drop("card_bin"), ip_events, usage, "k")


def test_behaviour_buckets_group_synchronised_accounts_only(spark):
    from datetime import date, timedelta

    from jobs.graph.entities import behaviour_entities

    def events(account: str, asn: int, hours: range, day0: int = 1) -> list[tuple]:
        return [
            (
                account,
                datetime(2026, 6, day0 + h // 24, h % 24),
                f"10.0.{asn}.1",
                asn,
                "hosting",
                "api",
            )
            for h in hours
        ]

    synced = [e for a in ("s1", "s2", "s3") for e in events(a, 64500, range(0, 120, 5))]
    other = events("o1", 64501, range(3, 120, 5))
    quiet = events("q1", 64500, range(0, 10, 5))  # two cells: below behaviour_min_cells
    ip_events = spark.createDataFrame(synced + other + quiet, IP_EVENTS.schema)
    usage = spark.createDataFrame(
        [
            (a, date(2026, 6, 1) + timedelta(days=d), 5, 50, "ps_x", 255, "c")
            for a in ("s1", "s2")
            for d in range(3)
        ],
        API_USAGE.schema,
    )
    settings = GraphSettings(behaviour_min_cells=5, behaviour_bands=6, behaviour_rows=2)
    buckets = behaviour_entities(ip_events, usage, settings, "k")
    by_account = {
        r["account_id"]: set(r["ids"])
        for r in buckets.groupBy("account_id")
        .agg(F.collect_set("entity_id").alias("ids"))
        .collect()
    }
    assert set(by_account) == {"s1", "s2", "s3", "o1"}
    assert by_account["s1"] == by_account["s2"]  # identical sets share every band
    assert len(by_account["s1"] & by_account["s3"]) >= 1  # Jaccard 24/27 shares some band
    assert not by_account["o1"] & by_account["s1"]  # disjoint cells share nothing
    # a cell shared by more accounts than the cap is dropped: then nobody has enough cells
    capped = GraphSettings(behaviour_min_cells=5, behaviour_cell_max_accounts=2)
    left = behaviour_entities(ip_events, usage, capped, "k").select("account_id").distinct()
    assert {r["account_id"] for r in left.collect()} == {"o1"}
    with pytest.raises(ValueError, match="ip_events is missing column 'asn'"):
        behaviour_entities(ip_events.drop("asn"), usage, settings, "k")


def test_account_minhashes_equal_minhashlsh_over_each_whole_set(spark):
    import random

    from pyspark.ml.feature import HashingTF, MinHashLSH
    from pyspark.ml.functions import vector_to_array

    from jobs.graph.entities import account_minhashes

    rng = random.Random(3)
    pool = [f"h|2026-06-01 {h:02d}|{asn}" for h in range(24) for asn in range(6)]
    pool += [f"p|ps_{i}" for i in range(40)]
    rows = [(f"a{i}", c) for i in range(80) for c in rng.sample(pool, rng.randint(2, 25))]
    rows += rows[:50]  # repeated events: a set, not a bag
    rows += [(f"a{i}", "d|2026-06-01|255") for i in range(80)]  # popular: above the cap
    cells = spark.createDataFrame(rows, "account_id string, cell string")
    settings = GraphSettings(
        behaviour_min_cells=5, behaviour_cell_max_accounts=40, behaviour_bands=4, behaviour_rows=3
    )
    got = {r["account_id"]: r["_values"] for r in account_minhashes(cells, settings).collect()}
    # Spark ML over each account's whole set, the way the buckets were hashed before
    distinct = cells.distinct()
    popular = distinct.groupBy("cell").count().where(F.col("count") > 40)
    sets = (
        distinct.join(popular, "cell", "left_anti")
        .groupBy("account_id")
        .agg(F.collect_list("cell").alias("cells"))
        .where(F.size("cells") >= 5)
    )
    vectors = HashingTF(
        inputCol="cells", outputCol="features", numFeatures=1 << 20, binary=True
    ).transform(sets)
    lsh = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=12, seed=7).fit(vectors)
    expected = {
        r["account_id"]: r["v"]
        for r in lsh.transform(vectors)
        .select(
            "account_id",
            F.transform("hashes", lambda h: vector_to_array(h)[0]).cast("array<string>").alias("v"),
        )
        .collect()
    }
    assert 40 < len(expected) < 80  # some accounts fall under the minimum
    assert got == expected


def test_ipv6_addresses_link_by_their_64_and_share_networks_by_64_and_48(spark):
    signups, payments, _, usage = tables(spark)
    events = [  # accepted rows: ingest has normalised every address already
        ("r1", "2001:db8:aa:1:8a2e:370:7334:1"),  # one /64, rotating low bits: one subscriber
        ("r2", "2001:db8:aa:1:dead:beef:0:2"),
        ("n1", "2001:db8:aa:2::9"),  # the next /64 of the same /48: a neighbour, no link
        ("v4", "198.51.100.7"),
        ("v4b", "198.51.100.8"),  # same /24, another address
    ]
    ip_events = spark.createDataFrame(
        [(a, T0, ip, 7922, "residential", "login") for a, ip in events], IP_EVENTS.schema
    )
    entities = account_entities(signups, payments, ip_events, usage, "k")
    ips = [m for m in _memberships(entities, "ip") if not m[0].startswith("a")]
    assert ips == [("n1",), ("r1", "r2"), ("v4",), ("v4b",)]
    networks = _memberships(entities, "ip24_asn_day")
    assert ("n1", "r1", "r2") in networks  # the /48
    assert ("r1", "r2") in networks  # the /64 (n1's own /64 is its alone)
    assert ("v4", "v4b") in networks  # the /24
    assert len(networks) == 4


def test_farm_entities_are_every_entity_two_members_of_a_farm_hold_once_per_member(spark):
    from jobs.graph.links import farm_shared_entities

    communities = spark.createDataFrame(
        [("a1", "f1"), ("a2", "f1"), ("a3", "f1"), ("b1", "f2"), ("b2", "f2"), ("c1", None)],
        "account_id string, farm_id string",
    )
    entities = spark.createDataFrame(
        [
            ("a1", "device", "d1"),
            ("a1", "device", "d1"),  # a repeated row counts its member once
            ("a2", "device", "d1"),
            ("a3", "device", "d2"),
            ("a1", "ip", "i1"),
            ("a2", "ip", "i1"),
            ("a3", "ip", "i1"),
            ("b1", "ip", "i1"),  # the same entity in another farm: counted there alone
            ("c1", "ip", "i1"),  # no farm
            ("b1", "card", None),
            ("b2", "card", None),  # a null entity binds nobody
        ],
        "account_id string, entity_type string, entity_id string",
    )
    expected = spark.createDataFrame(
        [
            ("f1", "a1", "device", "d1", 2),
            ("f1", "a2", "device", "d1", 2),
            ("f1", "a1", "ip", "i1", 3),
            ("f1", "a2", "ip", "i1", 3),
            ("f1", "a3", "ip", "i1", 3),
        ],
        "farm_id string, account_id string, entity_type string, entity_id string, members long",
    )
    assertDataFrameEqual(farm_shared_entities(communities, entities), expected)
