"""Check the farm model's graph features on a labelled graph from elsewhere.

In: a nodes Parquet file (``id``, ``label`` 0/1, numeric feature columns) and an edges Parquet
file (``src``, ``dst``, optional ``type``). Out: a result dict (and a three-row table) with
AUROC, AUPRC and Rec@K (K = number of positives) of LightGBM's out-of-fold scores under
stratified k-fold cross-validation: on the node features only, with graph features added, and
"graph if it helps", where each outer fold keeps the graph features only if they score at least
as well on that fold's training part (inner cross-validation), so a graph that carries little
cannot lower the result beyond noise. Called by ``farmwatch evaluate-graph`` (:mod:`flows.cli`)
and the tests.

Graph features are the neighbourhood and component features of :mod:`jobs.neighbourhood`
(computed by Spark once, they use no labels) plus four label-derived features computed per fold
in pandas by :func:`known_positive_features`: known positives among the node's 1-hop neighbours
and among the other members of its connected component, as a count and a share. "Known" means
labelled in the training part of the fold: a test node's features use every training label and
never a test label; a training node's features use the training labels outside its own inner
fold (out-of-fold target encoding), so no node ever sees its own label. Plain leave-one-out
would exclude the node's own label too, but the one-label shift it leaves in the share lets the
trees read the label back within a component.

Shape: :func:`read_labelled_graph` (read and validate), :func:`build_evaluation_set` (Spark
features to pandas), :func:`cross_validate` (LightGBM per fold), :func:`ranking_metrics`, and
:func:`evaluate_labelled_graph`, the thin entry; :func:`render_table` for the CLI.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from jobs.config import GraphSettings, ModelSettings
from jobs.neighbourhood import (
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
ARMS = ("without_graph", "with_graph")
# the arm a deployment would run: per outer fold, the graph features are kept only when they
# score at least as well on the training part's own inner folds
CHOSEN = "graph_if_it_helps"
_EXAMPLES = 3
_SMALL_TRAINING_ROWS = 50_000


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
    edges = marked.where(~unknown).select("src", "dst")
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


def inner_folds(train_rows: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The training rows held out by each inner fold (random parts, not stratified)."""
    inner = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [train_rows[held] for _, held in inner.split(train_rows)]


def fold_label_features(
    evaluation: EvaluationSet, train_rows: np.ndarray, inner: int, seed: int
) -> np.ndarray:
    """:data:`LABEL_FEATURES` for one outer fold, from training-fold labels only.

    Test rows use every training label; training rows use the training labels outside their
    inner fold (``inner`` random parts, :func:`inner_folds`), so no row uses its own label and
    no row uses a test label. The inner folds are deliberately not stratified: a stratified
    split depends on the labels, so flipping a node's own label would move other nodes between
    its inner fold and the rest and change its features.

    Returns:
        One row per node of the evaluation set.
    """
    labels = evaluation.frame["label"].to_numpy()
    in_training = np.zeros(len(labels), dtype=bool)
    in_training[train_rows] = True
    features = known_positive_features(
        evaluation.component_codes, evaluation.pair_rows, labels, in_training
    )
    for held_rows in inner_folds(train_rows, inner, seed):
        known = in_training.copy()
        known[held_rows] = False
        features[held_rows] = known_positive_features(
            evaluation.component_codes, evaluation.pair_rows, labels, known
        )[held_rows]
    return features


def graph_helps(
    matrices: dict[str, np.ndarray],
    labels: np.ndarray,
    names: dict[str, list[str]],
    train_rows: np.ndarray,
    settings: ModelSettings,
    folds: int,
    seed: int,
) -> tuple[bool, dict[str, float]]:
    """Whether the graph features earn their place on this training part alone.

    Both arms are cross-validated on the training rows over the same inner folds that built
    the training rows' label features (so an inner fold's rows never use each other's
    labels); the graph is kept when its inner out-of-fold AUPRC is at least the node-only one.

    Returns:
        The decision and each arm's inner AUPRC.
    """
    held_out = inner_folds(train_rows, folds, seed)
    oof = {arm: np.zeros(len(labels)) for arm in ARMS}
    for held_rows in held_out:
        fit_rows = np.setdiff1d(train_rows, held_rows)
        if labels[fit_rows].sum() == 0 or labels[held_rows].sum() == 0:
            continue
        for arm in ARMS:
            booster = fit_fold(
                matrices[arm][fit_rows], labels[fit_rows], names[arm], settings, seed
            )
            oof[arm][held_rows] = booster.predict(matrices[arm][held_rows])
    inner = {
        arm: float(average_precision_score(labels[train_rows], oof[arm][train_rows]))
        for arm in ARMS
    }
    return inner["with_graph"] >= inner["without_graph"], inner


def fit_fold(
    features: np.ndarray,
    labels: np.ndarray,
    feature_names: list[str],
    settings: ModelSettings,
    seed: int,
) -> lgb.Booster:
    """LightGBM on one training fold, early-stopped on a stratified 20% of it.

    Positives are weighted by negatives / positives in both parts (the effect of
    ``scale_pos_weight``, with early stopping watching the same weighted loss). Training sets
    under :data:`_SMALL_TRAINING_ROWS` rows use one thread unless ``params`` says otherwise:
    for them OpenMP's thread start-up and spinning cost more than the second core gives
    (about 18x slower on a loaded 2-core machine).
    """
    fit, stop = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=seed
    )
    positives = max(int(labels[fit].sum()), 1)
    positive_weight = (len(fit) - positives) / positives
    params = {
        **settings.params,
        "seed": seed,
        "deterministic": True,
        "num_threads": settings.params.get(
            "num_threads", 1 if len(labels) < _SMALL_TRAINING_ROWS else 2
        ),
        "metric": ["binary_logloss"],
    }

    def dataset(rows: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            features[rows],
            label=labels[rows],
            weight=np.where(labels[rows] == 1, positive_weight, 1.0),
            feature_name=feature_names,
            reference=reference,
        )

    train_set = dataset(fit)
    return lgb.train(
        params,
        train_set,
        num_boost_round=settings.num_boost_round,
        valid_sets=[dataset(stop, train_set)],
        callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
    )


def check_folds(folds: int, positives: int, nodes: int) -> None:
    """Raise ``ValueError`` unless stratified ``folds``-fold cross-validation can run."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if positives < folds or nodes - positives < folds:
        raise ValueError(
            f"{folds}-fold stratified cross-validation needs at least {folds} positives and "
            f"{folds} negatives; the graph has {positives} and {nodes - positives}"
        )


def cross_validate(
    evaluation: EvaluationSet, settings: ModelSettings, folds: int, seed: int
) -> dict[str, Any]:
    """Out-of-fold scores of both models over the same stratified folds.

    Args:
        evaluation: the evaluation set.
        settings: LightGBM base parameters, boosting rounds and early stopping.
        folds: number of stratified folds (also used for the inner label-feature folds).
        seed: seed of the fold assignment and of LightGBM.

    Returns:
        ``scores`` (arm -> out-of-fold scores) and ``fold_of`` (fold index per row).

    Raises:
        ValueError: fewer than ``folds`` positives or negatives, or ``folds`` below 2.
    """
    labels = evaluation.frame["label"].to_numpy()
    check_folds(folds, int(labels.sum()), len(labels))
    node_matrix = evaluation.frame[list(evaluation.node_features)].to_numpy(dtype=float)
    structural = evaluation.frame[list(evaluation.structural_features)].to_numpy(dtype=float)
    names = {
        "without_graph": list(evaluation.node_features),
        "with_graph": [
            *evaluation.node_features,
            *evaluation.structural_features,
            *LABEL_FEATURES,
        ],
    }
    scores = {arm: np.zeros(len(labels)) for arm in (*ARMS, CHOSEN)}
    fold_of = np.zeros(len(labels), dtype=int)
    chosen, inner_auprc = [], []
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train_rows, test_rows) in enumerate(outer.split(node_matrix, labels)):
        fold_of[test_rows] = fold
        label_features = fold_label_features(evaluation, train_rows, folds, seed)
        matrices = {
            "without_graph": node_matrix,
            "with_graph": np.hstack([node_matrix, structural, label_features]),
        }
        for arm in ARMS:
            booster = fit_fold(
                matrices[arm][train_rows], labels[train_rows], names[arm], settings, seed
            )
            scores[arm][test_rows] = booster.predict(matrices[arm][test_rows])
        keep, inner = graph_helps(matrices, labels, names, train_rows, settings, folds, seed)
        arm = "with_graph" if keep else "without_graph"
        scores[CHOSEN][test_rows] = scores[arm][test_rows]
        chosen.append(arm)
        inner_auprc.append(inner)
    return {
        "scores": scores,
        "fold_of": fold_of,
        "feature_names": names,
        "chosen_by_fold": chosen,
        "inner_auprc_by_fold": inner_auprc,
    }


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC (average precision) and Rec@K with K = number of positives.

    Rec@K is the share of positives among the K highest scores (ties broken by row order),
    which equals recall and precision at K when K is the number of positives.
    """
    k = int(labels.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
        "rec_at_k": float(labels[top].sum() / k) if k else 0.0,
        "k": k,
    }


def evaluate_labelled_graph(
    spark: SparkSession,
    nodes_path: Path | str,
    edges_path: Path | str,
    settings: ModelSettings,
    folds: int = 5,
    seed: int = 7,
    max_degree: int = 200,
    graph_settings: GraphSettings | None = None,
) -> dict[str, Any]:
    """Read, validate, build graph features, cross-validate both models and score them.

    Args:
        spark: the session.
        nodes_path: nodes Parquet (see :func:`read_labelled_graph`).
        edges_path: edges Parquet.
        settings: LightGBM settings; ``params`` is the base parameter set.
        folds: stratified folds.
        seed: fold and LightGBM seed.
        max_degree: hubs above this degree are not expanded through for 2-hop features.
        graph_settings: components settings; default: the ``local`` (driver) backend.

    Returns:
        Plain JSON-ready dict: inputs, graph report, settings, feature lists, and per arm
        (``without_graph``, ``with_graph`` and ``graph_if_it_helps``: per fold the graph
        features only when the training part's inner folds say they help) AUROC, AUPRC,
        Rec@K, K and AUPRC per fold.
    """
    start = time.perf_counter()
    if folds < 2:  # before reading anything; check_folds repeats it for direct callers
        raise ValueError(f"folds must be at least 2, got {folds}")
    graph = read_labelled_graph(spark, nodes_path, edges_path)
    check_folds(folds, graph.report["positives"], graph.report["nodes"])
    graph_settings = graph_settings or GraphSettings(components_backend="local")
    evaluation = build_evaluation_set(graph, graph_settings, max_degree)
    outcome = cross_validate(evaluation, settings, folds, seed)
    labels = evaluation.frame["label"].to_numpy()
    result: dict[str, Any] = {
        "nodes_path": str(nodes_path),
        "edges_path": str(edges_path),
        "graph": {
            **graph.report,
            "undirected_edges_used": int(len(evaluation.pair_rows[0]) // 2),
            "components": int(evaluation.component_codes.max()) + 1,
        },
        "folds": folds,
        "seed": seed,
        "max_degree": max_degree,
        "features": {
            "node": list(outcome["feature_names"]["without_graph"]),
            "graph": [*evaluation.structural_features, *LABEL_FEATURES],
        },
    }
    for arm in (*ARMS, CHOSEN):
        scores = outcome["scores"][arm]
        by_fold = [
            float(
                average_precision_score(
                    labels[outcome["fold_of"] == f], scores[outcome["fold_of"] == f]
                )
            )
            for f in range(folds)
        ]
        result[arm] = {**ranking_metrics(labels, scores), "auprc_by_fold": by_fold}
    result[CHOSEN]["chosen_by_fold"] = outcome["chosen_by_fold"]
    result[CHOSEN]["inner_auprc_by_fold"] = outcome["inner_auprc_by_fold"]
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def render_table(result: dict[str, Any]) -> str:
    """The result as a short report: inputs, what was ignored, and one row per model."""
    graph = result["graph"]
    lines = [
        f"labelled graph: {graph['nodes']:,} nodes ({graph['positives']:,} positives), "
        f"{graph['node_features']} node features, {len(result['features']['graph'])} graph "
        "features",
        f"edges: {graph['edge_rows']:,} rows -> {graph['undirected_edges_used']:,} distinct "
        f"undirected edges in {graph['components']:,} components; "
        f"{graph['edges_unknown_node']:,} reference unknown node ids (ignored), "
        f"{graph['self_loops']:,} self loops (ignored)",
    ]
    if graph["edges_unknown_node"]:
        lines.append(f"unknown node ids, for example: {graph['unknown_node_examples']}")
    if graph["edge_types"]:
        lines.append(f"edge types: {graph['edge_types']} (pooled)")
    if graph["ignored_columns"]:
        lines.append(f"non-numeric node columns ignored: {graph['ignored_columns']}")
    k = result["with_graph"]["k"]
    lines += [
        f"LightGBM, {result['folds']}-fold stratified cross-validation (seed {result['seed']}), "
        f"out-of-fold scores, K = {k:,} positives, {result['seconds']:.0f}s",
        f"{'model':<17} {'AUROC':>7} {'AUPRC':>7} {'Rec@K':>7}",
    ]
    for arm in (*ARMS, CHOSEN):
        m = result[arm]
        label = arm.replace("_", " ")
        lines.append(f"{label:<17} {m['auroc']:>7.4f} {m['auprc']:>7.4f} {m['rec_at_k']:>7.4f}")
    kept = sum(a == "with_graph" for a in result[CHOSEN]["chosen_by_fold"])
    lines.append(
        f"graph if it helps: the graph features were kept in {kept} of {result['folds']} "
        "folds (chosen on each training part's own inner folds)"
    )
    return "\n".join(lines)
