"""Connected components of the account graph, with interchangeable backends.

In: ``vertices`` (``account_id``) and undirected ``edges`` (``src``, ``dst``). Out: one row per
vertex, ``account_id, component_id``, where ``component_id`` is the smallest ``account_id`` in the
component: deterministic, and identical whichever backend ran. Isolated vertices are their own
component. Called by the communities stage and the tests.

Backends:
- ``local``: edge list to the driver through Arrow, solved by ``scipy.sparse.csgraph`` (C code);
  for graphs up to ``GraphSettings.local_max_edges`` edges.
- ``spark``: alternating large-star / small-star (Kiveris et al., 2014) on DataFrames with a local
  checkpoint every ``spark_checkpoint_interval`` rounds; each star step is one window (no
  aggregate-then-join), duplicates are dropped once per round; no Python UDFs, no RDDs.
- ``graphframes``: ``GraphFrame.connectedComponents`` (``graph.graphframes_algorithm``:
  ``two_phase``, ``graphx`` or ``randomized_contraction``) when the GraphFrames JVM package is on
  the classpath (``spark.packages = ["graphframes"]``, coordinates in :mod:`jobs.core.session`). It
  is detected, never assumed: :class:`BackendUnavailableError` says what is missing.
- ``auto``: ``local`` when the edge count fits, else ``graphframes`` if present, else ``spark``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as csgraph_components

from jobs.core.config import GraphSettings
from jobs.core.session import JVM_PACKAGES, is_connect, package_available

OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType(), False),
        T.StructField("component_id", T.StringType(), False),
    ]
)


class BackendUnavailableError(RuntimeError):
    """The requested components backend cannot run in this Spark session."""


def _check_inputs(vertices: DataFrame, edges: DataFrame) -> None:
    if "account_id" not in vertices.columns:
        raise ValueError("vertices is missing column 'account_id'")
    for column in ("src", "dst"):
        if column not in edges.columns:
            raise ValueError(f"edges is missing column {column!r}")


def graphframes_available(spark: SparkSession) -> bool:
    """True when the GraphFrames JVM classes can be loaded by this (classic) session."""
    return package_available(spark, "graphframes")


def components_local(spark: SparkSession, vertices: DataFrame, edges: DataFrame) -> DataFrame:
    """Solve on the driver with scipy's C implementation (edge list collected via Arrow).

    Only the edge endpoints travel to the driver and back; vertices without an edge (most
    accounts) get their own id in Spark, by a left join.
    """
    _check_inputs(vertices, edges)
    edge_pd = edges.select("src", "dst").toPandas()
    endpoints = pd.concat([edge_pd["src"], edge_pd["dst"]], ignore_index=True)
    codes, uniques = pd.factorize(endpoints, sort=True)  # sorted: code order = id order
    n = len(uniques)
    m = len(edge_pd)
    matrix = coo_matrix((np.ones(m, dtype=np.int8), (codes[:m], codes[m:])), shape=(n, n))
    _, labels = csgraph_components(matrix, directed=False)
    # smallest code per label = smallest account id (codes are sorted)
    smallest = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    ids = np.asarray(uniques, dtype=object)
    linked = spark.createDataFrame(
        pd.DataFrame({"account_id": ids, "component_id": ids[smallest[labels]]}),
        schema=OUTPUT_SCHEMA,
    )
    return (
        vertices.select("account_id")
        .distinct()
        .join(linked, "account_id", "left")
        .select("account_id", F.coalesce("component_id", "account_id").alias("component_id"))
    )


def _both_directions(edges: DataFrame) -> DataFrame:
    return edges.select(F.col("src").alias("a"), F.col("dst").alias("b")).unionByName(
        edges.select(F.col("dst").alias("a"), F.col("src").alias("b"))
    )


def _large_star(edges: DataFrame) -> DataFrame:
    """Attach every larger neighbour of a node to the node's smallest neighbourhood member.

    The minimum is a window over the node's edges (one shuffle, no aggregate-then-join); the
    duplicates this leaves are removed once per round, after the small star.
    """
    both = _both_directions(edges).withColumn(
        "m", F.least(F.min("b").over(Window.partitionBy("a")), F.col("a"))
    )
    return both.where(F.col("b") > F.col("a")).select(
        F.col("b").alias("src"), F.col("m").alias("dst")
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Attach a node and its smaller neighbours to the smallest of those neighbours."""
    lower = (
        _both_directions(edges)
        .where(F.col("b") < F.col("a"))
        .withColumn("m", F.min("b").over(Window.partitionBy("a")))
    )
    neighbours = lower.select(F.col("b").alias("src"), F.col("m").alias("dst"))
    centres = lower.select(F.col("a").alias("src"), F.col("m").alias("dst"))
    return neighbours.unionByName(centres).where(F.col("src") != F.col("dst")).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """No node is both a leaf (``src``) and a centre (``dst``): one shuffle, stops at one hit."""
    roles = edges.select(F.col("dst").alias("node"), F.lit(1).alias("role")).unionByName(
        edges.select(F.col("src").alias("node"), F.lit(2).alias("role"))
    )
    chained = roles.groupBy("node").agg(F.countDistinct("role").alias("roles"))
    return chained.where(F.col("roles") == 2).limit(1).count() == 0


def components_spark(
    spark: SparkSession,
    vertices: DataFrame,
    edges: DataFrame,
    max_iterations: int,
    checkpoint_interval: int,
) -> DataFrame:
    """Alternating large-star / small-star on DataFrames until the graph is a forest of stars.

    Args:
        spark: the session (unused, kept for a uniform backend signature).
        vertices: ``account_id`` of every account, isolated ones included.
        edges: undirected ``src, dst`` edges (self loops and duplicates allowed).
        max_iterations: rounds before giving up with an error.
        checkpoint_interval: rounds between local checkpoints that cut the lineage.

    Returns:
        ``account_id, component_id`` for every vertex.
    """
    del spark
    _check_inputs(vertices, edges)
    if max_iterations < 1 or checkpoint_interval < 1:
        raise ValueError("max_iterations and checkpoint_interval must be positive")
    current = (
        edges.select(F.least("src", "dst").alias("src"), F.greatest("src", "dst").alias("dst"))
        .where(F.col("src") != F.col("dst"))
        .distinct()
        .localCheckpoint()
    )
    for iteration in range(1, max_iterations + 1):
        current = _small_star(_large_star(current))
        if iteration % checkpoint_interval and iteration != max_iterations:
            continue
        current = current.localCheckpoint()  # cuts the lineage; the check below reads it
        if _is_star_forest(current):  # no centre hangs off a smaller centre: converged
            break
    else:
        raise RuntimeError(f"spark components did not converge in {max_iterations} rounds")
    parents = current.groupBy("src").agg(F.min("dst").alias("component_id"))
    return (
        vertices.select("account_id")
        .distinct()
        .join(parents.withColumnRenamed("src", "account_id"), "account_id", "left")
        .select("account_id", F.coalesce("component_id", "account_id").alias("component_id"))
    )


def components_graphframes(
    spark: SparkSession,
    vertices: DataFrame,
    edges: DataFrame,
    checkpoint_interval: int,
    algorithm: str = "two_phase",
    max_iterations: int = 60,
) -> DataFrame:
    """GraphFrames' connected components, relabelled to the common output contract.

    Args:
        spark: a classic session with the GraphFrames JVM package.
        vertices: ``account_id`` of every account, isolated ones included.
        edges: undirected ``src, dst`` edges (self loops and duplicates allowed).
        checkpoint_interval: rounds between (local) checkpoints.
        algorithm: ``two_phase``, ``graphx`` or ``randomized_contraction``.
        max_iterations: Pregel supersteps for ``graphx`` (the others run to convergence).

    Returns:
        ``account_id, component_id`` for every vertex.
    """
    _check_inputs(vertices, edges)
    if not graphframes_available(spark):
        where = (
            "Spark Connect: the server needs the GraphFrames Connect plugin"
            if is_connect(spark)
            else 'add spark.packages = ["graphframes"] ('
            + ", ".join(JVM_PACKAGES["graphframes"].coordinates)
            + ") on a classic Spark session"
        )
        raise BackendUnavailableError(
            f"graphframes backend: the GraphFrames JVM package is not on the classpath ({where})"
        )
    from graphframes import GraphFrame  # imported only where the jar exists

    graph = GraphFrame(
        vertices.select(F.col("account_id").alias("id")).distinct(), edges.select("src", "dst")
    )
    labelled = graph.connectedComponents(
        algorithm=algorithm,
        checkpointInterval=checkpoint_interval,
        broadcastThreshold=-1,  # let adaptive query execution handle skewed joins
        use_local_checkpoints=True,
        max_iter=max_iterations,
    )
    smallest = labelled.groupBy("component").agg(F.min("id").alias("component_id"))
    return labelled.join(smallest, "component").select(
        F.col("id").alias("account_id"), "component_id"
    )


def connected_components(
    spark: SparkSession, vertices: DataFrame, edges: DataFrame, settings: GraphSettings
) -> tuple[DataFrame, str]:
    """Run the configured backend; returns the components and the backend actually used."""
    backend = settings.components_backend
    if backend == "auto":
        n_edges = edges.count()
        if n_edges <= settings.local_max_edges:
            backend = "local"
        elif graphframes_available(spark):
            backend = "graphframes"
        else:
            backend = "spark"
    if backend == "local":
        return components_local(spark, vertices, edges), backend
    if backend == "graphframes":
        return components_graphframes(
            spark,
            vertices,
            edges,
            settings.spark_checkpoint_interval,
            settings.graphframes_algorithm,
            settings.spark_max_iterations,
        ), backend
    return components_spark(
        spark, vertices, edges, settings.spark_max_iterations, settings.spark_checkpoint_interval
    ), backend
