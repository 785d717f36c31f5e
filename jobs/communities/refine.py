"""Community refinement: split large or loose components into dense communities with Leiden.

In: ``components`` (``account_id, component_id``, every account) and a weighted refinement graph
``edges`` (``src, dst, weight, dst_is_entity``) whose ``src`` is always an account. ``dst`` is
either another account (a unipartite graph, as in the LFR tests) or an entity node of the
account-entity graph (``dst_is_entity`` true), so a hub never has to be projected into the
quadratic account-account clique. Out: ``account_id, component_id, community_id`` for every
account, where ``community_id`` is the smallest ``account_id`` of the community (deterministic).

Components smaller than ``refine_min_size`` stay whole. Each larger component is one task (a group
of a Spark ``applyInPandas``): the task's edges go to igraph's C Leiden (modularity, weighted,
seeded, nodes in sorted order) on an executor, so the work is parallel across components and
never leaves Spark. With ``max_task_accounts`` set, a component with more accounts is first cut
into parts that fit (:func:`split_tasks`): connected components of its positive-weight edges
(edges Leiden gives no weight cannot join a community's members), then, for a part still too
big, of its edges above the first decile of its edge weights (the most shared, least telling
entities go first), round after round until every part fits. Each part's Leiden runs with the
resolution scaled by the part's share of the component's weight, so it optimises the component's
own modularity restricted to the part. A legitimate giant component (an office, a family card, a
proxy pool shared by several farms) is thereby split into its dense parts instead of becoming one
farm. Called by :mod:`jobs.communities` and the tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import igraph
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from jobs.core.validation import require_columns

OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType(), False),
        T.StructField("component_id", T.StringType(), False),
        T.StructField("community_id", T.StringType(), False),
    ]
)
_OPTIONAL_EDGE_COLUMNS = {  # name -> Spark SQL of its default
    "dst_is_entity": "false",
    "kind": "'link'",
    "strong": "false",
    "degree": "cast(null as bigint)",
}
_MAX_PEELS = 20  # rounds of the core rule; each round only removes members
_CUT_QUANTILE = 0.1  # share of a too-big part's weighted edges that each round cuts, at least
_MAX_SPLIT_ROUNDS = 256  # 0.9^256 of the edges: none left long before
# what one task's Leiden returns: account node (hashed id) and its community label
_GROUP_SCHEMA = T.StructType(
    [
        T.StructField("task", T.StringType(), False),
        T.StructField("node", T.LongType(), False),
        T.StructField("label", T.LongType(), False),
    ]
)


def leiden_partition(
    edges: pd.DataFrame,
    resolution: float,
    seed: int,
    min_evidence_kinds: int = 1,
    iterations: int = 2,
    min_concentration: float = 0.0,
) -> pd.DataFrame:
    """Leiden (modularity) on one weighted graph held in pandas, then the core rule.

    The core rule keeps an account in its community only when its ties to the other members
    are evidence of one operator, not of a shared network or a popular habit:

    - an entity ties an account to its community when another member shares it *and* at least
      ``min_concentration`` of the entity's accounts are members (a prompt template used by 600
      accounts, 20 of them in the farm, ties nobody). The entity's accounts are all of them
      (``degree``, most of which may sit in other components) when the edges carry it, else
      those in this component;
    - each evidence family (network, payment, device, identity, behaviour) with such a tie
      counts once, or twice when the tie is a strong identifier (``strong`` edge: a payment
      instrument, device or email, which strangers rarely share); account-account edges count
      once per family;
    - the account stays when the count reaches ``min_evidence_kinds``; otherwise it stands
      alone (a user who shares a residential proxy IP, a card BIN and a prompt style with a
      farm is not in the farm). Detaching members dilutes the entities they shared, so the rule
      is applied again on what is left until no one else falls (a peel, like a k-core).

    Args:
        edges: ``src, dst, weight, dst_is_entity`` and optionally ``kind`` (the evidence family
            of the edge), ``strong`` (a strong identifier) and ``degree`` (the entity's number of
            accounts overall) of one component.
        resolution: modularity resolution (higher gives smaller communities).
        seed: seed for igraph's random number generator (results are deterministic).
        min_evidence_kinds: evidence count an account needs to stay (1 turns the rule off).
        iterations: Leiden iterations (igraph's default is 2; negative runs until the partition
            is stable, which on a large loose component can take many minutes).
        min_concentration: share of an entity's accounts that must be in the community for
            the entity to tie anyone to it.

    Returns:
        ``account_id, community_id`` for every account node (entity nodes are dropped), where
        ``community_id`` is the smallest account id of its community.
    """
    is_entity = edges["dst_is_entity"].to_numpy(dtype=bool)
    codes, names, is_account = _node_codes(edges, is_entity)
    membership = _leiden(edges, codes, len(names), resolution, seed, iterations)
    label = membership.copy()
    if min_evidence_kinds > 1:
        # peel: detaching members lowers the concentration of the entities they shared, which
        # can leave others without evidence; repeat until nobody else falls (it only shrinks)
        ties = _evidence_ties(edges, codes, is_entity)  # fixed; only the labels change
        for _ in range(_MAX_PEELS):
            weak = _weak_members(ties, label, min_evidence_kinds, min_concentration)
            detached = weak & is_account & (label >= 0)
            if not detached.any():
                break
            label[detached] = -1 - np.flatnonzero(detached)  # a community of its own
    accounts = pd.DataFrame({"account_id": names[is_account], "label": label[is_account]})
    smallest = accounts.groupby("label")["account_id"].transform("min")
    return pd.DataFrame({"account_id": accounts["account_id"], "community_id": smallest})


def _node_codes(
    edges: pd.DataFrame, is_entity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes of the edge ends (``src`` codes, then ``dst``), node names, account mask.

    Codes follow the sorted distinct names, so they do not depend on row order.
    """
    if pd.api.types.is_integer_dtype(edges["src"]) and pd.api.types.is_integer_dtype(edges["dst"]):
        # integer node ids (what refine_communities sends): the caller keeps entity and account
        # ids apart; no per-row Python strings, which a 2M-account component cannot afford
        nodes = np.concatenate([edges["src"].to_numpy(), edges["dst"].to_numpy()])
    else:
        dst = edges["dst"].astype(str).where(~is_entity, "~" + edges["dst"].astype(str))
        nodes = pd.concat([edges["src"].astype(str), dst], ignore_index=True)
    # hash-based factorize, then sort only the distinct names: node order (and so the seeded
    # Leiden result) does not depend on the order rows arrive in
    codes, names = pd.factorize(nodes, sort=True)
    del nodes
    names = np.asarray(names)
    n_edges = len(edges)
    if names.dtype.kind == "i":
        codes, names = _entities_by_ties(edges, codes, names, is_entity)
    is_account = np.zeros(len(names), dtype=bool)
    is_account[codes[:n_edges]] = True
    is_account[codes[n_edges:][~is_entity]] = True
    return codes, names, is_account


def _entities_by_ties(
    edges: pd.DataFrame, codes: np.ndarray, names: np.ndarray, is_entity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Codes and names re-ordered so that an entity node sits where its ties put it.

    An entity's id is a keyed hash (:mod:`jobs.core.hash_key`), so ordering entity nodes by id
    would let the deployment's secret key pick Leiden's node order, and with it part of the
    partition: two homes with different keys split the same world differently. Each entity is
    ordered instead by a fingerprint of its edges (its accounts' ids, the edges' weight, kind,
    strength and degree); accounts keep their id. Entities with the same fingerprint have the
    same edges, so swapping them leaves the graph as it was: the partition depends on the world
    and the settings only. Applies to integer node ids (what :func:`refine_communities` sends).
    """
    n_edges = len(edges)
    entity_rows = np.flatnonzero(is_entity)
    if len(entity_rows) == 0:
        return codes, names
    tie = _mix(edges["src"].to_numpy()[entity_rows].astype(np.int64).view(np.uint64))
    extras = [edges["weight"].to_numpy(dtype=np.float64)[entity_rows].view(np.uint64)]
    for name in ("kind", "strong", "degree"):
        if name in edges.columns:
            column = pd.to_numeric(edges[name], errors="coerce").to_numpy()[entity_rows]
            extras.append(np.nan_to_num(column.astype(np.float64), nan=-1.0).view(np.uint64))
    for extra in extras:
        tie = _mix(tie ^ _mix(extra))
    entity = codes[n_edges:][entity_rows]
    order = np.argsort(entity, kind="stable")
    entity, tie = entity[order], tie[order]
    starts = np.flatnonzero(np.r_[True, entity[1:] != entity[:-1]])
    fingerprint = np.bitwise_xor.reduceat(tie, starts)  # order-free over the entity's edges
    counts = np.diff(np.r_[starts, len(entity)]).astype(np.uint64)
    key = names.astype(np.int64, copy=True)
    key[entity[starts]] = _mix(fingerprint ^ _mix(counts)).view(np.int64)
    new_order = np.lexsort((np.arange(len(names)), key))  # ties: the same edges, any order
    rank = np.empty(len(names), dtype=np.int64)
    rank[new_order] = np.arange(len(names))
    return rank[codes], names[new_order]


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on each 64-bit word: a fixed, well spread hash (wraps on purpose)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _leiden(
    edges: pd.DataFrame,
    codes: np.ndarray,
    n_nodes: int,
    resolution: float,
    seed: int,
    iterations: int,
) -> np.ndarray:
    """Igraph's seeded Leiden (modularity, weighted) over the edges in a canonical order."""
    n_edges = len(edges)
    # edges in one canonical order (by node, then weight): Spark hands a group's rows over in
    # shuffle-fetch order, which varies between runs on a cluster, and igraph breaks Leiden's
    # exact ties (zero-weight network edges make many) by edge order
    src, dst = codes[:n_edges], codes[n_edges:]
    weights = edges["weight"].to_numpy(dtype=float)
    order = np.lexsort((weights, dst, src))
    # add_edges takes the array in a third of the time the constructor's edges argument does,
    # the same edges in the same order (a few seconds on a component of millions of edges)
    graph = igraph.Graph(n=n_nodes)
    graph.add_edges(np.column_stack([src[order], dst[order]]))
    random.seed(seed)  # igraph draws from Python's ``random`` unless told otherwise
    igraph.set_random_number_generator(random)
    membership = np.asarray(
        graph.community_leiden(
            objective_function="modularity",
            weights=weights[order],
            resolution=resolution,
            n_iterations=iterations,
        ).membership
    )
    return membership


def _evidence_ties(edges: pd.DataFrame, codes: np.ndarray, is_entity: np.ndarray) -> pd.DataFrame:
    """Every edge as a tie of the core rule, built once per component (peeling reuses it).

    Columns: ``src, dst`` node codes, evidence ``kind``, ``points`` (2 for a strong identifier,
    else 1), ``is_entity`` and, for entity ties, ``users``: the entity's accounts, all of them
    (``degree``) when known, else those in this component.
    """
    n_edges = len(edges)
    strong = edges["strong"].to_numpy(dtype=bool) if "strong" in edges.columns else False
    ties = pd.DataFrame(
        {
            "src": codes[:n_edges],
            "dst": codes[n_edges:],
            "kind": edges["kind"].to_numpy() if "kind" in edges.columns else "link",
            # account-account edges count once per kind
            "points": np.where(strong & is_entity, 2, 1),
            "is_entity": is_entity,
        }
    )
    users = ties.groupby("dst")["src"].transform("size").where(ties["is_entity"])
    if "degree" in edges.columns:
        degree = pd.to_numeric(edges["degree"], errors="coerce").to_numpy(dtype=float)
        users = pd.Series(degree, index=ties.index).where(ties["is_entity"]).fillna(users)
    return ties.assign(users=users)


def _weak_members(
    ties: pd.DataFrame, label: np.ndarray, min_evidence_kinds: int, min_concentration: float
) -> np.ndarray:
    """Node mask of accounts whose evidence of membership is below the core rule's bar.

    ``ties`` come from :func:`_evidence_ties`; ``label`` gives each node's current community.
    """
    ties = ties.assign(community=label[ties["src"].to_numpy()])
    entity_ties = ties[ties["is_entity"]]
    shared = entity_ties.groupby(["dst", "community"])["src"].transform("size")
    entity_ties = entity_ties[(shared >= 2) & (shared >= min_concentration * entity_ties["users"])]
    account_ties = ties[~ties["is_entity"]]
    account_ties = account_ties[account_ties["community"] == label[account_ties["dst"].to_numpy()]]
    evidence = pd.concat(
        [
            entity_ties[["src", "kind", "points"]],
            account_ties[["src", "kind", "points"]],
            account_ties[["dst", "kind", "points"]].rename(columns={"dst": "src"}),
        ]
    )
    score = evidence.groupby(["src", "kind"])["points"].max().groupby(level="src").sum()
    weak = np.ones(len(label), dtype=bool)
    weak[score[score >= min_evidence_kinds].index.to_numpy()] = False
    return weak


def _typed_edges(edges: DataFrame) -> DataFrame:
    """The refinement edges with every optional column filled and typed."""
    for name, default in _OPTIONAL_EDGE_COLUMNS.items():
        if name not in edges.columns:
            edges = edges.withColumn(name, F.expr(default))
    return edges.select(
        F.col("src").cast("string").alias("src"),
        F.col("dst").cast("string").alias("dst"),
        F.col("weight").cast("double").alias("weight"),
        F.col("dst_is_entity").cast("boolean").alias("dst_is_entity"),
        F.col("kind").cast("string").alias("kind"),
        F.col("strong").cast("boolean").alias("strong"),
        F.col("degree").cast("long").alias("degree"),
    )


def _inside(edges: DataFrame, member: DataFrame) -> DataFrame:
    """Edges of ``member``'s accounts (``src, task``), account-account ones inside one task."""
    same_task = member.select(F.col("src").alias("dst"), F.col("task").alias("dst_task"))
    return (
        edges.join(member, "src")
        .join(same_task, "dst", "left")
        .where(F.col("dst_is_entity") | (F.col("dst_task") == F.col("task")))
        .drop("dst_task")
    )


def _task_edges(edges: DataFrame, member: DataFrame) -> DataFrame:
    """The refinement edges of every Leiden task, with hashed node ids for Python.

    Args:
        edges: :func:`_typed_edges` output.
        member: ``src`` (account) and ``task`` of the accounts of large components, each
            account in one task.
    """
    grouped = _inside(edges, member)
    # Python receives numbers only: 64-bit hashes for the nodes (entities in their own hash
    # namespace) and for the evidence kind. Strings cost ~10x the memory in pandas, and the
    # 10M world's giant component (2.3M accounts) did not fit as strings. A collision inside a
    # task (odds about n^2 / 2^65, under 1e-6 for 2.3M accounts) would only merge two nodes.
    return grouped.select(
        "task",
        F.xxhash64("src").alias("src"),
        F.when(F.col("dst_is_entity"), F.xxhash64(F.lit("~"), "dst"))
        .otherwise(F.xxhash64("dst"))
        .alias("dst"),
        "weight",
        "dst_is_entity",
        F.hash("kind").alias("kind"),
        "strong",
        "degree",
    )


def _back_to_accounts(member: DataFrame, refined: DataFrame) -> DataFrame:
    """Leiden's labels as ``account_id, community_id``; a community's id is its smallest account."""
    return (
        member.select(
            F.col("src").alias("account_id"),
            "task",
            F.xxhash64(F.col("src").cast("string")).alias("node"),  # as the edges' src
        )
        .join(refined, ["task", "node"])
        .select(
            "account_id",
            F.min("account_id").over(Window.partitionBy("task", "label")).alias("community_id"),
        )
    )


def _keep(df: DataFrame, scratch: str, name: str) -> DataFrame:
    """``df`` computed once: written under ``scratch`` and read back.

    Not a local checkpoint: one keeps the size estimate of the plan it replaces, and Spark
    estimates a join as the product of its sides, so joined and checkpointed round after round
    the estimate squares each round (20 minutes of planning were spent multiplying it at round
    11 on the 1M world). A file read back is estimated by its size.
    """
    path = f"{str(scratch).rstrip('/')}/{name}"
    df.write.mode("overwrite").parquet(path)
    return df.sparkSession.read.parquet(path)


ComponentsFn = Callable[[DataFrame, DataFrame], DataFrame]
"""Connected components: (``account_id`` vertices, ``src, dst`` edges) -> ``account_id,
component_id`` (as :func:`jobs.communities.components.connected_components` returns)."""


def split_tasks(
    member: DataFrame,
    edges: DataFrame,
    sizes: DataFrame,
    max_task_accounts: int,
    components: ComponentsFn,
    scratch: str | None,
) -> tuple[DataFrame, dict[str, Any]]:
    """Cut every component of more than ``max_task_accounts`` accounts into Leiden tasks that fit.

    A part is a connected component of the component's account-entity graph over the edges
    above a weight floor (0 in the first round: an edge Leiden gives no weight, such as a proxy
    pool's at the default ``network`` weight, cannot hold a community together). A part still
    too big gets, as its next floor, the first decile of the weights of the edges that made it,
    and is cut again; every round drops at least a tenth of such a part's edges, so the rounds
    end. Small steps kept the 1M world's campaign whole (its 150,187-account component at a cap
    of 30,000: the median left 103 of the campaign's 25,000 accounts outside its part, the first
    decile none), but not the 10M world's: inside a part of more than the cap, the campaign's
    own ties (widely shared entities, the lightest) went first and it ended as lone accounts
    (``benchmarks/bench_scale.py --max-task-accounts``, docs/pipeline.md). Experimental. The parts
    of a component are then packed, in part-id order, into tasks of at most
    ``max_task_accounts`` accounts (parts of more than half of it alone), so thousands of lone
    accounts do not become thousands of tasks. No community can cross two parts, whose only
    ties weigh nothing or were the component's most shared entities.

    Args:
        member: ``src, component_id`` of the accounts Leiden refines.
        edges: :func:`_typed_edges` output.
        sizes: ``component_id, component_size``.
        max_task_accounts: most accounts one task may hold.
        components: connected components, whichever backend the stage runs.
        scratch: a folder for the rounds' tables (see :func:`_keep`), shared by driver and
            executors.

    Returns:
        ``src, task, resolution_scale`` for every account of ``member`` (the scale is the
        task's share of its component's edge weight: 1.0 for a component that is one task) and
        figures: components split, rounds, tasks and the largest task's accounts.
    """
    if max_task_accounts < 2:
        raise ValueError(f"refine_max_task_accounts must be at least 2, got {max_task_accounts}")
    if not scratch:
        raise ValueError("cutting components (refine_max_task_accounts) needs a scratch folder")
    over = sizes.where(F.col("component_size") > max_task_accounts).select("component_id")
    # task names: c| a whole component, p| a part alone, s| a slot of packed parts
    whole = member.join(over, "component_id", "left_anti").select(
        "src",
        F.concat(F.lit("c|"), "component_id").alias("task"),
        F.lit(1.0).alias("resolution_scale"),
    )
    figures: dict[str, Any] = {"split_components": over.count(), "split_rounds": 0}
    if figures["split_components"] == 0:
        return whole, figures
    pending = (
        member.join(over, "component_id")
        .select("src", "component_id", F.col("component_id").alias("task"))
        .withColumn("floor", F.lit(0.0))
    )
    pending = _keep(pending, scratch, "pending-0")
    # the weighted edges of the components to cut, once: every round and the scales read them
    # (weightless ones never hold a part together and add nothing to a weight)
    edges = _keep(
        _inside(edges, pending.select("src", "task"))
        .where(F.col("weight") > 0)
        .select("src", "dst", "weight", "dst_is_entity"),
        scratch,
        "edges",
    )
    parts: list[DataFrame] = []
    while True:
        figures["split_rounds"] += 1
        if figures["split_rounds"] > _MAX_SPLIT_ROUNDS:
            raise RuntimeError(
                f"components still above {max_task_accounts} accounts after "
                f"{_MAX_SPLIT_ROUNDS} rounds of cutting (refine_max_task_accounts)"
            )
        # written once: the components call and, for parts still too big, the next floors
        # read it
        kept = _keep(
            _inside(edges, pending.select("src", "task", "floor")).where(
                F.col("weight") > F.col("floor")
            ),
            scratch,
            f"kept-{figures['split_rounds']}",
        )
        links = kept.select(
            "src",
            # an entity node per part (its length-prefixed name first: no two parts share one)
            F.when(
                F.col("dst_is_entity"),
                F.concat(F.lit("~"), F.length("task").cast("string"), F.lit(":"), "task", "dst"),
            )
            .otherwise(F.col("dst"))
            .alias("dst"),
        )
        labels = components(pending.select(F.col("src").alias("account_id")), links)
        labelled = pending.join(
            labels.select(F.col("account_id").alias("src"), F.col("component_id").alias("part")),
            "src",
        )
        counts = labelled.groupBy("part").agg(F.count("*").alias("part_size"))
        labelled = _keep(labelled.join(counts, "part"), scratch, f"parts-{figures['split_rounds']}")
        parts.append(
            labelled.where(F.col("part_size") <= max_task_accounts).select(
                "src", "component_id", "part", "part_size"
            )
        )
        too_big = labelled.where(F.col("part_size") > max_task_accounts)
        if too_big.isEmpty():
            break
        # an exact quantile (Spark's percentile counts distinct values, and weights come from a
        # few hundred entity degrees): deterministic, unlike an approximate one
        floors = (
            kept.join(too_big.select("src", "part"), "src")
            .groupBy("part")
            .agg(F.percentile("weight", _CUT_QUANTILE).alias("floor"))
        )
        pending = _keep(
            too_big.select("src", "component_id", F.col("part").alias("task"))
            .join(floors, F.col("task") == floors["part"])
            .select("src", "component_id", "task", "floor"),
            scratch,
            f"pending-{figures['split_rounds']}",
        )
    packed = _keep(_pack(parts, max_task_accounts, scratch), scratch, "packed")
    return whole.unionByName(_with_resolution_scale(edges, packed)), figures


def _pack(parts: list[DataFrame], max_task_accounts: int, scratch: str) -> DataFrame:
    """Parts (``src, component_id, part, part_size``) packed into tasks of at most the cap.

    A part of more than half the cap is a task of its own; smaller ones fill, in part-id order
    within their component, slots of half the cap, a task being the parts that start in one
    slot: each ends before the next slot does, so a task holds fewer accounts than the cap.
    """
    every = parts[0]
    for more in parts[1:]:
        every = every.unionByName(more)
    every = _keep(every, scratch, "every")
    half = max_task_accounts // 2
    distinct = every.select("component_id", "part", "part_size").distinct()
    small = distinct.where(F.col("part_size") <= half)
    before = F.sum("part_size").over(
        Window.partitionBy("component_id")
        .orderBy("part")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    slots = small.select(
        "part",
        F.concat(
            F.lit("s|"),
            "component_id",
            F.lit("|"),
            F.floor(F.coalesce(before, F.lit(0)) / F.lit(half)).cast("string"),
        ).alias("slot"),
    )
    return every.join(slots, "part", "left").select(
        "src", "component_id", F.coalesce("slot", F.concat(F.lit("p|"), "part")).alias("task")
    )


def _with_resolution_scale(edges: DataFrame, packed: DataFrame) -> DataFrame:
    """``src, task, resolution_scale``: each task's share of its component's edge weight.

    Leiden's modularity on a task at resolution ``r * share`` is the component's modularity at
    ``r`` restricted to the task. The sums are exact (decimals), so the share does not depend on
    the order rows arrive in.
    """
    weight = F.col("weight").cast("decimal(38,18)")
    of_task = (
        _inside(edges, packed.select("src", "task"))
        .groupBy("task")
        .agg(F.sum(weight).alias("task_weight"))
    )
    of_component = (
        _inside(edges, packed.select("src", F.col("component_id").alias("task")))
        .groupBy(F.col("task").alias("component_id"))
        .agg(F.sum(weight).alias("component_weight"))
    )
    share = (F.col("task_weight") / F.col("component_weight")).cast("double")
    return (
        packed.join(of_task, "task", "left")
        .join(of_component, "component_id", "left")
        .select("src", "task", F.coalesce(share, F.lit(1.0)).alias("resolution_scale"))
    )


def refine_communities(
    components: DataFrame,
    edges: DataFrame,
    min_size: int,
    resolution: float,
    seed: int,
    min_evidence_kinds: int = 1,
    iterations: int = 2,
    min_concentration: float = 0.0,
    max_task_accounts: int | None = None,
    split_components: ComponentsFn | None = None,
    figures: dict[str, Any] | None = None,
    scratch: str | None = None,
) -> DataFrame:
    """Split every component of at least ``min_size`` accounts with Leiden.

    Args:
        components: ``account_id, component_id`` for every account.
        edges: refinement graph ``src, dst, weight`` and optionally ``dst_is_entity``
            (``src`` an account; missing ``dst_is_entity`` means account-account edges) and
            ``kind`` (evidence family), ``strong`` (strong identifier) and ``degree`` (the
            entity's accounts overall), for the core rule.
        min_size: components below this size are one community each.
        resolution: Leiden modularity resolution.
        seed: Leiden seed.
        min_evidence_kinds: see :func:`leiden_partition`.
        iterations: Leiden iterations per component (see :func:`leiden_partition`).
        min_concentration: see :func:`leiden_partition`.
        max_task_accounts: most accounts one Leiden task may hold (None: a component is one
            task however big); larger components are cut first (:func:`split_tasks`).
        split_components: connected components for the cut (default: the local backend).
        figures: filled, when given, with the tasks' figures (count, largest, cut components).
        scratch: a folder the cut writes its rounds to (see :func:`split_tasks`); needed with
            ``max_task_accounts``.

    Returns:
        ``account_id, component_id, community_id`` for every account of ``components``.
    """
    require_columns(components, "components", ("account_id", "component_id"))
    require_columns(edges, "refinement edges", ("src", "dst", "weight"))
    if min_size < 2:
        raise ValueError(f"refine_min_size must be at least 2, got {min_size}")
    # missing optional columns: account-account links of one kind, no strong identifiers, and
    # an unknown degree (the core rule then counts an entity's accounts in the component)
    edges = _typed_edges(edges)
    sizes = components.groupBy("component_id").agg(F.count("*").alias("component_size"))
    large = sizes.where(F.col("component_size") >= min_size).select("component_id")
    member = components.join(large, "component_id").select(
        F.col("account_id").alias("src"), "component_id"
    )
    if max_task_accounts is None:
        tasks = member.select(
            "src", F.col("component_id").alias("task"), F.lit(1.0).alias("resolution_scale")
        )
        cut: dict[str, Any] = {}
    else:
        if split_components is None:
            from jobs.communities.components import components_local

            spark = components.sparkSession

            def split_components(vertices: DataFrame, links: DataFrame) -> DataFrame:
                return components_local(spark, vertices, links)

        tasks, cut = split_tasks(member, edges, sizes, max_task_accounts, split_components, scratch)
        tasks = _keep(tasks, scratch, "tasks")
    # each cut task's resolution scale (the tasks are few: a dict in the closure, not a column
    # of every edge row)
    scales = (
        {}
        if max_task_accounts is None
        else {
            r["task"]: r["resolution_scale"]
            for r in tasks.where(F.col("resolution_scale") != 1.0)
            .select("task", "resolution_scale")
            .distinct()
            .collect()
        }
    )
    if figures is not None:
        # uncut, a task is a component of min_size or more: its size is already counted
        task_sizes = (
            sizes.where(F.col("component_size") >= min_size).select(
                F.col("component_size").alias("accounts")
            )
            if max_task_accounts is None
            else tasks.groupBy("task").agg(F.count("*").alias("accounts"))
        )
        row = task_sizes.agg(F.count("*").alias("n"), F.max("accounts").alias("largest")).first()
        figures.update(
            {"refine_tasks": row["n"], "largest_refine_task": row["largest"] or 0, **cut}
        )
    grouped = _task_edges(edges, tasks)

    def split(group: pd.DataFrame) -> pd.DataFrame:
        # no drop of the key column: that would copy the group, and leiden_partition reads
        # only the columns it names
        task = group["task"].iloc[0]
        parts = leiden_partition(
            group,
            resolution * scales.get(task, 1.0),
            seed,
            min_evidence_kinds,
            iterations,
            min_concentration,
        )
        return pd.DataFrame(
            {"task": task, "node": parts["account_id"], "label": parts["community_id"]}
        )

    refined = grouped.groupBy("task").applyInPandas(split, schema=_GROUP_SCHEMA)
    labelled = _back_to_accounts(tasks, refined)
    return (
        components.select("account_id", "component_id")
        .join(sizes, "component_id")
        .join(labelled, "account_id", "left")
        .select(
            "account_id",
            "component_id",
            # small components stay whole; an account with no refinement edge stands alone
            F.when(F.col("component_size") < min_size, F.col("component_id"))
            .otherwise(F.coalesce("community_id", "account_id"))
            .alias("community_id"),
        )
    )
