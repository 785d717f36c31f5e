"""Neighbourhood and component features of a node graph, as Spark DataFrame transforms.

In: a node table (an id column plus numeric feature columns) and undirected edges (``src``,
``dst``; duplicates, both directions and self loops allowed). Out, one row per node:
- :func:`neighbour_pairs`: the cleaned adjacency (``<id>, neighbour_id``), both directions;
- :func:`neighbour_aggregates`: mean, max and population standard deviation of every feature over
  the node's distinct 1-hop neighbours and over its distinct neighbours within 2 hops, with the
  neighbour counts (mean and deviation are exact moments, :mod:`jobs.core.moments`: the same bits
  however Spark partitions the rows). Two backends give the same bits: ``spark`` (joins and
  aggregations) and ``local`` (sparse matrix products on the driver, for graphs whose 2-hop
  expansion fits in memory; ``auto`` picks it when it does);
- :func:`component_features`: connected-component id, size, log size and edge density.
Called by :mod:`jobs.features`, :mod:`models.evaluate_graph` (``farmwatch evaluate-graph``) and
the tests. Every function is DataFrame in, DataFrame out; no Python UDFs.

Edges that touch an id absent from the node table are ignored here; callers that read untrusted
files count and report them first (see :func:`models.evaluate_graph.read_labelled_graph`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.communities.components import connected_components
from jobs.core.config import GraphSettings
from jobs.core.moments import (
    moment_mean,
    moment_std,
    moment_sums,
)
from jobs.core.validation import require_columns
from jobs.features.neighbourhood_local import (
    NEIGHBOUR_STATISTICS,
    local_aggregates,
    neighbour_feature_names,
)

__all__ = [
    "COMPONENT_FEATURES",
    "LOCAL_MAX_PATHS",
    "NEIGHBOUR_STATISTICS",
    "component_features",
    "neighbour_aggregates",
    "neighbour_feature_names",
    "neighbour_pairs",
]

COMPONENT_FEATURES = ("component_size", "component_log_size", "component_density")
NeighbourBackend = Literal["auto", "spark", "local"]
# two-step paths (sum of squared degrees of the nodes expanded through) ``auto`` expands on the
# driver: the 1M world has 107M, which peaked at 3.3 GiB of driver (Python) memory
LOCAL_MAX_PATHS = 200_000_000


def neighbour_pairs(nodes: DataFrame, edges: DataFrame, id_column: str = "account_id") -> DataFrame:
    """Distinct undirected adjacency between known nodes, listed in both directions.

    Self loops are dropped, duplicate and reversed edges collapse to one pair, and an edge with
    an endpoint that is not in ``nodes`` is ignored.

    Args:
        nodes: one row per node, with ``id_column``.
        edges: ``src, dst`` (other columns ignored).
        id_column: name of the node id column.

    Returns:
        ``<id_column>, neighbour_id``: one row per (node, distinct neighbour).

    Raises:
        ValueError: a required column is missing.
    """
    require_columns(nodes, "nodes", (id_column,))
    require_columns(edges, "edges", ("src", "dst"))
    if id_column == "neighbour_id":
        raise ValueError("the node id column cannot be called 'neighbour_id'")
    known = nodes.select(F.col(id_column).alias("_known")).distinct()
    directed = edges.select(F.col("src").alias("_node"), F.col("dst").alias("_other"))
    both = directed.unionByName(
        directed.select(F.col("_other").alias("_node"), F.col("_node").alias("_other"))
    )
    return (
        both.where(F.col("_node") != F.col("_other"))
        .join(known, F.col("_node") == F.col("_known"), "left_semi")
        .join(known, F.col("_other") == F.col("_known"), "left_semi")
        .distinct()
        .select(F.col("_node").alias(id_column), F.col("_other").alias("neighbour_id"))
    )


def neighbour_aggregates(
    node_features: DataFrame,
    edges: DataFrame,
    feature_columns: Sequence[str],
    hops: int = 2,
    max_degree: int = 200,
    id_column: str = "account_id",
    backend: NeighbourBackend = "auto",
    local_max_paths: int = LOCAL_MAX_PATHS,
) -> DataFrame:
    """Summaries of each node's neighbours' features, over 1 hop and within 2 hops.

    Neighbourhoods (``N1``, ``N2``) are sets of distinct nodes, never the node itself:
    ``N1(v)`` is every node sharing an edge with ``v``; ``N2(v)`` is every node *within* 2 hops of
    ``v``: ``N1(v)`` plus the neighbours of each ``u`` in ``N1(v)``. A node whose degree (distinct
    known neighbours) exceeds ``max_degree`` is not expanded through: it still counts in its
    neighbours' ``N1`` and ``N2``, but its own neighbours do not reach ``N2`` through it. That
    bounds the 2-hop pairs by ``max_degree`` times twice the edge count, where a hub of degree
    ``d`` would otherwise add ``d**2``.

    For each feature ``f`` and ``h`` in 1..``hops`` the output has ``nbr<h>_mean_<f>``,
    ``nbr<h>_max_<f>`` and ``nbr<h>_std_<f>`` (population standard deviation, 0 for a single
    neighbour) plus ``nbr<h>_count``. Null feature values are skipped by the aggregates. A node
    without neighbours gets count 0 and null aggregates (callers decide how to fill: LightGBM
    treats null as missing). Edges as in :func:`neighbour_pairs`.

    ``backend="local"`` collects the nodes and edges to the driver and computes the same
    figures with sparse matrix products (:func:`_local_aggregates`), bit for bit: the moments
    are the same integer sums and the same double operations, the maximum is order-free.
    ``"auto"`` does so when the node ids are unique and non-null and the 2-hop expansion has at
    most ``local_max_paths`` two-step paths, else it runs the ``"spark"`` plan.

    Args:
        node_features: one row per node: ``id_column`` and ``feature_columns``.
        edges: ``src, dst``; undirected, duplicates and self loops allowed.
        feature_columns: numeric columns of ``node_features`` to summarise.
        hops: 1 (``N1`` only) or 2 (``N1`` and ``N2``).
        max_degree: nodes of higher degree are not expanded through for ``N2``.
        id_column: name of the node id column.
        backend: ``auto``, ``spark`` or ``local`` (see above).
        local_max_paths: the largest 2-hop expansion ``auto`` computes on the driver.

    Returns:
        ``id_column``, then for each hop ``nbr<h>_count`` (long) and the aggregates (double),
        one row per node of ``node_features``.

    Raises:
        ValueError: a required column is missing, ``hops``/``max_degree``/``backend`` is out of
            range, a value is beyond the exact-moments range, or ``local`` was asked for with
            null or repeated node ids.
    """
    require_columns(node_features, "node_features", (id_column, *feature_columns))
    require_columns(edges, "edges", ("src", "dst"))
    if id_column in feature_columns:
        raise ValueError(f"the id column {id_column!r} cannot also be a feature column")
    if hops not in (1, 2):
        raise ValueError(f"hops must be 1 or 2, got {hops}")
    if max_degree < 1:
        raise ValueError(f"max_degree must be at least 1, got {max_degree}")
    if backend not in ("auto", "spark", "local"):
        raise ValueError(f"unknown backend {backend!r}: use 'auto', 'spark' or 'local'")
    if backend != "spark":
        limit = None if backend == "local" else local_max_paths
        local = local_aggregates(
            node_features, edges, feature_columns, hops, max_degree, id_column, limit
        )
        if local is not None:
            return local

    neighbourhoods = _spark_neighbourhoods(node_features, edges, hops, max_degree, id_column)
    return _spark_aggregates(node_features, neighbourhoods, feature_columns, id_column)


def _spark_neighbourhoods(
    node_features: DataFrame, edges: DataFrame, hops: int, max_degree: int, id_column: str
) -> dict[int, DataFrame]:
    """``(_node, _neighbour)`` pairs of ``N1`` and, with ``hops`` 2, of ``N2``."""
    adjacency = neighbour_pairs(node_features, edges, id_column).select(
        F.col(id_column).alias("_node"), F.col("neighbour_id").alias("_neighbour")
    )
    neighbourhoods = {1: adjacency}
    if hops == 2:
        expandable = (
            adjacency.groupBy("_node")
            .agg(F.count("*").alias("_degree"))
            .where(F.col("_degree") <= max_degree)
            .select(F.col("_node").alias("_via"))
        )
        # (via, reached) for every via that may be expanded through
        through = adjacency.select(
            F.col("_node").alias("_via"), F.col("_neighbour").alias("_reached")
        ).join(expandable, "_via", "left_semi")
        two_steps = (
            adjacency.select("_node", F.col("_neighbour").alias("_via"))
            .join(through, "_via")
            .where(F.col("_reached") != F.col("_node"))
            .select("_node", F.col("_reached").alias("_neighbour"))
        )
        neighbourhoods[2] = adjacency.unionByName(two_steps).distinct()

    return neighbourhoods


def _spark_aggregates(
    node_features: DataFrame,
    neighbourhoods: dict[int, DataFrame],
    feature_columns: Sequence[str],
    id_column: str,
) -> DataFrame:
    """Count, exact mean and spread, and maximum of every feature over each neighbourhood."""
    values = node_features.select(
        F.col(id_column).alias("_neighbour"),
        *[F.col(c).cast("double").alias(c) for c in feature_columns],
    )
    out = node_features.select(id_column)
    for hop, pairs in neighbourhoods.items():
        aggregates = [F.count("*").alias(f"nbr{hop}_count")]
        figures = [F.col("_node"), F.col(f"nbr{hop}_count")]
        for column in feature_columns:
            # exact moments: bit-identical however the rows are partitioned (jobs.core.moments)
            tag = f"_m{hop}_{column}"
            aggregates += [
                *moment_sums(F.col(column), tag),
                F.max(column).alias(f"nbr{hop}_max_{column}"),
            ]
            figures += [
                moment_mean(tag).alias(f"nbr{hop}_mean_{column}"),
                F.col(f"nbr{hop}_max_{column}"),
                moment_std(tag).alias(f"nbr{hop}_std_{column}"),
            ]
        summary = (
            pairs.join(values, "_neighbour").groupBy("_node").agg(*aggregates).select(*figures)
        )
        out = out.join(summary, out[id_column] == summary["_node"], "left").drop("_node")

    selected = [F.col(id_column)]
    for hop in neighbourhoods:
        selected.append(F.coalesce(F.col(f"nbr{hop}_count"), F.lit(0)).alias(f"nbr{hop}_count"))
        selected += [
            F.col(f"nbr{hop}_{stat}_{column}")
            for column in feature_columns
            for stat in NEIGHBOUR_STATISTICS
        ]
    return out.select(*selected)


def component_features(
    nodes: DataFrame,
    edges: DataFrame,
    settings: GraphSettings,
    id_column: str = "account_id",
) -> DataFrame:
    """Connected component of every node with its size, log size and edge density.

    Ids are compared and returned as strings (the components backends work on string ids).
    Density is distinct undirected edges inside the component over ``size * (size - 1) / 2``,
    0 for a single node. Edges as in :func:`neighbour_pairs`.

    Args:
        nodes: one row per node, with ``id_column``.
        edges: ``src, dst``; undirected, duplicates and self loops allowed.
        settings: components backend and its iteration settings, passed through to
            :func:`jobs.communities.components.connected_components`.
        id_column: name of the node id column.

    Returns:
        ``id_column`` (string), ``component_id`` (smallest member id) and
        :data:`COMPONENT_FEATURES` (doubles), one row per distinct node.

    Raises:
        ValueError: a required column is missing.
    """
    require_columns(nodes, "nodes", (id_column,))
    require_columns(edges, "edges", ("src", "dst"))
    vertices = nodes.select(F.col(id_column).cast("string").alias("account_id")).distinct()
    links = (
        neighbour_pairs(
            vertices,
            edges.select(F.col("src").cast("string"), F.col("dst").cast("string")),
        )
        .where(F.col("account_id") < F.col("neighbour_id"))
        .select(F.col("account_id").alias("src"), F.col("neighbour_id").alias("dst"))
    )
    components, _ = connected_components(nodes.sparkSession, vertices, links, settings)
    sizes = components.groupBy("component_id").agg(F.count("*").alias("_size"))
    inside = (
        links.join(components.withColumnRenamed("account_id", "src"), "src")
        .groupBy("component_id")
        .agg(F.count("*").alias("_edges"))
    )
    size = F.col("_size").cast("double")
    pairs = size * (size - 1) / 2.0
    return (
        components.join(sizes, "component_id")
        .join(inside, "component_id", "left")
        .select(
            F.col("account_id").alias(id_column),
            "component_id",
            size.alias("component_size"),
            F.log1p(size).alias("component_log_size"),
            F.when(pairs > 0, F.coalesce(F.col("_edges"), F.lit(0)) / pairs)
            .otherwise(0.0)
            .alias("component_density"),
        )
    )
