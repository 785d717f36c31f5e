"""Reading a labelled graph from elsewhere and building its features for cross-validation.

In: a nodes Parquet file (``id``, ``label`` 0/1, numeric feature columns) and an edges Parquet
file (``src``, ``dst``, optional ``type``). Out: a validated :class:`LabelledGraph` (what cannot
be used is counted, not hidden), an :class:`EvaluationSet` in pandas with the label-free graph
features of :mod:`jobs.features.neighbourhood`, and :func:`known_positive_features`, the
label-derived ones computed per fold. Called by :mod:`models.evaluate_graph` and the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.core.config import GraphSettings
from jobs.features.neighbourhood import (
    COMPONENT_FEATURES,
    component_features,
    neighbour_aggregates,
    neighbour_feature_names,
    neighbour_pairs,
)

NODE_COLUMNS = ("id", "label")


EDGE_COLUMNS = ("src", "dst")


LABEL_FEATURES = (
    "nbr1_known_positives",
    "nbr1_known_positive_share",
    "component_known_positives",
    "component_known_positive_share",
)


_EXAMPLES = 3


@dataclass(frozen=True)
class LabelledGraph:
    """A validated labelled graph, still in Spark.

    Attributes:
        nodes: ``id`` (string), ``label`` (int 0/1) and :attr:`feature_columns` (doubles).
        edges: ``src, dst`` (strings), only edges whose both ends are known nodes.
        feature_columns: node feature names (made safe for LightGBM, see ``report``).
        report: counts for the summary: nodes, positives, edges and those ignored, columns.
    """

    nodes: DataFrame
    edges: DataFrame
    feature_columns: tuple[str, ...]
    report: dict[str, Any]


@dataclass(frozen=True)
class EvaluationSet:
    """Everything the folds need, in pandas and numpy, one row per node sorted by id.

    Attributes:
        frame: ``id, label, component_id``, node features and structural graph features.
        node_features: node feature columns of ``frame``.
        structural_features: label-free graph feature columns of ``frame``.
        component_codes: integer component of each row.
        pair_rows: (node row, neighbour row) of every adjacency, both directions.
    """

    frame: pd.DataFrame
    node_features: tuple[str, ...]
    structural_features: tuple[str, ...]
    component_codes: np.ndarray
    pair_rows: tuple[np.ndarray, np.ndarray]


def _read_parquet(spark: SparkSession, path: Path, what: str) -> DataFrame:
    if "://" not in str(path) and not Path(path).exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return spark.read.parquet(str(path))


def _require(df: DataFrame, path: Path, columns: tuple[str, ...], contract: str) -> None:
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"{path} is missing column {column!r} ({contract})")


def _safe_names(columns: list[str], path: Path) -> dict[str, str]:
    """LightGBM-safe names (letters, digits, underscores) for the node feature columns."""
    renamed = {c: re.sub(r"[^0-9A-Za-z_]", "_", c) for c in columns}
    reserved = set(NODE_COLUMNS) | set(COMPONENT_FEATURES) | set(LABEL_FEATURES)
    reserved |= {"component_id", "nbr1_count", "nbr2_count"}
    seen: dict[str, str] = {}
    for original, safe in renamed.items():
        if safe in seen:
            raise ValueError(
                f"{path}: feature columns {seen[safe]!r} and {original!r} both become {safe!r}; "
                "rename one"
            )
        if safe in reserved:
            raise ValueError(f"{path}: feature column {original!r} clashes with a graph feature")
        seen[safe] = original
    return renamed


def _validated_nodes(
    raw_nodes: DataFrame, nodes_path: Path
) -> tuple[DataFrame, list[str], dict[str, str], list[str], Any]:
    """Typed nodes, their numeric columns and safe names, ignored columns and node counts."""
    numeric = [
        f.name
        for f in raw_nodes.schema.fields
        if f.name not in NODE_COLUMNS and isinstance(f.dataType, T.NumericType)
    ]
    ignored = [c for c in raw_nodes.columns if c not in NODE_COLUMNS and c not in numeric]
    if not numeric:
        raise ValueError(f"{nodes_path} has no numeric feature column besides id and label")
    names = _safe_names(numeric, nodes_path)

    label = F.col("label").cast("double")
    bad_label = label.isNull() | ~label.isin(0.0, 1.0)
    stats = raw_nodes.agg(
        F.count("*").alias("rows"),
        F.count_distinct("id").alias("ids"),
        F.sum(F.col("id").isNull().cast("int")).alias("null_ids"),
        F.sum(bad_label.cast("int")).alias("bad_labels"),
        F.sum((label == 1.0).cast("int")).alias("positives"),
    ).first()
    if stats["null_ids"]:
        raise ValueError(f"{nodes_path}: {stats['null_ids']} rows have a null 'id'")
    if stats["ids"] != stats["rows"]:
        raise ValueError(f"{nodes_path}: {stats['rows'] - stats['ids']} duplicate 'id' values")
    if stats["bad_labels"]:
        examples = [
            r["label"]
            for r in raw_nodes.where(bad_label)
            .select("label")
            .distinct()
            .limit(_EXAMPLES)
            .collect()
        ]
        raise ValueError(
            f"{nodes_path}: column 'label' must be 0 or 1; {stats['bad_labels']} rows are not "
            f"(for example {examples})"
        )
    nodes = raw_nodes.select(
        F.col("id").cast("string").alias("id"),
        label.cast("int").alias("label"),
        *[F.col(f"`{c}`").cast("double").alias(names[c]) for c in numeric],
    )

    return nodes, numeric, names, ignored, stats


def _checked_edges(raw_edges: DataFrame, nodes: DataFrame) -> tuple[DataFrame, Any, list[str]]:
    """Edges between known nodes, edge counts, and examples of unknown node ids."""
    ids = nodes.select("id")
    marked = (
        raw_edges.select(
            F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst")
        )
        .join(ids.select(F.col("id").alias("src"), F.lit(1).alias("_src_known")), "src", "left")
        .join(ids.select(F.col("id").alias("dst"), F.lit(1).alias("_dst_known")), "dst", "left")
    )
    unknown = F.col("_src_known").isNull() | F.col("_dst_known").isNull()
    edge_stats = marked.agg(
        F.count("*").alias("rows"),
        F.sum(unknown.cast("int")).alias("unknown"),
        F.sum((F.col("src") == F.col("dst")).cast("int")).alias("self_loops"),
    ).first()
    unknown_examples = sorted(
        {
            str(row["src"] if row["_src_known"] is None else row["dst"])
            for row in marked.where(unknown)
            .select("src", "dst", "_src_known")
            .limit(_EXAMPLES)
            .collect()
        }
    )
    return marked.where(~unknown).select("src", "dst"), edge_stats, unknown_examples


def read_labelled_graph(
    spark: SparkSession, nodes_path: Path | str, edges_path: Path | str
) -> LabelledGraph:
    """Read and validate a labelled graph; count what cannot be used instead of hiding it.

    Node features are every numeric column besides ``id`` and ``label`` (other columns are
    listed in the report as ignored). Edges are undirected; an edge with an end that is not a
    node id is counted, shown by example in the report and left out of the graph features.

    Args:
        spark: the session.
        nodes_path: Parquet with ``id``, ``label`` (0/1, no nulls) and numeric feature columns.
        edges_path: Parquet with ``src``, ``dst`` and optionally ``type`` (edge types are pooled).

    Returns:
        The validated graph.

    Raises:
        FileNotFoundError: a local file does not exist.
        ValueError: a missing column, a null or duplicate id, a label other than 0/1, or no
            numeric feature column; each message names the file.
    """
    nodes_path, edges_path = Path(nodes_path), Path(edges_path)
    raw_nodes = _read_parquet(spark, nodes_path, "nodes")
    raw_edges = _read_parquet(spark, edges_path, "edges")
    _require(raw_nodes, nodes_path, NODE_COLUMNS, "nodes need id, label and numeric features")
    _require(raw_edges, edges_path, EDGE_COLUMNS, "edges need src and dst")

    nodes, numeric, names, ignored, stats = _validated_nodes(raw_nodes, nodes_path)
    edges, edge_stats, unknown_examples = _checked_edges(raw_edges, nodes)
    report = {
        "nodes": int(stats["rows"]),
        "positives": int(stats["positives"] or 0),
        "node_features": len(numeric),
        "renamed_columns": {c: s for c, s in names.items() if c != s},
        "ignored_columns": ignored,
        "edge_rows": int(edge_stats["rows"]),
        "edges_unknown_node": int(edge_stats["unknown"] or 0),
        "unknown_node_examples": unknown_examples,
        "self_loops": int(edge_stats["self_loops"] or 0),
        "edge_types": (
            raw_edges.select("type").distinct().count() if "type" in raw_edges.columns else None
        ),
    }
    return LabelledGraph(nodes, edges, tuple(names[c] for c in numeric), report)


def build_evaluation_set(
    graph: LabelledGraph, graph_settings: GraphSettings, max_degree: int
) -> EvaluationSet:
    """Compute the label-free graph features in Spark and bring everything to pandas.

    Nodes without neighbours keep null neighbour aggregates (LightGBM's missing values).

    Args:
        graph: the validated graph.
        graph_settings: components backend and its settings.
        max_degree: hubs above this degree are not expanded through for 2-hop features.

    Returns:
        The evaluation set, rows sorted by id.
    """
    # the cleaned adjacency (one row per undirected edge) feeds all three feature builders
    pairs = neighbour_pairs(graph.nodes, graph.edges, "id").persist()
    try:
        links = pairs.where(F.col("id") < F.col("neighbour_id")).select(
            F.col("id").alias("src"), F.col("neighbour_id").alias("dst")
        )
        neighbours = neighbour_aggregates(
            graph.nodes, links, graph.feature_columns, 2, max_degree, id_column="id"
        )
        components = component_features(graph.nodes, links, graph_settings, id_column="id")
        structural = (*neighbour_feature_names(graph.feature_columns, 2), *COMPONENT_FEATURES)
        frame = (
            graph.nodes.join(neighbours, "id")
            .join(components, "id")
            .select("id", "label", "component_id", *graph.feature_columns, *structural)
            .toPandas()
            .sort_values("id", ignore_index=True)
        )
        pair_frame = pairs.toPandas()
    finally:
        pairs.unpersist()
    rows = pd.Index(frame["id"])
    component_codes, _ = pd.factorize(frame["component_id"])
    return EvaluationSet(
        frame=frame,
        node_features=graph.feature_columns,
        structural_features=structural,
        component_codes=component_codes,
        pair_rows=(
            rows.get_indexer(pair_frame["id"]),
            rows.get_indexer(pair_frame["neighbour_id"]),
        ),
    )


def known_positive_features(
    component_codes: np.ndarray,
    pair_rows: tuple[np.ndarray, np.ndarray],
    labels: np.ndarray,
    known: np.ndarray,
) -> np.ndarray:
    """Known positives around every node, from the labels marked ``known`` only.

    A node's own label never counts, even when it is known. Shares are null where no known
    node is around.

    Args:
        component_codes: integer component of each node.
        pair_rows: (node, neighbour) row pairs, both directions, no self loops.
        labels: 0/1 per node.
        known: which labels may be used.

    Returns:
        One row per node, columns in :data:`LABEL_FEATURES` order.
    """
    n = len(labels)
    known_positive = (labels * known).astype(float)
    known_count = known.astype(float)
    node, neighbour = pair_rows
    nbr_positives = np.bincount(node, weights=known_positive[neighbour], minlength=n)
    nbr_known = np.bincount(node, weights=known_count[neighbour], minlength=n)
    n_components = int(component_codes.max()) + 1 if n else 0
    comp_positives = np.bincount(component_codes, weights=known_positive, minlength=n_components)
    comp_known = np.bincount(component_codes, weights=known_count, minlength=n_components)
    others_positive = comp_positives[component_codes] - known_positive
    others_known = comp_known[component_codes] - known_count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.column_stack(
            [
                nbr_positives,
                np.where(nbr_known > 0, nbr_positives / nbr_known, np.nan),
                others_positive,
                np.where(others_known > 0, others_positive / others_known, np.nan),
            ]
        )
