from __future__ import annotations

import random

import igraph
import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.communities import components
from jobs.communities.components import (
    OUTPUT_SCHEMA,
    BackendUnavailableError,
    components_graphframes,
    components_local,
    components_spark,
    connected_components,
    graphframes_available,
)
from jobs.core.config import GraphSettings


def igraph_partition(nodes: list[str], edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Reference answer from igraph: (node, smallest node of its component)."""
    index = {n: i for i, n in enumerate(nodes)}
    graph = igraph.Graph(n=len(nodes), edges=[(index[a], index[b]) for a, b in edges])
    out = []
    for members in graph.connected_components():
        names = sorted(nodes[m] for m in members)
        out += [(name, names[0]) for name in names]
    return sorted(out)


def frames(spark, nodes, edges):
    vertices = spark.createDataFrame([(n,) for n in nodes], "account_id string")
    edge_df = spark.createDataFrame(edges or [], "src string, dst string")
    return vertices, edge_df


def random_graph(seed: int, n: int, m: int) -> tuple[list[str], list[tuple[str, str]]]:
    rng = random.Random(seed)
    nodes = [f"acct-{rng.randrange(10**6):06d}-{i}" for i in range(n)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(m)]
    edges += edges[:5]  # duplicates
    edges += [(nodes[0], nodes[0])]  # self loop
    return nodes, edges


CASES = {
    "isolated_and_pairs": (["a", "b", "c", "d", "e"], [("a", "b"), ("d", "c")]),
    "duplicates_and_self_loops": (
        ["x", "y", "z"],
        [("x", "y"), ("y", "x"), ("x", "y"), ("z", "z")],
    ),
    "long_chain": (
        [f"n{i:03d}" for i in range(64)],
        [(f"n{i:03d}", f"n{i + 1:03d}") for i in range(63)],
    ),
    "random_sparse": random_graph(1, 150, 90),
    "random_dense": random_graph(2, 80, 160),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backends_agree_with_igraph(spark, case):
    nodes, edges = CASES[case]
    vertices, edge_df = frames(spark, nodes, edges)
    expected = spark.createDataFrame(igraph_partition(nodes, edges), OUTPUT_SCHEMA)
    assertDataFrameEqual(components_local(spark, vertices, edge_df), expected)
    # contracted to the end in Spark, and solved on the driver at once
    for finish_edges in (0, 10**6):
        assertDataFrameEqual(
            components_spark(spark, vertices, edge_df, 40, finish_edges=finish_edges), expected
        )


def test_spark_contraction_on_a_larger_graph(spark):
    # contracted to the end over many rounds: the size estimate that grew each round
    nodes, edges = random_graph(3, 3000, 2600)
    vertices, edge_df = frames(spark, nodes, edges)
    expected = spark.createDataFrame(igraph_partition(nodes, edges), OUTPUT_SCHEMA)
    assertDataFrameEqual(components_spark(spark, vertices, edge_df, 40), expected)


def test_spark_contraction_composed_in_spark(spark, monkeypatch):
    # rounds whose representatives are too many to collect stay in Spark, and so does the
    # composition of the labels
    monkeypatch.setattr(components, "_BROADCAST_MAX_NODES", 0)
    for case in ("random_dense", "duplicates_and_self_loops"):
        nodes, edges = CASES[case]
        vertices, edge_df = frames(spark, nodes, edges)
        expected = spark.createDataFrame(igraph_partition(nodes, edges), OUTPUT_SCHEMA)
        for finish_edges in (0, 60):  # to the end, or the residual graph's moves from scipy
            assertDataFrameEqual(
                components_spark(spark, vertices, edge_df, 40, finish_edges), expected
            )


def test_spark_backend_reports_non_convergence(spark):
    nodes, edges = CASES["long_chain"]
    vertices, edge_df = frames(spark, nodes, edges)
    with pytest.raises(RuntimeError, match="did not converge in 1 rounds"):
        components_spark(spark, vertices, edge_df, max_iterations=1)
    # one round of contraction then the driver: the chain's 63 links shrink to 40 or fewer
    expected = spark.createDataFrame(igraph_partition(nodes, edges), OUTPUT_SCHEMA)
    assertDataFrameEqual(components_spark(spark, vertices, edge_df, 1, finish_edges=40), expected)


def test_graphframes_backend_without_its_jar_names_the_package(spark):
    # the shared session is started without spark.packages, as `make demo` is
    assert graphframes_available(spark) is False
    vertices, edge_df = frames(spark, ["a", "b"], [("a", "b")])
    with pytest.raises(
        BackendUnavailableError, match=r'spark.packages = \["graphframes"\] \(io.graphframes:'
    ):
        components_graphframes(spark, vertices, edge_df, checkpoint_interval=2)
    with pytest.raises(BackendUnavailableError, match="graphframes-spark4_2.13:0.12.3"):
        connected_components(
            spark, vertices, edge_df, GraphSettings(components_backend="graphframes")
        )
    result, backend = connected_components(
        spark, vertices, edge_df, GraphSettings(local_max_edges=0)
    )
    assert backend == "spark"  # auto passes over the absent jar
    assertDataFrameEqual(result, spark.createDataFrame([("a", "a"), ("b", "a")], OUTPUT_SCHEMA))


def test_auto_picks_by_graph_size(spark):
    nodes, edges = CASES["isolated_and_pairs"]
    vertices, edge_df = frames(spark, nodes, edges)
    _, small = connected_components(spark, vertices, edge_df, GraphSettings())
    result, large = connected_components(spark, vertices, edge_df, GraphSettings(local_max_edges=1))
    assert (small, large) == ("local", "spark")
    expected = spark.createDataFrame(igraph_partition(nodes, edges), OUTPUT_SCHEMA)
    assertDataFrameEqual(result, expected)


def test_missing_columns_are_named(spark):
    vertices = spark.createDataFrame([("a",)], "id string")
    edges = spark.createDataFrame([("a", "b")], "src string, dst string")
    with pytest.raises(ValueError, match="account_id"):
        components_local(spark, vertices, edges)
    vertices = spark.createDataFrame([("a",)], "account_id string")
    edges = spark.createDataFrame([("a", "b")], "src string, target string")
    with pytest.raises(ValueError, match="'dst'"):
        components_spark(spark, vertices, edges, 5)
