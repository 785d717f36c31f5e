"""The farm graphs the run report draws: a bounded sample of each farm's members and entities.

In: the run's ``communities`` (``account_id, farm_id``), ``scores`` (``account_id, score``),
``farm_entities`` (the entities farm members share, :func:`jobs.graph.links.farm_shared_entities`;
ids are keyed hashes) and the farms to draw. Out: small tables, one row per drawn member and one per
member-entity edge, that :mod:`jobs.report.html` lays out. A farm of 25,000 accounts is drawn as its
highest-scoring members and the entities most of them share, so the report keeps a reasonable size;
the report says how many members each graph leaves out. Called by the publish stage and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.validation import require_columns
from jobs.graph.links import shared_entities


def sample_members(
    communities: DataFrame, scores: DataFrame, farm_ids: Sequence[str], max_members: int
) -> DataFrame:
    """The ``max_members`` highest-scoring members of each farm in ``farm_ids``.

    Returns:
        ``farm_id, account_id, score, farm_size`` (``farm_size``: all its members).
    """
    require_columns(communities, "communities", ("account_id", "farm_id"))
    require_columns(scores, "scores", ("account_id", "score"))
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    members = communities.where(F.col("farm_id").isin(list(farm_ids))).select(
        "account_id", "farm_id"
    )
    by_score = Window.partitionBy("farm_id").orderBy(F.desc("score"), "account_id")
    return (
        members.join(scores.select("account_id", "score"), "account_id", "left")
        .withColumn("farm_size", F.count("*").over(Window.partitionBy("farm_id")))
        .withColumn("_rank", F.row_number().over(by_score))
        .where(F.col("_rank") <= max_members)
        .select("farm_id", "account_id", "score", "farm_size")
    )


def binding_edges(members: DataFrame, farm_entities: DataFrame, max_entities: int) -> DataFrame:
    """Edges from drawn members to the entities two or more of them share.

    Per farm, the ``max_entities`` entities shared by the most drawn members (ties by type and
    hash) are kept. An entity two drawn members share is one two farm members share, so the
    farm's shared entities (``farm_entities``) hold every edge drawn.

    Args:
        members: ``farm_id, account_id`` of the drawn members.
        farm_entities: :func:`jobs.graph.links.farm_shared_entities`.
        max_entities: entities kept per farm.

    Returns:
        ``farm_id, account_id, entity_type, entity_id``.
    """
    require_columns(
        farm_entities, "farm_entities", ("farm_id", "account_id", "entity_type", "entity_id")
    )
    entity = ["farm_id", "entity_type", "entity_id"]
    owned = farm_entities.join(
        F.broadcast(members.select("farm_id", "account_id")), ["farm_id", "account_id"]
    ).select("farm_id", "account_id", "entity_type", "entity_id")
    shared = shared_entities(owned, "farm_id")
    by_sharing = Window.partitionBy("farm_id").orderBy(
        F.desc("members"), "entity_type", "entity_id"
    )
    top = (
        shared.withColumn("_rank", F.row_number().over(by_sharing))
        .where(F.col("_rank") <= max_entities)
        .select(*entity)
    )
    return owned.join(top, entity).select("farm_id", "account_id", "entity_type", "entity_id")
