"""Connected components of the account graph, with interchangeable backends.

In: ``vertices`` (``account_id``) and undirected ``edges`` (``src``, ``dst``). Out: one row per
vertex, ``account_id, component_id``, where ``component_id`` is the smallest ``account_id`` in the
component: deterministic, and identical whichever backend ran. Isolated vertices are their own
component. Called by the communities stage and the tests.

Backends:
- ``local``: edge list to the driver through Arrow, solved by ``scipy.sparse.csgraph`` (C code);
  for graphs up to ``GraphSettings.local_max_edges`` edges.
- ``spark``: randomized contraction (Bögeholz, Brand and Todor, 2020) on DataFrames: each round
  merges every node into the lowest-ranked node of its neighbourhood, so the graph shrinks round
  after round; once it has at most ``spark_finish_edges`` edges it is solved on the driver by
  scipy. A round with few enough nodes sends its representatives to every task (through the
  driver); when every round did, the labels are composed on the driver too. No Python UDFs, no
  RDDs.
- ``graphframes``: ``GraphFrame.connectedComponents`` (``graph.graphframes_algorithm``:
  ``two_phase``, ``graphx`` or ``randomized_contraction``) when the GraphFrames JVM package is on
  the classpath (``spark.packages = ["graphframes"]``, coordinates in :mod:`jobs.core.session`). It
  is detected, never assumed: :class:`BackendUnavailableError` says what is missing.
- ``auto``: ``local`` when the edge count fits, else ``graphframes`` if present, else ``spark``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as csgraph_components

from jobs.core.config import GraphSettings
from jobs.core.session import JVM_PACKAGES, is_connect, package_available

_BROADCAST_MAX_NODES = 2_000_000  # a round's representatives sent whole to every task, below
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


def _every_vertex(vertices: DataFrame, linked: DataFrame) -> DataFrame:
    """Every vertex once, with its ``component_id`` from ``linked`` or else its own id."""
    return (
        vertices.select("account_id")
        .distinct()
        .join(linked, "account_id", "left")
        .select("account_id", F.coalesce("component_id", "account_id").alias("component_id"))
    )


def components_local(spark: SparkSession, vertices: DataFrame, edges: DataFrame) -> DataFrame:
    """Solve on the driver with scipy's C implementation (edge list collected via Arrow).

    Only the edge endpoints travel to the driver and back; vertices without an edge (most
    accounts) get their own id in Spark, by a left join.
    """
    _check_inputs(vertices, edges)
    ids, roots = _solve_on_driver(edges.select("src", "dst").toPandas())
    linked = spark.createDataFrame(
        pd.DataFrame({"account_id": ids, "component_id": roots}),
        schema=OUTPUT_SCHEMA,
    )
    return _every_vertex(vertices, linked)


def _both_directions(edges: DataFrame) -> DataFrame:
    return edges.select(F.col("src").alias("a"), F.col("dst").alias("b")).unionByName(
        edges.select(F.col("dst").alias("a"), F.col("src").alias("b"))
    )


def _solve_on_driver(edge_pd: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Every node of an edge list and the smallest node of its component (scipy, C code)."""
    endpoints = pd.concat([edge_pd["src"], edge_pd["dst"]], ignore_index=True)
    codes, uniques = pd.factorize(endpoints, sort=True)  # sorted: code order = id order
    n = len(uniques)
    m = len(edge_pd)
    matrix = coo_matrix((np.ones(m, dtype=np.int8), (codes[:m], codes[m:])), shape=(n, n))
    _, labels = csgraph_components(matrix, directed=False)
    # smallest code per label = smallest id (codes are sorted)
    smallest = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    ids = np.asarray(uniques, dtype=object)
    return ids, ids[smallest[labels]]


def _priority(node: Column, round_no: int) -> Column:
    """A node's rank in one round: a seeded 64-bit hash, the id breaking (unlikely) ties."""
    return F.struct(F.xxhash64(node, F.lit(round_no)).alias("p"), node.alias("n"))


def _representatives(edges: DataFrame, round_no: int) -> DataFrame:
    """``v, r``: each node of ``edges`` (``src, dst``) and its representative for this round.

    The representative is the lowest-ranked node of the closed neighbourhood (the node itself
    included): one aggregation over both directions of the edges.
    """
    lowest = (
        _both_directions(edges).groupBy("a").agg(F.min(_priority(F.col("b"), round_no)).alias("m"))
    )
    return lowest.select(
        F.col("a").alias("v"),
        F.least(_priority(F.col("a"), round_no), F.col("m")).getField("n").alias("r"),
    )


def _contract(edges: DataFrame, reps: DataFrame) -> DataFrame:
    """Each edge's ends replaced by their representatives; loops and repeats dropped."""
    ends_src = reps.select(F.col("v").alias("src"), F.col("r").alias("to_src"))
    ends_dst = reps.select(F.col("v").alias("dst"), F.col("r").alias("to_dst"))
    return (
        edges.join(ends_src, "src")
        .join(ends_dst, "dst")
        .select(
            F.least("to_src", "to_dst").alias("src"), F.greatest("to_src", "to_dst").alias("dst")
        )
        .where(F.col("src") != F.col("dst"))
        .distinct()
    )


def _labels(vertices: DataFrame, moves: list[DataFrame]) -> DataFrame:
    """``account_id, component_id`` from each round's moves (``v, r``), composed backwards.

    ``moves`` holds at least one round. A node moved in a round may also stand, as a
    representative, in the next round's graph and move again; both paths end at the same final
    node (they are one component), so the repeated rows are equal and dropped.
    """
    final = moves[-1]
    for moved in reversed(moves[:-1]):
        later = final.select(F.col("v").alias("r"), F.col("r").alias("final"))
        final = (  # read twice by the next step: computed once
            moved.join(later, "r", "left")
            .select("v", F.coalesce("final", "r").alias("r"))
            .unionByName(final)
            .localCheckpoint()
        )
    nodes = final.unionByName(final.select(F.col("r").alias("v"), "r")).distinct()
    labelled = nodes.select(
        F.col("v").alias("account_id"),
        F.min("v").over(Window.partitionBy("r")).alias("component_id"),
    )
    return _every_vertex(vertices, labelled)


def components_spark(
    spark: SparkSession,
    vertices: DataFrame,
    edges: DataFrame,
    max_iterations: int,
    finish_edges: int = 0,
) -> DataFrame:
    """Randomized contraction on DataFrames, the residual graph optionally solved on the driver.

    Each round every node picks the lowest-ranked node of its closed neighbourhood (ranks are
    a hash seeded by the round) as its representative, and every edge is replaced by the edge
    between its ends' representatives; edges inside one group vanish, so a component shrinks
    to one node and the graph shrinks round after round (Bögeholz, Brand and Todor, ICDE 2020,
    as GraphFrames' ``randomized_contraction``). Two DataFrame steps per round (one aggregation,
    one contraction whose joins are broadcast while the round has at most
    ``_BROADCAST_MAX_NODES`` nodes), each locally checkpointed. Once the graph has at most
    ``finish_edges`` edges it is collected and solved with scipy (0: contract until no edge is
    left). When every round's moves were collected (its representatives were broadcast), the
    moves and the residual graph are solved together on the driver; else the moves are composed
    backwards into labels in Spark. On the 1M world's 1,662,002 links one round leaves 477,997
    (``benchmarks/bench_graphframes.py``).

    Args:
        spark: the session (for the driver's residual table).
        vertices: ``account_id`` of every account, isolated ones included.
        edges: undirected ``src, dst`` edges (self loops and duplicates allowed).
        max_iterations: rounds of contraction before giving up with an error.
        finish_edges: largest residual graph solved on the driver (0: never).

    Returns:
        ``account_id, component_id`` for every vertex.
    """
    _check_inputs(vertices, edges)
    if max_iterations < 1 or finish_edges < 0:
        raise ValueError("max_iterations must be positive and finish_edges not negative")
    graph = edges.select("src", "dst")
    left = graph.count()
    moves: list[pd.DataFrame | DataFrame] = []
    rounds = 0
    while left and left > finish_edges:
        if rounds == max_iterations:
            raise RuntimeError(
                f"spark components did not converge in {max_iterations} rounds "
                f"({left} edges left; graph.spark_max_iterations, graph.spark_finish_edges)"
            )
        rounds += 1
        reps = _representatives(graph, rounds).localCheckpoint()
        if reps.count() <= _BROADCAST_MAX_NODES:
            # a small round's representatives go to every task whole, and come back from the
            # driver as a fresh table: a checkpoint keeps the size estimate of the plan it
            # replaces, Spark multiplies the estimates of a join's sides, and the contracted
            # graph joins the representatives twice, so the estimate's digits would triple
            # each round (a 3,000-node graph spent minutes planning by its 13th round)
            found = reps.toPandas()
            moves.append(found[found["v"] != found["r"]])
            reps = F.broadcast(spark.createDataFrame(found, "v string, r string"))
        else:
            moves.append(reps.where(F.col("v") != F.col("r")))
        graph = _contract(graph, reps).localCheckpoint()
        left = graph.count()
    residual = graph.toPandas() if left else pd.DataFrame({"src": [], "dst": []}, dtype=object)
    if all(isinstance(m, pd.DataFrame) for m in moves):
        # every move ties a node to its representative: the moves and the residual graph
        # together have the components of the whole graph, solved in one go
        ties = [m.set_axis(["src", "dst"], axis=1) for m in moves if isinstance(m, pd.DataFrame)]
        ids, roots = _solve_on_driver(pd.concat([*ties, residual], ignore_index=True))
        linked = spark.createDataFrame(
            pd.DataFrame({"account_id": ids, "component_id": roots}), schema=OUTPUT_SCHEMA
        )
        return _every_vertex(vertices, linked)
    if left:
        ids, roots = _solve_on_driver(residual)
        moved = ids != roots
        moves.append(pd.DataFrame({"v": ids[moved], "r": roots[moved]}))
    as_tables = [
        spark.createDataFrame(m, "v string, r string") if isinstance(m, pd.DataFrame) else m
        for m in moves
    ]
    return _labels(vertices, as_tables)


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
        spark, vertices, edges, settings.spark_max_iterations, settings.spark_finish_edges
    ), backend
