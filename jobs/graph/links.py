"""Entity statistics and the links between accounts that share them.

In: ``account_entities`` (:mod:`jobs.graph.entities`) and, for groups, a membership table.
Out: ``entity_stats`` (degree, IDF-like weight and hub flag per entity), ``account_links``
(star edges through shared hard keys, never the quadratic clique), link density inside groups,
and the entities a group's members share, most shared first. Called by the graph and
communities stages, the publish stage (binding entities) and the tests.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.core.config import GraphSettings
from jobs.core.validation import require_columns
from jobs.graph.entities import LINK_ENTITY_TYPES


def entity_stats(entities: DataFrame, settings: GraphSettings, n_accounts: int) -> DataFrame:
    """Degree, IDF-like weight and hub flag for every entity two or more accounts share.

    An entity of one account (nine in ten at 1M: a device, card or behaviour bucket nobody else
    has) links nothing and binds no group, so it is left out: an entity absent from the table
    has degree 1. Every reader joins this table with the memberships, and the smaller side
    lets Spark broadcast it instead of shuffling both.

    Args:
        entities: output of :func:`account_entities`.
        settings: degree caps per entity type.
        n_accounts: accounts in the graph (for the IDF weight).

    Returns:
        ``entity_type, entity_id, degree, weight, is_hub`` with ``degree >= 2``.
    """
    require_columns(entities, "account_entities", ("account_id", "entity_type", "entity_id"))
    cap = F.lit(settings.entity_degree_cap)
    for entity_type, type_cap in settings.entity_degree_cap_by_type.items():
        cap = F.when(F.col("entity_type") == entity_type, type_cap).otherwise(cap)
    return (
        entities.groupBy("entity_type", "entity_id")
        .agg(F.count("*").alias("degree"))
        .where(F.col("degree") >= 2)
        .withColumn("weight", F.log(F.lit(float(max(n_accounts, 2))) / F.col("degree")))
        .withColumn("is_hub", F.col("degree") > cap)
    )


def account_links(entities: DataFrame, stats: DataFrame) -> DataFrame:
    """Star edges through non-hub linking entities (no quadratic hub projection).

    Returns:
        Distinct undirected edges ``src < dst`` with the ``entity_type`` that made them.
    """
    linking = stats.where(
        (~F.col("is_hub")) & (F.col("degree") >= 2) & F.col("entity_type").isin(*LINK_ENTITY_TYPES)
    ).select("entity_type", "entity_id")
    members = entities.join(linking, ["entity_type", "entity_id"])
    # each entity's anchor by a window over its members, not a join with their own minimum:
    # the memberships are read once
    by_entity = Window.partitionBy("entity_type", "entity_id")
    edges = members.select(
        "account_id", "entity_type", F.min("account_id").over(by_entity).alias("anchor")
    ).where(F.col("account_id") != F.col("anchor"))
    return (
        edges.select(
            F.least("anchor", "account_id").alias("src"),
            F.greatest("anchor", "account_id").alias("dst"),
            "entity_type",
        )
        .groupBy("src", "dst")
        .agg(F.min("entity_type").alias("entity_type"), F.count("*").alias("shared_entities"))
    )


def community_density(members: DataFrame, links: DataFrame, group: str) -> DataFrame:
    """Links with both ends inside a group over the group's account pairs.

    Args:
        members: ``account_id`` and the ``group`` column.
        links: undirected edges ``src, dst``.
        group: the grouping column (``community_id`` or ``component_id``).

    Returns:
        ``<group>, community_density`` for every group (0 for a single account).
    """
    require_columns(members, "members", ("account_id", group))
    require_columns(links, "account_links", ("src", "dst"))
    member = members.select("account_id", group)
    inside = (
        links.join(member.withColumnRenamed("account_id", "src"), "src")
        .join(member.select(F.col("account_id").alias("dst"), F.col(group).alias("_g")), "dst")
        .where(F.col(group) == F.col("_g"))
        .groupBy(group)
        .agg(F.count("*").alias("_links"))
    )
    size = F.col("_size").cast("double")
    pairs = size * (size - 1) / 2.0
    return (
        member.groupBy(group)
        .agg(F.count("*").alias("_size"))
        .join(inside, group, "left")
        .select(
            group,
            F.when(pairs > 0, F.coalesce(F.col("_links"), F.lit(0)) / pairs)
            .otherwise(0.0)
            .alias("community_density"),
        )
    )


def entities_held(members: DataFrame, entities: DataFrame, group: str) -> DataFrame:
    """Every entity each member of a group holds, once.

    Args:
        members: ``account_id`` and the ``group`` column.
        entities: ``account_id, entity_type, entity_id``.
        group: the grouping column (``farm_id``, ``community_id``).

    Returns:
        ``account_id, entity_type, entity_id, <group>``, distinct, hash-partitioned by
        ``<group>, entity_type, entity_id`` (a count per group entity needs no other shuffle).
    """
    require_columns(members, "members", ("account_id", group))
    require_columns(entities, "account_entities", ("account_id", "entity_type", "entity_id"))
    # the groups' members (farm candidates: 38,701 accounts at 1M) are broadcast, so the
    # memberships of every account (25.5M rows) are read where they are, not shuffled; the
    # rows they keep are shuffled once, by group entity, which the distinct also accepts
    return (
        entities.select("account_id", "entity_type", "entity_id")
        .join(F.broadcast(members.select("account_id", group)), "account_id")
        .repartition(group, "entity_type", "entity_id")
        .distinct()
    )


def shared_entities(held: DataFrame, group: str) -> DataFrame:
    """Entities that two or more members of a group share.

    Args:
        held: :func:`entities_held` output.
        group: its grouping column.

    Returns:
        ``<group>, entity_type, entity_id, members`` with ``members >= 2``.
    """
    return (
        held.groupBy(group, "entity_type", "entity_id")
        .agg(F.count("*").alias("members"))
        .where(F.col("members") >= 2)
    )


def farm_shared_entities(communities: DataFrame, entities: DataFrame) -> DataFrame:
    """What binds each farm candidate, member by member: the run's ``farm_entities`` table.

    Every entity two or more members of a farm candidate hold, once per member holding it,
    with how many members hold it. Written once by the communities stage; the communities
    table's binding entities, the ban list's evidence, the farms file and the run report's
    farm graphs are all read from it, so no later stage passes over every account's entities
    again.

    Args:
        communities: ``account_id, farm_id`` (null outside farm candidates).
        entities: ``account_id, entity_type, entity_id``.

    Returns:
        ``farm_id, account_id, entity_type, entity_id, members`` (``members >= 2``).
    """
    require_columns(communities, "communities", ("account_id", "farm_id"))
    members = communities.where(F.col("farm_id").isNotNull()).select("account_id", "farm_id")
    held = entities_held(members, entities, "farm_id")
    # a count over each farm entity's rows instead of a join with the counts: the memberships
    # are read once, and the rows are already partitioned by farm entity
    by_entity = Window.partitionBy("farm_id", "entity_type", "entity_id")
    return held.select(
        "farm_id",
        "account_id",
        "entity_type",
        "entity_id",
        F.count(F.lit(1)).over(by_entity).alias("members"),
    ).where(
        # rows with a null entity matched no count in the join this replaced
        (F.col("members") >= 2) & F.col("entity_type").isNotNull() & F.col("entity_id").isNotNull()
    )


def top_binding_entities(shared: DataFrame, group: str, top: int) -> DataFrame:
    """The ``top`` most shared entities per group as ``type:hash (n accounts)`` strings.

    Returns:
        ``<group>, binding_entities`` (array, most shared first, ties by type and hash).
    """
    by_size = Window.partitionBy(group).orderBy(F.desc("members"), "entity_type", "entity_id")
    label = F.format_string("%s:%s (%d accounts)", "entity_type", "entity_id", "members")
    return (
        shared.withColumn("_rank", F.row_number().over(by_size))
        .where(F.col("_rank") <= top)
        .groupBy(group)
        .agg(F.sort_array(F.collect_list(F.struct("_rank", label.alias("e")))).alias("_e"))
        .select(group, F.col("_e.e").alias("binding_entities"))
    )
