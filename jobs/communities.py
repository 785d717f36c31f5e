"""Graph and communities stages: account graph -> components -> communities -> farm candidates.

In: the accepted tables of one run (from :mod:`jobs.ingest`). Out, under ``<run_dir>/graph``:
``account_entities``, ``entity_stats``, ``account_links`` (:func:`build_graph`), ``components``
and ``communities`` (:func:`find_communities`). Connected components over hard-key links say
which accounts are connected at all; components of ``GraphSettings.refine_min_size`` or more
accounts are split by Leiden (:mod:`jobs.refine`) over the weighted account-entity graph (hard
and soft keys, IDF weights, hubs excluded), so one giant component never becomes one farm. A
community of at least ``GraphSettings.min_farm_size`` accounts is a farm candidate with a
``farm_id``; the model then decides which members are farm accounts. The ``communities`` table is
``account_id, component_id, community_id, farm_id, community_size, component_size,
community_density, binding_entities``. Called by the nightly and training flows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.components import connected_components
from jobs.config import Settings
from jobs.graph import (
    EVIDENCE_KIND,
    LINK_ENTITY_TYPES,
    account_entities,
    account_links,
    behaviour_entities,
    community_density,
    entity_stats,
    require_columns,
    shared_entities,
    top_binding_entities,
)
from jobs.refine import refine_communities


def assign_farms(components: DataFrame, min_farm_size: int) -> DataFrame:
    """Give every community of at least ``min_farm_size`` accounts a stable ``farm_id``.

    Args:
        components: ``account_id, component_id`` and, after refinement, ``community_id``
            (without it every component is one community).
        min_farm_size: smallest community that is a farm candidate.

    Returns:
        ``account_id, component_id, community_id, community_size, component_size, farm_id``
        (``farm_id`` null when the community is too small).
    """
    require_columns(components, "components", ("account_id", "component_id"))
    if min_farm_size < 2:
        raise ValueError(f"min_farm_size must be at least 2, got {min_farm_size}")
    if "community_id" not in components.columns:
        components = components.withColumn("community_id", F.col("component_id"))
    community_sizes = components.groupBy("community_id").agg(F.count("*").alias("community_size"))
    component_sizes = components.groupBy("component_id").agg(F.count("*").alias("component_size"))
    farm_id = F.concat(F.lit("farm_"), F.substring(F.sha2(F.col("community_id"), 256), 1, 12))
    return (
        components.join(community_sizes, "community_id")
        .join(component_sizes, "component_id")
        .select(
            "account_id",
            "component_id",
            "community_id",
            "community_size",
            "component_size",
            F.when(F.col("community_size") >= min_farm_size, farm_id).alias("farm_id"),
        )
    )


def refinement_edges(
    entities: DataFrame,
    stats: DataFrame,
    soft_key_weight: float,
    strong_types: Sequence[str] = (),
    kind_weights: Mapping[str, float] | None = None,
) -> DataFrame:
    """The account-entity graph Leiden refines components on (no account-account projection).

    Args:
        entities: ``account_id, entity_type, entity_id``.
        stats: :func:`jobs.graph.entity_stats` output.
        soft_key_weight: multiplier on the IDF weight of soft-key entities.
        strong_types: entity types that are strong identifiers for the core rule.
        kind_weights: multiplier on the weight per evidence family (``network``, ``payment``,
            ...; absent families keep 1.0).

    Returns:
        ``src`` (account), ``dst`` (``type:hash`` entity node), ``weight`` (IDF-like, soft keys
        scaled), ``dst_is_entity`` (true), ``kind`` (:data:`jobs.graph.EVIDENCE_KIND`),
        ``strong`` (type in ``strong_types``) and ``degree`` (the entity's accounts) over every
        non-hub entity shared by 2+ accounts.
    """
    require_columns(stats, "entity_stats", ("entity_type", "entity_id", "degree", "weight"))
    scale = F.when(F.col("entity_type").isin(*LINK_ENTITY_TYPES), 1.0).otherwise(soft_key_weight)
    usable = stats.where((~F.col("is_hub")) & (F.col("degree") >= 2)).select(
        "entity_type",
        "entity_id",
        (F.greatest(F.col("weight"), F.lit(1e-3)) * scale).alias("weight"),
        "degree",
    )
    kind = F.lit("other")
    for entity_type, evidence in EVIDENCE_KIND.items():
        kind = F.when(F.col("entity_type") == entity_type, evidence).otherwise(kind)
    family_scale = F.lit(1.0)
    for family, factor in (kind_weights or {}).items():
        family_scale = F.when(kind == family, float(factor)).otherwise(family_scale)
    return entities.join(usable, ["entity_type", "entity_id"]).select(
        F.col("account_id").alias("src"),
        F.concat_ws(":", "entity_type", "entity_id").alias("dst"),
        (F.col("weight") * family_scale).alias("weight"),
        F.lit(True).alias("dst_is_entity"),
        kind.alias("kind"),
        F.col("entity_type").isin(*strong_types).alias("strong"),
        "degree",
    )


def describe_communities(
    communities: DataFrame, links: DataFrame, entities: DataFrame, top_entities: int
) -> DataFrame:
    """Add each community's link density and the entities that bind it.

    Args:
        communities: :func:`assign_farms` output.
        links: account graph edges ``src, dst``.
        entities: ``account_id, entity_type, entity_id``.
        top_entities: binding entities kept per farm candidate.

    Returns:
        ``communities`` plus ``community_density`` (links inside the community over its
        account pairs) and ``binding_entities`` (``type:hash (n accounts)``, most shared first;
        only for farm candidates).
    """
    require_columns(links, "account_links", ("src", "dst"))
    density = community_density(communities, links, "community_id")
    farms = communities.where(F.col("farm_id").isNotNull()).select("account_id", "community_id")
    binding = top_binding_entities(
        shared_entities(farms, entities, "community_id"), "community_id", top_entities
    )
    return communities.join(density, "community_id", "left").join(binding, "community_id", "left")


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
    entities = account_entities(
        signups, tables["payments"], tables["ip_events"], tables["api_usage"], key
    )
    if settings.graph.behaviour_entities:
        entities = entities.unionByName(
            behaviour_entities(tables["ip_events"], tables["api_usage"], settings.graph, key)
        )
    entities = _persist(spark, entities, out / "account_entities")
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
    """Connected components, Leiden refinement of large ones, farm candidates; returns figures."""
    out = run_dir / "graph"
    graph = settings.graph
    links = spark.read.parquet(str(out / "account_links"))
    entities = spark.read.parquet(str(out / "account_entities"))
    components, backend = connected_components(spark, accounts.select("account_id"), links, graph)
    components = _persist(spark, components, out / "components")
    if graph.refinement == "leiden":
        stats = spark.read.parquet(str(out / "entity_stats"))
        refined = refine_communities(
            components,
            refinement_edges(
                entities,
                stats,
                graph.soft_key_weight,
                graph.strong_evidence_types,
                graph.refine_kind_weights,
            ),
            graph.refine_min_size,
            graph.leiden_resolution,
            graph.leiden_seed,
            graph.min_evidence_kinds,
            graph.leiden_iterations,
            graph.min_entity_concentration,
        )
        # once: the describe steps below read the refinement several times, and every read
        # would run Leiden again (on the 10M world, two copies of the 2.3M-account component's
        # Leiden ran side by side and exhausted the machine's memory)
        refined = _persist(spark, refined, out / "refined")
    else:
        refined = components
    communities = _persist(
        spark,
        describe_communities(
            assign_farms(refined, graph.min_farm_size), links, entities, graph.binding_entities
        ),
        out / "communities",
    )
    farms = communities.where(F.col("farm_id").isNotNull())
    return {
        "components_backend": backend,
        "refinement": graph.refinement,
        "components": communities.select("component_id").distinct().count(),
        "communities": communities.select("community_id").distinct().count(),
        "farm_candidates": farms.select("farm_id").distinct().count(),
        "accounts_in_farm_candidates": farms.count(),
    }


def load(spark: SparkSession, run_dir: Path) -> dict[str, DataFrame]:
    """The graph tables written by :func:`run`."""
    out = run_dir / "graph"
    return {
        name: spark.read.parquet(str(out / name))
        for name in (
            "account_entities",
            "entity_stats",
            "account_links",
            "components",
            "communities",
        )
    }
