"""Aggregates that do not depend on how Spark partitions the rows.

Spark's ``avg`` and ``stddev_pop`` of non-integer doubles merge partial results in whatever
order the partitions arrive, so the last bits of a feature change with the cluster layout; a
model threshold that falls between two such values then flips a score, and the same input
publishes a different ban list on a cluster than in local mode. The exact moments sum
fixed-point integers instead, which any order adds to the same total.
"""

from __future__ import annotations

import math
import random

import pytest
from pyspark.sql import functions as F

from jobs.core.moments import MAX_ABS_VALUE, moment_mean, moment_std, moment_sums
from jobs.features.neighbourhood import neighbour_aggregates


def _shuffled_twice(spark, rows, schema):
    """The same rows as one ordered partition and as seven shuffled ones."""
    ordered = spark.createDataFrame(rows, schema).coalesce(1)
    scrambled = spark.createDataFrame(random.Random(4).sample(rows, len(rows)), schema)
    return ordered, scrambled.repartition(7)


def _exact(rows):
    return sorted(tuple(r) for r in rows)


def test_neighbour_aggregates_are_bit_identical_under_any_partitioning(spark):
    rng = random.Random(11)
    nodes = [(f"n{i:03d}", rng.uniform(0, 900), rng.random() / 3) for i in range(300)]
    edges = [(f"n{rng.randrange(300):03d}", f"n{rng.randrange(300):03d}") for _ in range(1500)]
    node_a, node_b = _shuffled_twice(spark, nodes, "account_id string, x double, y double")
    edge_a, edge_b = _shuffled_twice(spark, edges, "src string, dst string")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "1")
        first = neighbour_aggregates(
            node_a, edge_a, ["x", "y"], max_degree=40, backend="spark"
        ).collect()
        spark.conf.set("spark.sql.shuffle.partitions", "5")
        second = neighbour_aggregates(
            node_b, edge_b, ["x", "y"], max_degree=40, backend="spark"
        ).collect()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert _exact(first) == _exact(second)


def test_exact_moments_match_the_textbook_figures(spark):
    rng = random.Random(5)
    values = {g: [rng.uniform(-50, 500) for _ in range(rng.randrange(1, 40))] for g in range(30)}
    values[30] = [0.3] * 7  # a constant group has no spread, not rounding noise
    values[31] = [None, 2.5]  # nulls are skipped, as avg and stddev_pop skip them
    rows = [(g, v) for g, vs in values.items() for v in vs]
    got = (
        spark.createDataFrame(rows, "g int, v double")
        .groupBy("g")
        .agg(*moment_sums(F.col("v"), "_v"))
        .select("g", moment_mean("_v").alias("mean"), moment_std("_v").alias("std"))
        .collect()
    )
    for row in got:
        present = [v for v in values[row["g"]] if v is not None]
        mean = sum(present) / len(present)
        std = math.sqrt(sum((v - mean) ** 2 for v in present) / len(present))
        assert row["mean"] == pytest.approx(mean, abs=1e-6)
        assert row["std"] == pytest.approx(std, abs=1e-5)
    by_group = {row["g"]: row for row in got}
    assert by_group[30]["std"] == 0.0
    assert by_group[31]["std"] == 0.0 and by_group[31]["mean"] == 2.5


def test_values_beyond_the_exact_range_are_refused_not_summed_wrongly(spark):
    frame = spark.createDataFrame([(1, MAX_ABS_VALUE * 2), (1, 1.0)], "g int, v double")
    with pytest.raises(Exception, match="moments"):
        frame.groupBy("g").agg(*moment_sums(F.col("v"), "_v")).collect()
