"""Account, neighbourhood and group features for the farm model.

In: the accepted input tables, ``account_entities`` and ``entity_stats`` from :mod:`jobs.graph`,
``account_links`` and the ``communities`` table of :mod:`jobs.communities` and the run's window
end. Out: one row per account: ``account_id``, ``farm_id``, ``component_id``, the numeric
columns named in :data:`FEATURE_COLUMNS` (nulls filled with 0, all doubles) and
:data:`GROUP_EVIDENCE`: account features, their mean/max/std over 1-hop and 2-hop neighbours in
the account graph (:mod:`jobs.neighbourhood`), how unlike random groups of its size the
account's farm candidate is (:mod:`jobs.anomaly`, no labels) and the confirmed farm accounts
among its group. Called by the nightly flow's features task and by training; every function is
a DataFrame-in, DataFrame-out transform except :func:`run`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.anomaly import GROUP_ANOMALY_FEATURES, account_profile, group_anomaly
from jobs.config import Settings
from jobs.graph import ENTITY_TYPES, require_columns
from jobs.moments import moment_mean, moment_std, moment_sums
from jobs.neighbourhood import neighbour_aggregates, neighbour_feature_names
from jobs.reasons import feature_reference

ACCOUNT_FEATURES = (
    "account_age_days",
    "first_use_delay_days",
    "active_days",
    "requests_total",
    "requests_per_active_day",
    "requests_cv",
    "tokens_per_request",
    "prompt_diversity",
    "active_hours_per_day",
    "hours_profile_changes",
    "n_payments",
    "decline_rate",
    "chargebacks",
    "n_instruments",
    "virtual_card_share",
    "n_ips",
    "n_asns",
    "hosting_vpn_share",
    "mobile_share",
    "ips_per_active_day",
    "hub_entities",
    *(f"max_share_{t}" for t in ENTITY_TYPES),
)
# Label-derived: confirmed farm accounts among the other members (never the account's own label).
KNOWN_BAD_FEATURES = ("community_known_bad", "community_known_bad_share")
# Account features summarised over each account's neighbours in the account graph (GADBench:
# neighbourhood-aggregated features are what lets boosted trees beat GNNs on fraud graphs).
NEIGHBOUR_SOURCE_FEATURES = (
    "account_age_days",
    "first_use_delay_days",
    "requests_per_active_day",
    "active_hours_per_day",
    "decline_rate",
    "virtual_card_share",
    "hosting_vpn_share",
    "max_share_instrument",
)
NEIGHBOUR_MAX_DEGREE = 200
NEIGHBOUR_FEATURES = neighbour_feature_names(NEIGHBOUR_SOURCE_FEATURES, hops=2)
FEATURE_COLUMNS: tuple[str, ...] = (
    ACCOUNT_FEATURES + NEIGHBOUR_FEATURES + GROUP_ANOMALY_FEATURES + KNOWN_BAD_FEATURES
)
# per account: what its farm candidate does that random groups of its size do not (sentences,
# strongest first; empty outside anomalous farm candidates)
GROUP_EVIDENCE = "group_evidence"


def _days_between(later: Column, earlier: Column) -> Column:
    return (F.unix_timestamp(later) - F.unix_timestamp(earlier)) / 86400.0


def account_features(
    signups: DataFrame,
    payments: DataFrame,
    ip_events: DataFrame,
    api_usage: DataFrame,
    entities: DataFrame,
    stats: DataFrame,
    window_end: datetime,
) -> DataFrame:
    """Per-account behaviour, payment, network and entity-sharing features.

    Returns:
        ``account_id`` plus :data:`ACCOUNT_FEATURES`, one row per signed-up account.
    """
    require_columns(signups, "signups", ("account_id", "signup_ts"))
    require_columns(
        api_usage,
        "api_usage",
        ("account_id", "usage_date", "requests", "tokens", "prompt_signature", "active_hours_mask"),
    )
    require_columns(
        payments, "payments", ("account_id", "instrument_fingerprint", "outcome", "card_type")
    )
    require_columns(ip_events, "ip_events", ("account_id", "ip", "asn", "asn_type"))
    end = F.lit(window_end)
    usage = (
        api_usage.groupBy("account_id")
        .agg(
            F.min("usage_date").alias("first_use"),
            F.count("*").alias("active_days"),
            F.sum("requests").alias("requests_total"),
            F.avg("requests").alias("requests_per_active_day"),
            *moment_sums(F.col("requests"), "_requests"),
            (F.sum("tokens") / F.sum("requests")).alias("tokens_per_request"),
            # distinct counts as set sizes: two countDistinct in one aggregation make Spark
            # copy every row once per distinct column (Expand), about 2.7x slower at 1M
            F.size(F.collect_set("prompt_signature")).alias("n_prompts"),
            F.avg(F.bit_count("active_hours_mask")).alias("active_hours_per_day"),
            F.size(F.collect_set("active_hours_mask")).alias("n_profiles"),
        )
        .select(
            "account_id",
            "first_use",
            "active_days",
            "requests_total",
            "requests_per_active_day",
            # exact moments (jobs.moments): stddev_pop's last bits follow the partitioning
            (moment_std("_requests") / moment_mean("_requests")).alias("requests_cv"),
            "tokens_per_request",
            "active_hours_per_day",
            (F.col("n_prompts") / F.col("active_days")).alias("prompt_diversity"),
            (F.col("n_profiles") / F.col("active_days")).alias("hours_profile_changes"),
        )
    )
    pay = payments.groupBy("account_id").agg(
        F.count("*").alias("n_payments"),
        F.avg((F.col("outcome") == "declined").cast("double")).alias("decline_rate"),
        F.sum((F.col("outcome") == "chargeback").cast("int")).alias("chargebacks"),
        F.countDistinct("instrument_fingerprint").alias("n_instruments"),
        F.avg(F.col("card_type").isin("virtual", "prepaid").cast("double")).alias(
            "virtual_card_share"
        ),
    )
    net = ip_events.groupBy("account_id").agg(
        F.size(F.collect_set("ip")).cast("long").alias("n_ips"),
        F.size(F.collect_set("asn")).cast("long").alias("n_asns"),
        F.avg(F.col("asn_type").isin("hosting", "vpn").cast("double")).alias("hosting_vpn_share"),
        F.avg((F.col("asn_type") == "mobile").cast("double")).alias("mobile_share"),
    )
    # one join of the (large) membership table with the entity statistics, one aggregation:
    # the largest entity of each type the account shares, and how many hubs it touches (null
    # when none, as an account without any membership row). Only shared entities (degree 2+,
    # a tenth of them at 1M) are joined; a membership that finds none is an entity of this
    # account alone: degree 1
    shared = stats.where(F.col("degree") >= 2).select(
        "entity_type", "entity_id", "degree", "is_hub"
    )
    degree = F.coalesce(F.col("degree"), F.lit(1))
    sharing = (
        entities.join(shared, ["entity_type", "entity_id"], "left")
        .groupBy("account_id")
        .agg(
            *[
                F.max(F.when(F.col("entity_type") == t, degree)).alias(f"max_share_{t}")
                for t in ENTITY_TYPES
            ],
            F.sum(F.when(F.col("is_hub"), 1)).alias("hub_entities"),
        )
    )
    base = signups.select("account_id", "signup_ts")
    joined = (
        base.join(usage, "account_id", "left")
        .join(pay, "account_id", "left")
        .join(net, "account_id", "left")
        .join(sharing, "account_id", "left")
    )
    return joined.select(
        "account_id",
        _days_between(end, F.col("signup_ts")).alias("account_age_days"),
        F.coalesce(
            _days_between(F.col("first_use").cast("timestamp"), F.col("signup_ts")), F.lit(-1.0)
        ).alias("first_use_delay_days"),
        F.col("active_days"),
        F.col("requests_total"),
        F.col("requests_per_active_day"),
        F.col("requests_cv"),
        F.col("tokens_per_request"),
        F.col("prompt_diversity"),
        F.col("active_hours_per_day"),
        F.col("hours_profile_changes"),
        F.col("n_payments"),
        F.col("decline_rate"),
        F.col("chargebacks"),
        F.col("n_instruments"),
        F.col("virtual_card_share"),
        F.col("n_ips"),
        F.col("n_asns"),
        F.col("hosting_vpn_share"),
        F.col("mobile_share"),
        (F.col("n_ips") / F.greatest(F.col("active_days"), F.lit(1))).alias("ips_per_active_day"),
        F.col("hub_entities"),
        *[F.log1p(F.col(f"max_share_{t}")).alias(f"max_share_{t}") for t in ENTITY_TYPES],
    )


def known_bad_members(communities: DataFrame, labels: DataFrame, window_end: datetime) -> DataFrame:
    """Known farm accounts among the *other* members of each account's community.

    An account's own label never enters its features (the model would read it back); only
    labels known before ``window_end`` count, each account's latest label wins.

    Args:
        communities: ``account_id, community_id`` (every account).
        labels: ``account_id, label, labelled_at``.
        window_end: end of the run's window (labels after it are not known yet).

    Returns:
        ``account_id, community_known_bad, community_known_bad_share`` (share of the other
        members), one row per account of ``communities``.
    """
    require_columns(communities, "communities", ("account_id", "community_id"))
    require_columns(labels, "labels", ("account_id", "label", "labelled_at"))
    known = (
        labels.where(F.col("labelled_at") < F.lit(window_end))
        .groupBy("account_id")
        .agg(F.max_by("label", "labelled_at").alias("_label"))
        .select("account_id", (F.col("_label") == 1).cast("int").alias("_bad"))
    )
    members = communities.select("account_id", "community_id").join(known, "account_id", "left")
    members = members.fillna(0, subset=["_bad"])
    totals = members.groupBy("community_id").agg(
        F.sum("_bad").alias("_bad_total"), F.count("*").alias("_size")
    )
    others = F.col("_bad_total") - F.col("_bad")
    return members.join(totals, "community_id").select(
        "account_id",
        others.cast("double").alias("community_known_bad"),
        F.when(F.col("_size") > 1, others / (F.col("_size") - 1))
        .otherwise(0.0)
        .alias("community_known_bad_share"),
    )


def feature_table(
    accounts: DataFrame,
    communities: DataFrame,
    anomaly: DataFrame | None = None,
    neighbours: DataFrame | None = None,
    known_bad: DataFrame | None = None,
) -> DataFrame:
    """Join account, neighbourhood and group features into the model's input table.

    Args:
        accounts: :func:`account_features` output.
        communities: ``account_id, component_id, community_id, farm_id``.
        anomaly: the ``group_anomaly`` table of :func:`jobs.anomaly.group_anomaly` (missing:
            the group anomaly features are 0).
        neighbours: :func:`jobs.neighbourhood.neighbour_aggregates` over
            :data:`NEIGHBOUR_SOURCE_FEATURES` (missing: neighbourhood features are 0).
        known_bad: :func:`known_bad_members` (missing: those two features are 0).

    Returns:
        ``account_id, farm_id, component_id``, :data:`FEATURE_COLUMNS` as doubles (nulls 0) and
        :data:`GROUP_EVIDENCE` (the group's sentences, strongest first).
    """
    require_columns(
        communities, "communities", ("account_id", "component_id", "community_id", "farm_id")
    )
    joined = accounts.join(
        communities.select("account_id", "component_id", "community_id", "farm_id"),
        "account_id",
        "left",
    )
    if anomaly is not None:
        require_columns(
            anomaly, "group_anomaly", ("community_id", "evidence", *GROUP_ANOMALY_FEATURES)
        )
        joined = joined.join(
            anomaly.select(
                "community_id",
                F.col("evidence").alias(GROUP_EVIDENCE),
                *GROUP_ANOMALY_FEATURES,
            ),
            "community_id",
            "left",
        )
    else:
        joined = joined.select(
            "*",
            F.lit(None).cast("array<string>").alias(GROUP_EVIDENCE),
            *[F.lit(None).alias(c) for c in GROUP_ANOMALY_FEATURES],
        )
    if neighbours is not None:
        require_columns(neighbours, "neighbour features", ("account_id", *NEIGHBOUR_FEATURES))
        joined = joined.join(neighbours, "account_id", "left")
    else:
        joined = joined.select("*", *[F.lit(None).alias(c) for c in NEIGHBOUR_FEATURES])
    if known_bad is not None:
        require_columns(known_bad, "known-bad features", ("account_id", *KNOWN_BAD_FEATURES))
        joined = joined.join(
            known_bad.select("account_id", *KNOWN_BAD_FEATURES), "account_id", "left"
        )
    else:
        joined = joined.select("*", *[F.lit(None).alias(c) for c in KNOWN_BAD_FEATURES])
    return joined.select(
        "account_id",
        "farm_id",
        "component_id",
        *[F.coalesce(F.col(c).cast("double"), F.lit(0.0)).alias(c) for c in FEATURE_COLUMNS],
        F.coalesce(F.col(GROUP_EVIDENCE), F.array().cast("array<string>")).alias(GROUP_EVIDENCE),
    )


def run(
    spark: SparkSession,
    settings: Settings,
    tables: dict[str, DataFrame],
    graph: dict[str, DataFrame],
    window_end: datetime,
    run_dir: Path,
) -> DataFrame:
    """Compute and write ``<run_dir>/features`` (and ``group_anomaly``); returns the features.

    Also writes ``account_features``, the ``group_anomaly`` table (:mod:`jobs.anomaly`) and
    ``feature_reference.json`` (what ordinary accounts show, quoted by the reasons). The
    neighbourhood features are computed where ``graph.neighbour_backend`` says
    (:func:`jobs.neighbourhood.neighbour_aggregates`).
    """
    accounts = account_features(
        tables["signups"],
        tables["payments"],
        tables["ip_events"],
        tables["api_usage"],
        graph["account_entities"],
        graph["entity_stats"],
        window_end,
    )
    path = run_dir / "account_features"
    accounts.write.mode("overwrite").parquet(str(path))
    accounts = spark.read.parquet(str(path))
    reference = feature_reference(accounts, ACCOUNT_FEATURES, settings.anomaly.seed)
    (run_dir / "feature_reference.json").write_text(json.dumps(reference, indent=1))
    profile = account_profile(
        accounts, tables["api_usage"], tables["signups"], settings.ingest.lookback_days
    )
    anomaly = group_anomaly(
        spark,
        graph["communities"],
        profile,
        graph["account_entities"],
        graph["entity_stats"],
        settings.anomaly,
        settings.graph.min_entity_concentration,
    )
    anomaly.write.mode("overwrite").parquet(str(run_dir / "group_anomaly"))
    anomaly = spark.read.parquet(str(run_dir / "group_anomaly"))
    neighbours = neighbour_aggregates(
        accounts.select("account_id", *NEIGHBOUR_SOURCE_FEATURES),
        graph["account_links"],
        NEIGHBOUR_SOURCE_FEATURES,
        hops=2,
        max_degree=NEIGHBOUR_MAX_DEGREE,
        backend=settings.graph.neighbour_backend,
        local_max_paths=settings.graph.neighbour_local_max_paths,
    )
    known_bad = known_bad_members(graph["communities"], tables["labels"], window_end)
    features = feature_table(accounts, graph["communities"], anomaly, neighbours, known_bad)
    features.write.mode("overwrite").parquet(str(run_dir / "features"))
    return spark.read.parquet(str(run_dir / "features"))
