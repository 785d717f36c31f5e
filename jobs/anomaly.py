"""Group anomaly: how unlike random groups of its size each farm candidate behaves (no labels).

In: the ``communities`` table (farm candidates carry a ``farm_id``), the account features of
:func:`jobs.features.account_features`, the accepted ``api_usage`` and ``signups``, and the
graph's ``account_entities`` and ``entity_stats``. Out:

- ``group_anomaly``: one row per farm candidate with every signal of :data:`SIGNALS`, what random
  groups of its size show (their median and 99th percentile), the signal's robust z-score, the
  score of each evidence family, how many families are anomalous, and sentences a trust analyst
  can read ("97% of its 500 accounts keep one identical 10-hour schedule (random groups of 512
  accounts: at most 4%)");
- per account, :data:`GROUP_ANOMALY_FEATURES` (zero outside farm candidates), which the farm
  model reads.

Called by the features stage (:func:`jobs.features.run`) and the tests.

Why random groups and not the other communities: on a small world there are a handful of farm
candidates, most of them farms, so "unlike the other communities" would call a farm normal.
Instead the same signals are computed for groups of accounts drawn at random from the whole
population (hash-seeded, so the same lake gives the same groups anywhere), in size bins of
powers of two: what a group of that size looks like when its members have nothing in common.
Legitimate linked groups (an office, a university, CGNAT neighbours) share a network or an
email domain but not schedules, prompt templates, signup weeks or payment habits, so none of
those signals is used; a farm is unlike random groups on most of them at once. The reference is
fitted from the data (median and 1st/99th percentiles of the random groups per size bin); the
only fixed number is a floor on the spread (``anomaly.min_spread``), so a signal that random
groups never show does not turn a one-point difference into an infinite score.

What it cannot see: a farm whose accounts behave like independent ordinary users on every
signal (schedules, volumes, prompts, payments and lifecycle all blended) is not anomalous; such
an operator pays for it with slower extraction, and the model and the hard-key graph still see
what it shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import AnomalySettings
from jobs.graph import require_columns
from jobs.moments import moment_mean, moment_sums

GROUP = "group_id"
_NULL_PREFIX = "~random"


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


_RANDOM = "random groups of {ref_size:,} accounts: {bound} {reference}"
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
# what the farm model reads: how many families are anomalous and how strongly, never which
# ones (a model that learnt "farms reuse devices" would miss the operator that stopped)
GROUP_ANOMALY_FEATURES = ("group_anomalous_families", "group_anomaly")
_SHARE_FORMAT = {
    "median_ips_per_day": "{:.1f}",
}


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
    members holding such an entity of that type. Means are exact (:mod:`jobs.moments`) and
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
    shared = stats.where(
        (F.col("degree") >= 2) & ~F.col("is_hub") & F.col("entity_type").isin(*EXCLUSIVE_TYPES)
    ).select("entity_type", "entity_id", "degree")
    held = members.select("account_id", GROUP).join(
        entities.where(F.col("entity_type").isin(*EXCLUSIVE_TYPES)), "account_id"
    )
    held = held.join(shared, ["entity_type", "entity_id"])
    exclusive = (
        held.groupBy(GROUP, "entity_type", "entity_id")
        .agg(F.count("*").alias("_k"), F.max("degree").alias("_degree"))
        .where((F.col("_k") >= 2) & (F.col("_k") >= F.col("_degree") * min_concentration))
        .select(GROUP, "entity_type", "entity_id")
    )
    exclusive_members = (
        held.join(exclusive, [GROUP, "entity_type", "entity_id"])
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
                F.lit(_NULL_PREFIX),
                *[F.col(c).cast("string") for c in ("size_bin", "round", "_slot")],
            ).alias(GROUP),
            "size_bin",
        )
    )


def fit_reference(random_signals: pd.DataFrame) -> pd.DataFrame:
    """What random groups show, per size bin and signal: 1st, 50th and 99th percentiles.

    Args:
        random_signals: :func:`group_signals` of the random groups, with ``size_bin``.

    Returns:
        Index ``(size_bin, signal)``, columns ``p01, p50, p99``.
    """
    frames = []
    for k, part in random_signals.groupby("size_bin"):
        values = part[list(SIGNAL_NAMES)].astype("float64").to_numpy()
        quantiles = np.nanquantile(values, [0.01, 0.5, 0.99], axis=0)
        frames.append(
            pd.DataFrame(
                {
                    "size_bin": int(k),
                    "signal": SIGNAL_NAMES,
                    "p01": quantiles[0],
                    "p50": quantiles[1],
                    "p99": quantiles[2],
                }
            )
        )
    return pd.concat(frames).set_index(["size_bin", "signal"]).sort_index()


def score_groups(
    signals: pd.DataFrame, reference: pd.DataFrame, settings: AnomalySettings
) -> pd.DataFrame:
    """Robust z-scores of each group against random groups of its size bin, and sentences.

    ``z = direction * (value - p50) / max(spread, min_spread)`` where the spread is
    ``p99 - p50`` (``p50 - p01`` for signals where low values are farm-like), clipped to
    ``[0, z_cap]``: only farm-like deviations count. A family's score is its largest signal z;
    a family is anomalous at ``z_anomalous`` or more. ``group_anomaly`` is the mean of the three
    largest family scores.

    Args:
        signals: :func:`group_signals` of the farm candidates (``group_id, size, ...``).
        reference: :func:`fit_reference` output.
        settings: the anomaly settings.

    Returns:
        ``group_id, size, size_bin``, every signal, ``z_<signal>``, :data:`GROUP_ANOMALY_FEATURES`
        ``evidence`` (sentences of the anomalous signals, strongest first) and
        ``family_evidence`` (each anomalous family's strongest sentence).
    """
    out = signals.copy()
    available = sorted({k for k, _ in reference.index})
    if out.empty or not available:
        for column in (*(f"group_z_{f}" for f in FAMILIES), *GROUP_ANOMALY_FEATURES):
            out[column] = pd.Series(dtype="float64")
        out["size_bin"] = pd.Series(dtype="int64")
        out["evidence"] = pd.Series(dtype="object")
        out["family_evidence"] = pd.Series(dtype="object")
        return out
    bins = np.floor(np.log2(out["size"].clip(lower=1).astype("float64"))).astype(int)
    out["size_bin"] = np.clip(bins, available[0], available[-1])
    family_z = {family: np.zeros(len(out)) for family in FAMILIES}
    for signal in SIGNALS:
        ref = reference.xs(signal.name, level="signal").reindex(out["size_bin"])
        value = out[signal.name].astype("float64").to_numpy()
        center = ref["p50"].to_numpy()
        if signal.direction > 0:
            spread = ref["p99"].to_numpy() - center
        else:
            spread = center - ref["p01"].to_numpy()
        z = signal.direction * (value - center) / np.maximum(spread, settings.min_spread)
        z = np.clip(np.nan_to_num(z, nan=0.0), 0.0, settings.z_cap)
        out[f"z_{signal.name}"] = z
        out[f"ref_{signal.name}"] = (ref["p99"] if signal.direction > 0 else ref["p01"]).to_numpy()
        family_z[signal.family] = np.maximum(family_z[signal.family], z)
    for family in FAMILIES:
        out[f"group_z_{family}"] = family_z[family]
    stacked = np.column_stack([family_z[f] for f in FAMILIES])
    out["group_anomalous_families"] = (stacked >= settings.z_anomalous).sum(axis=1).astype(float)
    out["group_anomaly"] = np.sort(stacked, axis=1)[:, -3:].mean(axis=1)
    sentences = [_sentences(row, settings) for row in out.to_dict("records")]
    out["evidence"] = [[text for _, text in pairs] for pairs in sentences]
    out["family_evidence"] = [_by_family(pairs) for pairs in sentences]
    return out


def _by_family(pairs: list[tuple[Signal, str]]) -> dict[str, str]:
    """Each anomalous family's strongest sentence (``pairs`` come strongest first)."""
    out: dict[str, str] = {}
    for signal, text in pairs:
        out.setdefault(signal.family, text)
    return out


def _sentences(row: dict, settings: AnomalySettings) -> list[tuple[Signal, str]]:
    """The group's anomalous signals and their sentences, strongest first (ties: signal order)."""
    ranked = sorted(
        (s for s in SIGNALS if row[f"z_{s.name}"] >= settings.z_anomalous),
        key=lambda s: -row[f"z_{s.name}"],
    )
    texts = []
    for signal in ranked:
        value_format = _SHARE_FORMAT.get(signal.name, "{:.0%}")
        context = _RANDOM.format(
            ref_size=2 ** int(row["size_bin"]),
            bound="at most" if signal.direction > 0 else "at least",
            reference=value_format.format(row[f"ref_{signal.name}"]),
        )
        body = signal.sentence.format(
            value=row[signal.name], size=int(row["size"]), hours=int(row["schedule_hours"])
        )
        texts.append((signal, f"{body} ({context})"))
    return texts


ANOMALY_SCHEMA = T.StructType(
    [
        T.StructField("community_id", T.StringType(), False),
        T.StructField("farm_id", T.StringType(), True),
        T.StructField("size", T.LongType(), False),
        T.StructField("size_bin", T.IntegerType(), False),
        *[T.StructField(s, T.DoubleType(), True) for s in SIGNAL_NAMES],
        *[T.StructField(f"z_{s}", T.DoubleType(), False) for s in SIGNAL_NAMES],
        *[T.StructField(f"group_z_{f}", T.DoubleType(), False) for f in FAMILIES],
        *[T.StructField(c, T.DoubleType(), False) for c in GROUP_ANOMALY_FEATURES],
        T.StructField("evidence", T.ArrayType(T.StringType()), False),
        T.StructField("family_evidence", T.MapType(T.StringType(), T.StringType()), False),
    ]
)


def group_anomaly(
    spark: SparkSession,
    communities: DataFrame,
    profile: DataFrame,
    entities: DataFrame,
    stats: DataFrame,
    settings: AnomalySettings,
    min_concentration: float,
) -> DataFrame:
    """The ``group_anomaly`` table: every farm candidate scored against random groups.

    Real communities and random groups go through one :func:`group_signals` pass; the random
    groups' figures (a few hundred rows) and the candidates' (one row per farm candidate) come
    to the driver, where the reference is fitted and the z-scores computed.

    Args:
        spark: the session (to return the table as a DataFrame).
        communities: ``account_id, community_id, farm_id`` (every account).
        profile: :func:`account_profile` output (every account).
        entities: ``account_id, entity_type, entity_id``.
        stats: ``entity_type, entity_id, degree, is_hub``.
        settings: the anomaly settings.
        min_concentration: see :func:`group_signals`.

    Returns:
        One row per farm candidate, columns of :data:`ANOMALY_SCHEMA`.
    """
    require_columns(communities, "communities", ("account_id", "community_id", "farm_id"))
    candidates = communities.where(F.col("farm_id").isNotNull())
    sizes = candidates.groupBy("community_id").count().collect()
    if not sizes:
        return spark.createDataFrame([], ANOMALY_SCHEMA)
    bins = sorted({size_bin(int(r["count"])) for r in sizes})
    n_accounts = profile.count()
    drawn = random_groups(profile, bins, n_accounts, settings)
    members = candidates.select("account_id", F.col("community_id").alias(GROUP)).unionByName(
        drawn.select("account_id", GROUP)
    )
    figures = group_signals(members, profile, entities, stats, min_concentration).toPandas()
    is_random = figures[GROUP].str.startswith(_NULL_PREFIX)
    random_part = figures[is_random].copy()
    random_part["size_bin"] = random_part[GROUP].str.split("_").str[1].astype(int)
    reference = fit_reference(random_part)
    scored = score_groups(figures[~is_random].sort_values(GROUP), reference, settings)
    farm_ids = candidates.select("community_id", "farm_id").distinct().toPandas()
    scored = scored.rename(columns={GROUP: "community_id"}).merge(farm_ids, on="community_id")
    columns = [f.name for f in ANOMALY_SCHEMA.fields]
    scored["size"] = scored["size"].astype("int64")
    scored["size_bin"] = scored["size_bin"].astype("int32")
    return spark.createDataFrame(scored[columns], ANOMALY_SCHEMA)


def member_features(communities: DataFrame, anomaly: DataFrame) -> DataFrame:
    """:data:`GROUP_ANOMALY_FEATURES` for every account (zero outside farm candidates)."""
    require_columns(communities, "communities", ("account_id", "community_id"))
    require_columns(anomaly, "group_anomaly", ("community_id", *GROUP_ANOMALY_FEATURES))
    joined = communities.select("account_id", "community_id").join(
        anomaly.select("community_id", *GROUP_ANOMALY_FEATURES), "community_id", "left"
    )
    return joined.select(
        "account_id",
        *[F.coalesce(F.col(c), F.lit(0.0)).alias(c) for c in GROUP_ANOMALY_FEATURES],
    )
