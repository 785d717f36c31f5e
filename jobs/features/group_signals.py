"""Group signals: the statistics a farm candidate is measured on, for any grouping of accounts.

In: a membership table (``account_id, group_id``: farm candidates, or random groups), the
per-account profile (:func:`account_profile`), ``account_entities`` and ``entity_stats``. Out:
one row per group with every signal of :data:`SIGNALS` (exact means and percentiles, so the
figures do not depend on partitioning), and the random groups the reference is drawn from
(:func:`random_groups`). What the signals mean and why these: :mod:`jobs.features.anomaly`.
Called by :func:`jobs.features.anomaly.group_anomaly` and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.config import AnomalySettings
from jobs.core.moments import moment_mean, moment_sums
from jobs.core.validation import require_columns

GROUP = "group_id"
RANDOM_PREFIX = "~random"


@dataclass(frozen=True)
class Signal:
    """One group statistic: its evidence family, which way is farm-like, and its sentence.

    ``sentence`` is formatted with ``value``, ``size`` (the group's accounts), ``reference``
    (random groups' 99th percentile, or 1st for ``direction`` -1), ``ref_size`` (the random
    groups' size) and ``hours`` (length of the group's most common hourly schedule).
    """

    name: str
    family: str
    direction: int
    sentence: str


# how a sentence quotes the reference
RANDOM_CONTEXT = "random groups of {ref_size:,} accounts: {bound} {reference}"


SIGNALS: tuple[Signal, ...] = (
    Signal(
        "schedule_sync",
        "timing",
        1,
        "{value:.0%} of its {size:,} accounts keep one identical {hours}-hour daily schedule",
    ),
    Signal(
        "exclusive_behaviour",
        "timing",
        1,
        "{value:.0%} of its accounts share activity patterns (hours, networks, prompts) seen "
        "almost only in this group",
    ),
    Signal(
        "exclusive_prompt",
        "prompts",
        1,
        "{value:.0%} of its accounts use prompt templates that almost only this group uses",
    ),
    Signal(
        "signup_week_share",
        "lifecycle",
        1,
        "{value:.0%} of its accounts signed up in the same week",
    ),
    Signal("young_share", "lifecycle", 1, "{value:.0%} of its accounts are under 90 days old"),
    Signal(
        "median_requests_cv",
        "volume",
        -1,
        "its accounts' daily request volume varies by only {value:.0%} (median account)",
    ),
    Signal(
        "median_active_share",
        "volume",
        1,
        "its accounts are active on {value:.0%} of their days (median account)",
    ),
    Signal(
        "median_ips_per_day",
        "network",
        1,
        "its accounts rotate through {value:.1f} IP addresses per active day (median account)",
    ),
    Signal("mean_decline_rate", "payment", 1, "{value:.0%} of its payment attempts are declined"),
    Signal(
        "mean_virtual_card_share",
        "payment",
        1,
        "{value:.0%} of its payments use virtual or prepaid cards",
    ),
    Signal(
        "exclusive_bin_postcode",
        "payment",
        1,
        "{value:.0%} of its accounts pay with a card BIN and billing postcode used almost only "
        "in this group",
    ),
    Signal(
        "exclusive_instrument",
        "payment",
        1,
        "{value:.0%} of its accounts share a payment card used almost only in this group",
    ),
    Signal(
        "exclusive_device",
        "devices",
        1,
        "{value:.0%} of its accounts share a device fingerprint used almost only in this group",
    ),
    Signal(
        "exclusive_client",
        "devices",
        1,
        "{value:.0%} of its accounts share a client fingerprint used almost only in this group",
    ),
)


SIGNAL_NAMES = tuple(s.name for s in SIGNALS)


FAMILIES = ("timing", "prompts", "lifecycle", "volume", "network", "payment", "devices")


# entity types whose group-exclusive sharing is a signal (``exclusive_<type>``); networks and
# email domains are left out on purpose: offices and universities share them legitimately
EXCLUSIVE_TYPES = ("behaviour", "prompt", "bin_postcode", "instrument", "device", "client")


def account_profile(
    accounts: DataFrame, api_usage: DataFrame, signups: DataFrame, window_days: int
) -> DataFrame:
    """Per-account inputs of the group signals, one row per account of ``accounts``.

    Args:
        accounts: :func:`jobs.features.account_features` output.
        api_usage: accepted API usage (``account_id, active_hours_mask``).
        signups: accepted signups (``account_id, signup_ts``).
        window_days: the run's look-back (the longest an account can have been active).

    Returns:
        ``account_id, modal_mask, signup_week, young, requests_cv, active_share, ips_per_day,
        decline_rate, virtual_card_share``.
    """
    require_columns(
        accounts,
        "account features",
        (
            "account_id",
            "account_age_days",
            "requests_cv",
            "ips_per_active_day",
            "decline_rate",
            "virtual_card_share",
            "active_days",
        ),
    )
    require_columns(api_usage, "api_usage", ("account_id", "active_hours_mask"))
    require_columns(signups, "signups", ("account_id", "signup_ts"))
    # the account's most used hourly schedule (ties: the larger mask, so the choice is stable)
    modal = (
        api_usage.groupBy("account_id", "active_hours_mask")
        .count()
        .groupBy("account_id")
        .agg(F.max(F.struct("count", "active_hours_mask")).alias("_m"))
        .select("account_id", F.col("_m.active_hours_mask").alias("modal_mask"))
    )
    weeks = signups.select(
        "account_id", F.floor(F.unix_timestamp("signup_ts") / (7 * 86400)).alias("signup_week")
    )
    lived = F.least(F.greatest(F.col("account_age_days"), F.lit(1.0)), F.lit(float(window_days)))
    return (
        accounts.join(modal, "account_id", "left")
        .join(weeks, "account_id", "left")
        .select(
            "account_id",
            "modal_mask",
            "signup_week",
            (F.col("account_age_days") < 90).cast("int").alias("young"),
            "requests_cv",
            (F.col("active_days") / lived).alias("active_share"),
            F.col("ips_per_active_day").alias("ips_per_day"),
            "decline_rate",
            "virtual_card_share",
        )
    )


def _modal_share(members: DataFrame, column: str, name: str) -> DataFrame:
    counts = members.where(F.col(column).isNotNull()).groupBy(GROUP, column).count()
    return counts.groupBy(GROUP).agg(F.max(F.struct("count", column)).alias(name))


def group_signals(
    members: DataFrame,
    profile: DataFrame,
    entities: DataFrame,
    stats: DataFrame,
    min_concentration: float,
) -> DataFrame:
    """Every signal of :data:`SIGNALS` for each group (real communities and random groups alike).

    An entity is *exclusive* to a group when two or more members share it and at least
    ``min_concentration`` of all its accounts are members; ``exclusive_<type>`` is the share of
    members holding such an entity of that type. Means are exact (:mod:`jobs.core.moments`) and
    medians exact percentiles, so the figures do not depend on partitioning.

    Args:
        members: ``account_id, group_id``.
        profile: :func:`account_profile` output.
        entities: ``account_id, entity_type, entity_id``.
        stats: ``entity_type, entity_id, degree, is_hub``.
        min_concentration: share of an entity's accounts that must be members.

    Returns:
        ``group_id, size, schedule_hours`` and one column per signal.
    """
    require_columns(members, "members", ("account_id", GROUP))
    require_columns(entities, "account_entities", ("account_id", "entity_type", "entity_id"))
    require_columns(stats, "entity_stats", ("entity_type", "entity_id", "degree", "is_hub"))
    rows = members.select("account_id", GROUP).join(profile, "account_id", "left")
    size = F.count("*")
    basic = rows.groupBy(GROUP).agg(
        size.alias("size"),
        F.avg("young").alias("young_share"),
        F.percentile("requests_cv", 0.5).alias("median_requests_cv"),
        F.percentile("active_share", 0.5).alias("median_active_share"),
        F.percentile("ips_per_day", 0.5).alias("median_ips_per_day"),
        *moment_sums(F.col("decline_rate"), "_decline"),
        *moment_sums(F.col("virtual_card_share"), "_virtual"),
    )
    schedule = _modal_share(rows, "modal_mask", "_schedule")
    signup = _modal_share(rows, "signup_week", "_signup")
    exclusive_members = _exclusive_members(members, entities, stats, min_concentration)
    joined = (
        basic.join(schedule, GROUP, "left")
        .join(signup, GROUP, "left")
        .join(exclusive_members, GROUP, "left")
    )
    n = F.col("size").cast("double")
    return joined.select(
        GROUP,
        "size",
        F.coalesce(F.bit_count(F.col("_schedule.modal_mask")), F.lit(0)).alias("schedule_hours"),
        (F.coalesce(F.col("_schedule.count"), F.lit(0)) / n).alias("schedule_sync"),
        *[
            (F.coalesce(F.col(f"_x_{t}"), F.lit(0)) / n).alias(f"exclusive_{t}")
            for t in EXCLUSIVE_TYPES
        ],
        (F.coalesce(F.col("_signup.count"), F.lit(0)) / n).alias("signup_week_share"),
        "young_share",
        "median_requests_cv",
        "median_active_share",
        "median_ips_per_day",
        moment_mean("_decline").alias("mean_decline_rate"),
        moment_mean("_virtual").alias("mean_virtual_card_share"),
    )


def _exclusive_members(
    members: DataFrame, entities: DataFrame, stats: DataFrame, min_concentration: float
) -> DataFrame:
    """Per group and exclusive entity type, how many members hold such an entity.

    Returns:
        ``group_id`` and ``_x_<type>`` for every type of :data:`EXCLUSIVE_TYPES`.
    """
    shared = stats.where(
        (F.col("degree") >= 2) & ~F.col("is_hub") & F.col("entity_type").isin(*EXCLUSIVE_TYPES)
    ).select("entity_type", "entity_id", "degree")
    held = members.select("account_id", GROUP).join(
        entities.where(F.col("entity_type").isin(*EXCLUSIVE_TYPES)), "account_id"
    )
    held = held.join(shared, ["entity_type", "entity_id"])
    # each group's holders of an entity counted by a window over one shuffle, instead of a join
    # of the held rows with their own counts, which computed them twice
    by_entity = Window.partitionBy(GROUP, "entity_type", "entity_id")
    counted = held.repartition(GROUP, "entity_type", "entity_id").withColumn(
        "_k", F.count("*").over(by_entity)
    )
    return (
        counted.where((F.col("_k") >= 2) & (F.col("_k") >= F.col("degree") * min_concentration))
        .groupBy(GROUP)
        .agg(
            *[
                F.count_distinct(F.when(F.col("entity_type") == t, F.col("account_id"))).alias(
                    f"_x_{t}"
                )
                for t in EXCLUSIVE_TYPES
            ]
        )
    )


def size_bin(size: Column | int) -> Column | int:
    """The reference bin of a group size: ``floor(log2(size))`` (random groups of 2**bin)."""
    if isinstance(size, int):
        return int(math.floor(math.log2(max(size, 1))))
    return F.floor(F.log2(F.greatest(size.cast("double"), F.lit(1.0)))).cast("int")


def random_groups(
    accounts: DataFrame, bins: list[int], n_accounts: int, settings: AnomalySettings
) -> DataFrame:
    """Groups of accounts drawn at random (seeded hashes) for every size bin in ``bins``.

    For bin ``k``, each group has about ``2**k`` members (binomial); there are
    ``settings.random_groups`` groups, fewer for large bins so that a bin never holds more than
    ``settings.random_group_budget`` memberships (at least ``settings.min_random_groups``).
    When a bin needs more memberships than there are accounts, accounts are drawn again in
    further rounds (an account can be in several groups of one bin, never twice in one group).

    Returns:
        ``account_id, group_id, size_bin``.
    """
    plan = []
    for k in bins:
        m = 2**k
        groups = max(
            settings.min_random_groups,
            min(settings.random_groups, settings.random_group_budget // m),
        )
        # each round cuts the accounts into n/m slots of about m accounts; full slots only
        slots = max(1.0, n_accounts / m)
        per_round = int(slots)
        rounds = math.ceil(groups / per_round)
        for r in range(rounds):
            plan.append((k, r, min(per_round, groups - r * per_round), slots))
    if not plan:
        return accounts.sparkSession.createDataFrame(
            [], "account_id string, group_id string, size_bin int"
        )
    rounds_df = accounts.sparkSession.createDataFrame(
        plan, "size_bin int, round int, keep int, slots double"
    )
    u = (
        F.xxhash64(F.lit(settings.seed), "size_bin", "round", "account_id").bitwiseAND(
            (1 << 52) - 1
        )
    ).cast("double") / float(1 << 52)
    slot = F.floor(u * F.col("slots")).cast("long")
    return (
        accounts.select("account_id")
        .crossJoin(F.broadcast(rounds_df))
        .withColumn("_slot", slot)
        .where(F.col("_slot") < F.col("keep"))
        .select(
            "account_id",
            F.concat_ws(
                "_",
                F.lit(RANDOM_PREFIX),
                *[F.col(c).cast("string") for c in ("size_bin", "round", "_slot")],
            ).alias(GROUP),
            "size_bin",
        )
    )
