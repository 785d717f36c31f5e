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
# what one component's Leiden returns: account node (hashed id) and its community label
_GROUP_SCHEMA = T.StructType(
    [
        T.StructField("component_id", T.StringType(), False),
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
    graph = igraph.Graph(n=n_nodes, edges=np.column_stack([src[order], dst[order]]))
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


def _component_edges(components: DataFrame, edges: DataFrame, member: DataFrame) -> DataFrame:
    """The refinement edges of every large component, with hashed node ids for Python.

    Args:
        components: ``account_id, component_id``.
        edges: the refinement edges with every optional column filled.
        member: ``src`` (account) and ``component_id`` of the accounts of large components.
    """
    grouped = edges.select(
        F.col("src").cast("string").alias("src"),
        F.col("dst").cast("string").alias("dst"),
        F.col("weight").cast("double").alias("weight"),
        F.col("dst_is_entity").cast("boolean").alias("dst_is_entity"),
        F.col("kind").cast("string").alias("kind"),
        F.col("strong").cast("boolean").alias("strong"),
        F.col("degree").cast("long").alias("degree"),
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

    # Python receives numbers only: 64-bit hashes for the nodes (entities in their own hash
    # namespace) and for the evidence kind. Strings cost ~10x the memory in pandas, and the
    # 10M world's giant component (2.3M accounts) did not fit as strings. A collision inside a
    # component (odds about n^2 / 2^65, under 1e-6 for 2.3M accounts) would only merge two nodes.
    grouped = grouped.select(
        "component_id",
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
    return grouped


def _back_to_accounts(member: DataFrame, refined: DataFrame) -> DataFrame:
    """Leiden's labels as ``account_id, community_id``; a community's id is its smallest account."""
    return (
        member.select(
            F.col("src").alias("account_id"),
            "component_id",
            F.xxhash64(F.col("src").cast("string")).alias("node"),  # as the edges' src
        )
        .join(refined, ["component_id", "node"])
        .select(
            "account_id",
            F.min("account_id")
            .over(Window.partitionBy("component_id", "label"))
            .alias("community_id"),
        )
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

    Returns:
        ``account_id, component_id, community_id`` for every account of ``components``.
    """
    require_columns(components, "components", ("account_id", "component_id"))
    require_columns(edges, "refinement edges", ("src", "dst", "weight"))
    if min_size < 2:
        raise ValueError(f"refine_min_size must be at least 2, got {min_size}")
    # missing optional columns: account-account links of one kind, no strong identifiers, and
    # an unknown degree (the core rule then counts an entity's accounts in the component)
    for name, default in _OPTIONAL_EDGE_COLUMNS.items():
        if name not in edges.columns:
            edges = edges.withColumn(name, F.expr(default))
    sizes = components.groupBy("component_id").agg(F.count("*").alias("component_size"))
    large = sizes.where(F.col("component_size") >= min_size).select("component_id")
    member = components.join(large, "component_id").select(
        F.col("account_id").alias("src"), "component_id"
    )
    grouped = _component_edges(components, edges, member)

    def split(group: pd.DataFrame) -> pd.DataFrame:
        # no drop of the key column: that would copy the group, and leiden_partition reads
        # only the columns it names
        parts = leiden_partition(
            group, resolution, seed, min_evidence_kinds, iterations, min_concentration
        )
        component = group["component_id"].iloc[0]
        return pd.DataFrame(
            {"component_id": component, "node": parts["account_id"], "label": parts["community_id"]}
        )

    refined = grouped.groupBy("component_id").applyInPandas(split, schema=_GROUP_SCHEMA)
    labelled = _back_to_accounts(member, refined)
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
