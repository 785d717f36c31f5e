"""Account features: what each account does, pays with, connects from and shares.

In: the accepted ``signups``, ``payments``, ``ip_events`` and ``api_usage`` tables,
``account_entities`` and ``entity_stats`` (:mod:`jobs.graph`), the run's window end, and for the
label-derived features the ``communities`` and ``labels`` tables. Out: one row per account with
:data:`ACCOUNT_FEATURES` (the account model's input), and per account the confirmed farm
accounts among the other members of its community (:func:`known_bad_members`). Called by the
features stage (:mod:`jobs.features.stage`), training and the tests; every function is a
DataFrame-in, DataFrame-out transform.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.core.addresses import subscriber_ip
from jobs.core.moments import moment_mean, moment_std, moment_sums
from jobs.core.validation import require_columns
from jobs.graph.entities import ENTITY_TYPES

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
    usage = _usage_figures(api_usage)
    pay = _payment_figures(payments)
    net = _network_figures(ip_events)
    sharing = _sharing_figures(entities, stats)
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


def _usage_figures(api_usage: DataFrame) -> DataFrame:
    """Volume, regularity, prompt diversity and schedule figures per account."""
    return (
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
            # exact moments (jobs.core.moments): stddev_pop's last bits follow the partitioning
            (moment_std("_requests") / moment_mean("_requests")).alias("requests_cv"),
            "tokens_per_request",
            "active_hours_per_day",
            (F.col("n_prompts") / F.col("active_days")).alias("prompt_diversity"),
            (F.col("n_profiles") / F.col("active_days")).alias("hours_profile_changes"),
        )
    )


def _payment_figures(payments: DataFrame) -> DataFrame:
    """Payment attempts, declines, chargebacks, instruments and virtual cards per account."""
    return payments.groupBy("account_id").agg(
        F.count("*").alias("n_payments"),
        F.avg((F.col("outcome") == "declined").cast("double")).alias("decline_rate"),
        F.sum((F.col("outcome") == "chargeback").cast("int")).alias("chargebacks"),
        F.countDistinct("instrument_fingerprint").alias("n_instruments"),
        F.avg(F.col("card_type").isin("virtual", "prepaid").cast("double")).alias(
            "virtual_card_share"
        ),
    )


def _network_figures(ip_events: DataFrame) -> DataFrame:
    """Distinct IPs (an IPv6 /64 counts once) and ASNs, hosting/VPN and mobile shares."""
    return ip_events.groupBy("account_id").agg(
        F.size(F.collect_set(subscriber_ip(F.col("ip")))).cast("long").alias("n_ips"),
        F.size(F.collect_set("asn")).cast("long").alias("n_asns"),
        F.avg(F.col("asn_type").isin("hosting", "vpn").cast("double")).alias("hosting_vpn_share"),
        F.avg((F.col("asn_type") == "mobile").cast("double")).alias("mobile_share"),
    )


def _sharing_figures(entities: DataFrame, stats: DataFrame) -> DataFrame:
    """The largest entity of each type the account shares, and how many hubs it touches."""
    # one join of the (large) membership table with the entity statistics, one aggregation:
    # the largest entity of each type the account shares, and how many hubs it touches (null
    # when none, as an account without any membership row). Only shared entities (degree 2+,
    # a tenth of them at 1M) are joined; a membership that finds none is an entity of this
    # account alone: degree 1
    shared = stats.where(F.col("degree") >= 2).select(
        "entity_type", "entity_id", "degree", "is_hub"
    )
    degree = F.coalesce(F.col("degree"), F.lit(1))
    # the joined memberships are shuffled by account before the aggregation: partial sums on
    # rows in entity order hold every account in every task and gain nothing
    return (
        entities.join(shared, ["entity_type", "entity_id"], "left")
        .repartition("account_id")
        .groupBy("account_id")
        .agg(
            *[
                F.max(F.when(F.col("entity_type") == t, degree)).alias(f"max_share_{t}")
                for t in ENTITY_TYPES
            ],
            F.sum(F.when(F.col("is_hub"), 1)).alias("hub_entities"),
        )
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
