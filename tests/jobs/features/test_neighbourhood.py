from __future__ import annotations

import math
import random

import pytest

from jobs.features.neighbourhood import neighbour_aggregates, neighbour_feature_names


def _bits(rows):
    """Rows with every float as its exact bits (NaN included), sorted."""

    def cell(v):
        return ("f", v.hex()) if isinstance(v, float) else ("v", v)

    return sorted(tuple(cell(v) for v in r) for r in rows)


def _graph(seed: int, n: int = 160, m: int = 700):
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        draw = rng.random()
        x = None if draw < 0.1 else float("nan") if draw < 0.13 else rng.uniform(-900, 900)
        x = 3.0 if draw > 0.9 else x
        y = rng.choice([None, rng.random() / 3, rng.uniform(0, 1e6)])
        nodes.append((f"n{i:03d}", x, y))
    edges = [(f"n{rng.randrange(n):03d}", f"n{rng.randrange(n):03d}") for _ in range(m)]
    hub = "n007"  # above max_degree: counted as a neighbour, never expanded through
    edges += [(hub, f"n{i:03d}") for i in range(0, n, 2)]
    edges += [("n001", "n001"), ("n002", "n003"), ("n003", "n002"), ("n002", "n003")]
    edges += [("n004", "ghost"), ("ghost", "n005")]  # an unknown endpoint is ignored
    return nodes, edges


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_local_backend_gives_the_spark_backends_bits(spark, seed):
    nodes, edges = _graph(seed)
    nodes.append(("lonely", 1.0, 2.0))  # no edges at all
    node_df = spark.createDataFrame(nodes, "account_id string, x double, y double")
    edge_df = spark.createDataFrame(edges, "src string, dst string")
    for hops in (1, 2):
        got = {}
        for backend in ("spark", "local"):
            table = neighbour_aggregates(
                node_df, edge_df, ["x", "y"], hops=hops, max_degree=30, backend=backend
            )
            assert table.columns == ["account_id", *neighbour_feature_names(["x", "y"], hops)]
            got[backend] = table.collect()
        assert len(got["local"]) == len(nodes)
        assert _bits(got["local"]) == _bits(got["spark"])
    lonely = next(r for r in got["local"] if r["account_id"] == "lonely")
    assert lonely["nbr2_count"] == 0 and lonely["nbr2_mean_x"] is None
    # the graph has NaN, null-only and ordinary neighbourhoods, so all branches ran
    means = [r["nbr1_mean_x"] for r in got["local"]]
    assert any(v is not None and math.isnan(v) for v in means)
    assert any(v is not None and not math.isnan(v) for v in means)


def test_auto_runs_locally_only_within_its_budget_and_with_unique_ids(spark):
    nodes, edges = _graph(4)
    node_df = spark.createDataFrame(nodes, "account_id string, x double, y double")
    edge_df = spark.createDataFrame(edges, "src string, dst string")
    spark_plan = neighbour_aggregates(node_df, edge_df, ["x"], backend="spark")
    local = neighbour_aggregates(node_df, edge_df, ["x"], backend="auto")
    over_budget = neighbour_aggregates(node_df, edge_df, ["x"], local_max_paths=10)
    # the driver's result is an in-memory table; the Spark plan joins the edges
    assert "LocalTableScan" in local._jdf.queryExecution().executedPlan().toString()
    assert "LocalTableScan" not in over_budget._jdf.queryExecution().executedPlan().toString()
    assert _bits(local.collect()) == _bits(over_budget.collect()) == _bits(spark_plan.collect())
    twice = node_df.unionByName(node_df.limit(1))
    repeated = neighbour_aggregates(twice, edge_df, ["x"])  # auto: the Spark plan
    assert "LocalTableScan" not in repeated._jdf.queryExecution().executedPlan().toString()
    with pytest.raises(ValueError, match="unique, non-null node ids"):
        neighbour_aggregates(twice, edge_df, ["x"], backend="local")
    with pytest.raises(ValueError, match="unknown backend"):
        neighbour_aggregates(node_df, edge_df, ["x"], backend="gpu")


def test_the_local_backend_refuses_values_beyond_the_exact_range(spark):
    node_df = spark.createDataFrame([("a", 1.0), ("b", 2e6)], "account_id string, x double")
    edge_df = spark.createDataFrame([("a", "b")], "src string, dst string")
    with pytest.raises(ValueError, match="beyond"):
        neighbour_aggregates(node_df, edge_df, ["x"], backend="local")


def test_integer_ids_and_features_work_locally(spark):
    node_df = spark.createDataFrame([(1, 10), (2, 20), (3, None), (4, 40)], "id long, x long")
    edge_df = spark.createDataFrame([(1, 2), (2, 3), (3, 4)], "src long, dst long")
    got = {
        b: neighbour_aggregates(node_df, edge_df, ["x"], id_column="id", backend=b).collect()
        for b in ("spark", "local")
    }
    assert _bits(got["local"]) == _bits(got["spark"])
    row = next(r for r in got["local"] if r["id"] == 1)
    assert (row["nbr1_count"], row["nbr1_mean_x"], row["nbr2_count"]) == (1, 20.0, 2)
    assert row["nbr2_max_x"] == 20.0 and row["nbr2_std_x"] == 0.0
