"""The model's input table: account, neighbourhood, group and label-derived features joined.

In: :func:`jobs.features.account.account_features`, the ``communities`` table, the
``group_anomaly`` table (:mod:`jobs.features.anomaly`), the neighbourhood aggregates
(:mod:`jobs.features.neighbourhood`) and :func:`jobs.features.account.known_bad_members`. Out:
one row per account: ``account_id, farm_id, component_id``, :data:`FEATURE_COLUMNS` (doubles,
nulls 0) and :data:`GROUP_EVIDENCE`. Called by the features stage and the tests.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.validation import require_columns
from jobs.features.account import ACCOUNT_FEATURES, KNOWN_BAD_FEATURES
from jobs.features.anomaly import GROUP_ANOMALY_FEATURES
from jobs.features.neighbourhood import neighbour_feature_names

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

NEIGHBOUR_FEATURES = neighbour_feature_names(NEIGHBOUR_SOURCE_FEATURES, hops=2)

FEATURE_COLUMNS: tuple[str, ...] = (
    ACCOUNT_FEATURES + NEIGHBOUR_FEATURES + GROUP_ANOMALY_FEATURES + KNOWN_BAD_FEATURES
)

# per account: what its farm candidate does that random groups of its size do not (sentences,
# strongest first; empty outside anomalous farm candidates)
GROUP_EVIDENCE = "group_evidence"


def feature_table(
    accounts: DataFrame,
    communities: DataFrame,
    anomaly: DataFrame | None = None,
    neighbours: DataFrame | None = None,
    known_bad: DataFrame | None = None,
) -> DataFrame:
    """Join account, neighbourhood and group features into the model's input table.

    Args:
        accounts: :func:`jobs.features.account.account_features` output.
        communities: ``account_id, component_id, community_id, farm_id``.
        anomaly: the ``group_anomaly`` table of :func:`jobs.features.anomaly.group_anomaly`
            (missing: the group anomaly features are 0).
        neighbours: :func:`jobs.features.neighbourhood.neighbour_aggregates` over
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
