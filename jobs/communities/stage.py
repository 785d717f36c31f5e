"""The communities stage: links -> components -> Leiden communities -> farm candidates.

In: a :class:`jobs.core.stage.StageContext` (the run's accepted signups and graph tables, the
``graph`` settings). Out, under the run's layout: ``components``, ``refined`` (when Leiden
runs), ``farm_entities`` (what binds each farm candidate, member by member:
:func:`jobs.graph.links.farm_shared_entities`) and ``communities``
(:func:`jobs.communities.assign.describe_communities`), and a summary
(components backend, counts, farm candidates, Leiden tasks and the largest one's accounts).
Connected components over hard-key links say which accounts are connected at all; components of
``graph.refine_min_size`` or more accounts are split by Leiden (:mod:`jobs.communities.refine`)
over the weighted account-entity graph, so one giant component never becomes one farm; one
above ``graph.refine_max_task_accounts`` is cut first, its rounds written under
``graph/refine_cut``. Called by the nightly and training flows' communities task and the tests.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.communities.assign import assign_farms, describe_communities, refinement_edges
from jobs.communities.components import connected_components
from jobs.communities.refine import refine_communities
from jobs.core.lake import persist
from jobs.core.layout import RunLayout
from jobs.core.stage import StageContext
from jobs.graph.links import farm_shared_entities
from jobs.ingest.stage import load_accepted


def run(ctx: StageContext) -> dict[str, Any]:
    """Connected components, Leiden refinement of large ones, farm candidates; returns figures."""
    spark, layout, graph = ctx.spark, ctx.layout, ctx.settings.graph
    accounts = load_accepted(spark, layout)["signups"]
    links = spark.read.parquet(str(layout.account_links))
    entities = spark.read.parquet(str(layout.account_entities))
    components, backend = connected_components(spark, accounts.select("account_id"), links, graph)
    components = persist(components, layout.components)
    tasks: dict[str, Any] = {}
    if graph.refinement == "leiden":
        stats = spark.read.parquet(str(layout.entity_stats))
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
            graph.refine_max_task_accounts,
            lambda vertices, edges: connected_components(spark, vertices, edges, graph)[0],
            tasks,
            str(layout.refine_cut),
        )
        # once: the describe steps below read the refinement several times, and every read
        # would run Leiden again (on the 10M world, two copies of the 2.3M-account component's
        # Leiden ran side by side and exhausted the machine's memory)
        refined = persist(refined, layout.refined)
    else:
        refined = components
    assigned = assign_farms(refined, graph.min_farm_size)
    farm_entities = persist(farm_shared_entities(assigned, entities), layout.farm_entities)
    communities = persist(
        describe_communities(assigned, links, farm_entities, graph.binding_entities),
        layout.communities,
    )
    farms = communities.where(F.col("farm_id").isNotNull())
    return {
        "components_backend": backend,
        "refinement": graph.refinement,
        "components": communities.select("component_id").distinct().count(),
        "communities": communities.select("community_id").distinct().count(),
        "farm_candidates": farms.select("farm_id").distinct().count(),
        "accounts_in_farm_candidates": farms.count(),
        **tasks,
    }


def load(spark: SparkSession, layout: RunLayout) -> dict[str, DataFrame]:
    """The graph and communities tables of a run."""
    return {
        "account_entities": spark.read.parquet(str(layout.account_entities)),
        "entity_stats": spark.read.parquet(str(layout.entity_stats)),
        "account_links": spark.read.parquet(str(layout.account_links)),
        "components": spark.read.parquet(str(layout.components)),
        "communities": spark.read.parquet(str(layout.communities)),
    }


def load_farm_entities(spark: SparkSession, layout: RunLayout) -> DataFrame:
    """The run's ``farm_entities`` table (:func:`jobs.graph.links.farm_shared_entities`).

    A run resumed after an upgrade may have finished its communities stage before the table
    existed; then it is computed from the run's communities and entities, as that stage would.
    """
    if layout.farm_entities.exists():
        return spark.read.parquet(str(layout.farm_entities))
    return farm_shared_entities(
        spark.read.parquet(str(layout.communities)),
        spark.read.parquet(str(layout.account_entities)),
    )
