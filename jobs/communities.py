"""Graph and communities stages: account graph -> connected components -> farm candidates.

In: the accepted tables of one run (from :mod:`jobs.ingest`). Out, under ``<run_dir>/graph``:
``account_entities``, ``entity_stats``, ``account_links`` (:func:`build_graph`) and
``communities`` (``account_id, component_id, farm_id, community_size``;
:func:`find_communities`). A component with at least ``GraphSettings.min_farm_size`` accounts is
a farm candidate and gets a ``farm_id``; the model then decides which of its members are farm
accounts. Called by the nightly and training flows.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.components import connected_components
from jobs.config import Settings
from jobs.graph import account_entities, account_links, entity_stats, require_columns


def assign_farms(components: DataFrame, min_farm_size: int) -> DataFrame:
    """Give every component of at least ``min_farm_size`` accounts a stable ``farm_id``.

    Args:
        components: ``account_id, component_id``.
        min_farm_size: smallest component that is a farm candidate.

    Returns:
        ``account_id, component_id, community_size, farm_id`` (``farm_id`` null when too small).
    """
    require_columns(components, "components", ("account_id", "component_id"))
    if min_farm_size < 2:
        raise ValueError(f"min_farm_size must be at least 2, got {min_farm_size}")
    sizes = components.groupBy("component_id").agg(F.count("*").alias("community_size"))
    farm_id = F.concat(F.lit("farm_"), F.substring(F.sha2(F.col("component_id"), 256), 1, 12))
    return components.join(sizes, "component_id").select(
        "account_id",
        "component_id",
        "community_size",
        F.when(F.col("community_size") >= min_farm_size, farm_id).alias("farm_id"),
    )


def _persist(spark: SparkSession, df: DataFrame, path: Path) -> DataFrame:
    """Write and read back, which cuts the lineage (consumers would otherwise recompute it)."""
    df.write.mode("overwrite").parquet(str(path))
    return spark.read.parquet(str(path))


def build_graph(
    spark: SparkSession, settings: Settings, tables: dict[str, DataFrame], run_dir: Path
) -> dict[str, object]:
    """Write the account graph of one run (entities, entity stats, links); returns figures."""
    out = run_dir / "graph"
    key = settings.publish.entity_hash_key.get_secret_value()
    signups = tables["signups"]
    entities = _persist(
        spark,
        account_entities(
            signups, tables["payments"], tables["ip_events"], tables["api_usage"], key
        ),
        out / "account_entities",
    )
    n_accounts = signups.count()
    stats = _persist(
        spark, entity_stats(entities, settings.graph, n_accounts), out / "entity_stats"
    )
    links = _persist(spark, account_links(entities, stats), out / "account_links")
    return {
        "accounts": n_accounts,
        "entities": stats.count(),
        "hub_entities": stats.where("is_hub").count(),
        "links": links.count(),
    }


def find_communities(
    spark: SparkSession, settings: Settings, accounts: DataFrame, run_dir: Path
) -> dict[str, object]:
    """Connected components over the run's links, then farm candidates; returns figures."""
    out = run_dir / "graph"
    links = spark.read.parquet(str(out / "account_links"))
    components, backend = connected_components(
        spark, accounts.select("account_id"), links, settings.graph
    )
    communities = _persist(
        spark, assign_farms(components, settings.graph.min_farm_size), out / "communities"
    )
    farms = communities.where(F.col("farm_id").isNotNull())
    return {
        "components_backend": backend,
        "farm_candidates": farms.select("farm_id").distinct().count(),
        "accounts_in_farm_candidates": farms.count(),
    }


def load(spark: SparkSession, run_dir: Path) -> dict[str, DataFrame]:
    """The graph tables written by :func:`run`."""
    out = run_dir / "graph"
    return {
        name: spark.read.parquet(str(out / name))
        for name in ("account_entities", "entity_stats", "account_links", "communities")
    }
