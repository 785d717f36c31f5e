"""Neighbourhood and component features of a node graph, as Spark DataFrame transforms.

In: a node table (an id column plus numeric feature columns) and undirected edges (``src``,
``dst``; duplicates, both directions and self loops allowed). Out, one row per node:
- :func:`neighbour_pairs`: the cleaned adjacency (``<id>, neighbour_id``), both directions;
- :func:`neighbour_aggregates`: mean, max and population standard deviation of every feature over
  the node's distinct 1-hop neighbours and over its distinct neighbours within 2 hops, with the
  neighbour counts (mean and deviation are exact moments, :mod:`jobs.moments`: the same bits
  however Spark partitions the rows);
- :func:`component_features`: connected-component id, size, log size and edge density.
Called by :mod:`models.evaluate_graph` (``farmwatch evaluate-graph``) and the tests. Every
function is DataFrame in, DataFrame out; no Python UDFs.

Edges that touch an id absent from the node table are ignored here; callers that read untrusted
files count and report them first (see :func:`models.evaluate_graph.read_labelled_graph`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.components import connected_components
from jobs.config import GraphSettings
from jobs.graph import require_columns
from jobs.moments import moment_mean, moment_std, moment_sums

NEIGHBOUR_STATISTICS = ("mean", "max", "std")
COMPONENT_FEATURES = ("component_size", "component_log_size", "component_density")


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

    Args:
        node_features: one row per node: ``id_column`` and ``feature_columns``.
        edges: ``src, dst``; undirected, duplicates and self loops allowed.
        feature_columns: numeric columns of ``node_features`` to summarise.
        hops: 1 (``N1`` only) or 2 (``N1`` and ``N2``).
        max_degree: nodes of higher degree are not expanded through for ``N2``.
        id_column: name of the node id column.

    Returns:
        ``id_column``, then for each hop ``nbr<h>_count`` (long) and the aggregates (double),
        one row per node of ``node_features``.

    Raises:
        ValueError: a required column is missing, or ``hops``/``max_degree`` is out of range.
    """
    require_columns(node_features, "node_features", (id_column, *feature_columns))
    require_columns(edges, "edges", ("src", "dst"))
    if id_column in feature_columns:
        raise ValueError(f"the id column {id_column!r} cannot also be a feature column")
    if hops not in (1, 2):
        raise ValueError(f"hops must be 1 or 2, got {hops}")
    if max_degree < 1:
        raise ValueError(f"max_degree must be at least 1, got {max_degree}")

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

    values = node_features.select(
        F.col(id_column).alias("_neighbour"),
        *[F.col(c).cast("double").alias(c) for c in feature_columns],
    )
    out = node_features.select(id_column)
    for hop, pairs in neighbourhoods.items():
        aggregates = [F.count("*").alias(f"nbr{hop}_count")]
        figures = [F.col("_node"), F.col(f"nbr{hop}_count")]
        for column in feature_columns:
            # exact moments: bit-identical however the rows are partitioned (jobs.moments)
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


def neighbour_feature_names(feature_columns: Sequence[str], hops: int = 2) -> tuple[str, ...]:
    """The columns :func:`neighbour_aggregates` adds, in output order."""
    names: list[str] = []
    for hop in range(1, hops + 1):
        names.append(f"nbr{hop}_count")
        names += [
            f"nbr{hop}_{stat}_{column}"
            for column in feature_columns
            for stat in NEIGHBOUR_STATISTICS
        ]
    return tuple(names)


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
            :func:`jobs.components.connected_components`.
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
