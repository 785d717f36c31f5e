"""Community refinement: split large or loose components into dense communities with Leiden.

In: ``components`` (``account_id, component_id``, every account) and a weighted refinement graph
``edges`` (``src, dst, weight, dst_is_entity``) whose ``src`` is always an account. ``dst`` is
either another account (a unipartite graph, as in the LFR tests) or an entity node of the
account-entity graph (``dst_is_entity`` true), so a hub never has to be projected into the
quadratic account-account clique. Out: ``account_id, component_id, community_id`` for every
account, where ``community_id`` is the smallest ``account_id`` of the community (deterministic).

Components smaller than ``refine_min_size`` stay whole. Each larger component is one group of a
Spark ``applyInPandas``: the group's edges go to igraph's C Leiden (modularity, weighted, seeded,
nodes in sorted order) on an executor, so the work is parallel across components and never
leaves Spark. A legitimate giant component (an office, a family card, a proxy pool shared by
several farms) is thereby split into its dense parts instead of becoming one farm. Called by
:mod:`jobs.communities` and the tests.
"""

from __future__ import annotations

import random

import igraph
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.graph import require_columns

OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType(), False),
        T.StructField("component_id", T.StringType(), False),
        T.StructField("community_id", T.StringType(), False),
    ]
)
_GROUP_SCHEMA = T.StructType(
    [
        T.StructField("component_id", T.StringType(), False),
        T.StructField("account_id", T.StringType(), False),
        T.StructField("community_id", T.StringType(), False),
    ]
)


def leiden_partition(
    edges: pd.DataFrame,
    resolution: float,
    seed: int,
    min_evidence_kinds: int = 1,
    iterations: int = 2,
) -> pd.DataFrame:
    """Leiden (modularity) on one weighted graph held in pandas, then the core rule.

    Args:
        edges: ``src, dst, weight, dst_is_entity`` and optionally ``kind`` (the evidence family
            of the edge: network, payment, device, identity, behaviour) of one component.
        resolution: modularity resolution (higher gives smaller communities).
        seed: seed for igraph's random number generator (results are deterministic).
        min_evidence_kinds: an account stays in its community only if it shares entities with
            other members in at least this many kinds of evidence; otherwise it stands alone
            (a user who merely shares a residential proxy IP with a farm is not in the farm).
        iterations: Leiden iterations (igraph's default is 2; negative runs until the partition
            is stable, which on a large loose component can take many minutes).

    Returns:
        ``account_id, community_id`` for every account node (entity nodes are dropped), where
        ``community_id`` is the smallest account id of its community.
    """
    is_entity = edges["dst_is_entity"].to_numpy(dtype=bool)
    dst = edges["dst"].astype(str).where(~is_entity, "~" + edges["dst"].astype(str))
    # hash-based factorize, then sort only the distinct names: node order (and so the seeded
    # Leiden result) does not depend on the order rows arrive in
    codes, names = pd.factorize(
        pd.concat([edges["src"].astype(str), dst], ignore_index=True), sort=True
    )
    names = np.asarray(names, dtype=object)
    n_edges = len(edges)
    is_account = np.zeros(len(names), dtype=bool)
    is_account[codes[:n_edges]] = True
    is_account[codes[n_edges:][~is_entity]] = True
    graph = igraph.Graph(n=len(names), edges=np.column_stack([codes[:n_edges], codes[n_edges:]]))
    random.seed(seed)  # igraph draws from Python's ``random`` unless told otherwise
    igraph.set_random_number_generator(random)
    membership = np.asarray(
        graph.community_leiden(
            objective_function="modularity",
            weights=edges["weight"].to_numpy(dtype=float),
            resolution=resolution,
            n_iterations=iterations,
        ).membership
    )
    label = membership.copy()
    if min_evidence_kinds > 1:
        kind = edges["kind"].to_numpy() if "kind" in edges.columns else np.full(n_edges, "link")
        ties = pd.DataFrame(
            {
                "src": codes[:n_edges],
                "dst": codes[n_edges:],
                "kind": kind,
                "community": membership[codes[:n_edges]],
            }
        )
        # an entity binds an account to its community when another member shares it too
        entity_ties = ties[is_entity]
        entity_ties = entity_ties[
            entity_ties.groupby(["dst", "community"])["src"].transform("size") >= 2
        ]
        account_ties = ties[~is_entity]
        account_ties = account_ties[
            account_ties["community"] == membership[account_ties["dst"].to_numpy()]
        ]
        evidence = pd.concat(
            [
                entity_ties[["src", "kind"]],
                account_ties[["src", "kind"]],
                account_ties[["dst", "kind"]].rename(columns={"dst": "src"}),
            ]
        )
        kinds = evidence.groupby("src")["kind"].nunique()
        weak = np.ones(len(names), dtype=bool)
        weak[kinds[kinds >= min_evidence_kinds].index.to_numpy()] = False
        detached = weak & is_account
        label[detached] = -1 - np.flatnonzero(detached)  # a community of its own
    accounts = pd.DataFrame({"account_id": names[is_account], "label": label[is_account]})
    smallest = accounts.groupby("label")["account_id"].transform("min")
    return pd.DataFrame({"account_id": accounts["account_id"], "community_id": smallest})


def refine_communities(
    components: DataFrame,
    edges: DataFrame,
    min_size: int,
    resolution: float,
    seed: int,
    min_evidence_kinds: int = 1,
    iterations: int = 2,
) -> DataFrame:
    """Split every component of at least ``min_size`` accounts with Leiden.

    Args:
        components: ``account_id, component_id`` for every account.
        edges: refinement graph ``src, dst, weight`` and optionally ``dst_is_entity``
            (``src`` an account; missing ``dst_is_entity`` means account-account edges) and
            ``kind`` (evidence family, for ``min_evidence_kinds``).
        min_size: components below this size are one community each.
        resolution: Leiden modularity resolution.
        seed: Leiden seed.
        min_evidence_kinds: see :func:`leiden_partition`.
        iterations: Leiden iterations per component (see :func:`leiden_partition`).

    Returns:
        ``account_id, component_id, community_id`` for every account of ``components``.
    """
    require_columns(components, "components", ("account_id", "component_id"))
    require_columns(edges, "refinement edges", ("src", "dst", "weight"))
    if min_size < 2:
        raise ValueError(f"refine_min_size must be at least 2, got {min_size}")
    if "dst_is_entity" not in edges.columns:
        edges = edges.withColumn("dst_is_entity", F.lit(False))
    if "kind" not in edges.columns:
        edges = edges.withColumn("kind", F.lit("link"))
    sizes = components.groupBy("component_id").agg(F.count("*").alias("component_size"))
    large = sizes.where(F.col("component_size") >= min_size).select("component_id")
    member = components.join(large, "component_id").select(
        F.col("account_id").alias("src"), "component_id"
    )
    grouped = edges.select(
        F.col("src").cast("string").alias("src"),
        F.col("dst").cast("string").alias("dst"),
        F.col("weight").cast("double").alias("weight"),
        F.col("dst_is_entity").cast("boolean").alias("dst_is_entity"),
        F.col("kind").cast("string").alias("kind"),
    ).join(member, "src")
    # an account-account edge must stay inside its component (it always does for real links)
    same_component = components.select(
        F.col("account_id").alias("dst"), F.col("component_id").alias("dst_component")
    )
    grouped = (
        grouped.join(same_component, "dst", "left")
        .where(F.col("dst_is_entity") | (F.col("dst_component") == F.col("component_id")))
        .drop("dst_component")
    )

    def split(group: pd.DataFrame) -> pd.DataFrame:
        parts = leiden_partition(group, resolution, seed, min_evidence_kinds, iterations)
        parts.insert(0, "component_id", group["component_id"].iloc[0])
        return parts

    refined = grouped.groupBy("component_id").applyInPandas(split, schema=_GROUP_SCHEMA)
    return (
        components.select("account_id", "component_id")
        .join(sizes, "component_id")
        .join(refined.drop("component_id"), "account_id", "left")
        .select(
            "account_id",
            "component_id",
            # small components stay whole; an account with no refinement edge stands alone
            F.when(F.col("component_size") < min_size, F.col("component_id"))
            .otherwise(F.coalesce("community_id", "account_id"))
            .alias("community_id"),
        )
    )
