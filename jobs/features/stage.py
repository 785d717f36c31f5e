"""The features stage: accepted tables and the graph -> the model's input table.

In: a :class:`jobs.core.stage.StageContext` (the run's accepted tables, graph and communities
tables, the ``graph``, ``anomaly`` and ``ingest`` settings, the window end). Out, under the
run's layout: ``account_features``, ``feature_reference.json`` (what ordinary accounts show,
quoted by the reasons), ``group_anomaly`` (farm candidates against random groups of their
size, :mod:`jobs.features.anomaly`) and ``features`` (:mod:`jobs.features.table`); the summary
counts accounts and anomalous farm candidates. Called by the nightly and training flows'
features task and the tests.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.sql import functions as F

from jobs.communities.stage import load as load_graph
from jobs.core.lake import persist
from jobs.core.stage import StageContext
from jobs.core.timing import mark
from jobs.features.account import ACCOUNT_FEATURES, account_features, known_bad_members
from jobs.features.anomaly import group_anomaly
from jobs.features.group_signals import account_profile
from jobs.features.neighbourhood import neighbour_aggregates
from jobs.features.table import NEIGHBOUR_SOURCE_FEATURES, feature_table
from jobs.ingest.stage import load_accepted
from jobs.scoring.reasons import feature_reference


def run(ctx: StageContext) -> dict[str, Any]:
    """Compute and write the run's features; returns how many accounts and anomalous groups."""
    spark, settings, layout = ctx.spark, ctx.settings, ctx.layout
    tables = load_accepted(spark, layout)
    graph = load_graph(spark, layout)
    accounts = account_features(
        tables["signups"],
        tables["payments"],
        tables["ip_events"],
        tables["api_usage"],
        graph["account_entities"],
        graph["entity_stats"],
        ctx.window_end,
    )
    accounts = persist(accounts, layout.account_features)
    reference = feature_reference(accounts, ACCOUNT_FEATURES, settings.anomaly.seed)
    layout.feature_reference.write_text(json.dumps(reference, indent=1))
    profile = account_profile(
        accounts, tables["api_usage"], tables["signups"], settings.ingest.lookback_days
    )

    def anomaly_table():
        table = group_anomaly(
            spark,
            graph["communities"],
            profile,
            graph["account_entities"],
            graph["entity_stats"],
            settings.anomaly,
            settings.graph.min_entity_concentration,
            population=accounts,
        )
        return persist(table, layout.group_anomaly)

    # The group anomaly is Spark work on both cores; the local neighbourhood backend is mostly
    # sparse products on the driver, on one core. Neither reads the other's output, so the
    # anomaly runs in a second thread while the driver computes the neighbourhoods. A failure on
    # either side fails the stage once the other side is done (leaving the pool waits for it).
    # The thread has no part clock: both are timed as one part.
    with ThreadPoolExecutor(1, thread_name_prefix="group-anomaly") as pool:
        pending = pool.submit(anomaly_table)
        neighbours = neighbour_aggregates(
            accounts.select("account_id", *NEIGHBOUR_SOURCE_FEATURES),
            graph["account_links"],
            NEIGHBOUR_SOURCE_FEATURES,
            hops=2,
            max_degree=settings.graph.neighbour_max_degree,
            backend=settings.graph.neighbour_backend,
            local_max_paths=settings.graph.neighbour_local_max_paths,
        )
        anomaly = pending.result()
    # the local backend computed the neighbourhoods above; Spark's run in "features"
    mark("group_anomaly_and_neighbourhood")
    known_bad = known_bad_members(graph["communities"], tables["labels"], ctx.window_end)
    features = feature_table(accounts, graph["communities"], anomaly, neighbours, known_bad)
    features = persist(features, layout.features)
    anomalous = anomaly.where(
        F.col("group_anomalous_families") >= settings.bans.anomaly_review_families
    ).count()
    return {"accounts": features.count(), "anomalous_farm_candidates": anomalous}
