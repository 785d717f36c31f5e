"""Communities into farm candidates: the refinement graph, farm ids and what binds each group.

In: components (or Leiden communities) of the account graph, ``account_entities``, ``entity_stats``,
``account_links`` and the farm candidates' shared entities
(:func:`jobs.graph.links.farm_shared_entities`). Out: the weighted account-entity edges Leiden
refines on (:func:`refinement_edges`), every community of ``graph.min_farm_size``+ accounts with a
stable ``farm_id`` (:func:`assign_farms`), and the ``communities`` table trust teams read
(:func:`describe_communities`: ``account_id, component_id, community_id, farm_id, community_size,
component_size, community_density, binding_entities``). Called by the communities stage
(:mod:`jobs.communities.stage`) and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.validation import require_columns
from jobs.graph.entities import EVIDENCE_KIND, LINK_ENTITY_TYPES
from jobs.graph.links import community_density, top_binding_entities


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
    communities: DataFrame, links: DataFrame, farm_entities: DataFrame, top_entities: int
) -> DataFrame:
    """Add each community's link density and the entities that bind it.

    Args:
        communities: :func:`assign_farms` output.
        links: account graph edges ``src, dst``.
        farm_entities: :func:`jobs.graph.links.farm_shared_entities` of ``communities``.
        top_entities: binding entities kept per farm candidate.

    Returns:
        ``communities`` plus ``community_density`` (links inside the community over its
        account pairs) and ``binding_entities`` (``type:hash (n accounts)``, most shared first;
        only for farm candidates).
    """
    require_columns(links, "account_links", ("src", "dst"))
    require_columns(
        farm_entities, "farm_entities", ("farm_id", "entity_type", "entity_id", "members")
    )
    density = community_density(communities, links, "community_id")
    shared = farm_entities.select("farm_id", "entity_type", "entity_id", "members").distinct()
    binding = top_binding_entities(shared, "farm_id", top_entities)
    described = communities.join(density, "community_id", "left")
    # farm ids are one per community (a hash of its id): outside farm candidates, none joins
    return described.join(binding, "farm_id", "left").select(*described.columns, "binding_entities")
