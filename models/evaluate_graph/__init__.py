"""Check the farm model's graph features on a labelled graph from elsewhere.

In: a nodes Parquet file (``id``, ``label`` 0/1, numeric feature columns) and an edges Parquet
file (``src``, ``dst``, optional ``type``). Out: a result dict (and a three-row table) with
AUROC, AUPRC and Rec@K (K = number of positives) of LightGBM's out-of-fold scores under
stratified k-fold cross-validation: on the node features only, with graph features added, and
"graph if it helps", where each outer fold keeps the graph features only if they score at least
as well on that fold's training part (inner cross-validation), so a graph that carries little
cannot lower the result beyond noise. Called by ``farmwatch evaluate-graph`` (:mod:`flows.cli`)
and the tests.

Graph features are the neighbourhood and component features of :mod:`jobs.features.neighbourhood`
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

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from sklearn.metrics import average_precision_score

from jobs.core.config import GraphSettings, ModelSettings, Settings
from models.evaluate_graph.crossval import (
    ARMS,
    CHOSEN,
    check_folds,
    cross_validate,
    ranking_metrics,
)
from models.evaluate_graph.data import LABEL_FEATURES, build_evaluation_set, read_labelled_graph


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


def command(args: argparse.Namespace, settings: Settings, spark: SparkSession) -> int:
    """``farmwatch evaluate-graph``: cross-validate and print (and optionally write) the result."""
    result = evaluate_labelled_graph(
        spark,
        Path(args.nodes),
        Path(args.edges),
        settings.model,
        folds=args.folds,
        seed=settings.model.seed if args.seed is None else args.seed,
        max_degree=settings.graph.neighbour_max_degree
        if args.max_degree is None
        else args.max_degree,
    )
    print(render_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"result: {args.json}")
    return 0


def register(sub: Any, run: Callable[[argparse.Namespace], tuple[Settings, SparkSession]]) -> None:
    """Add ``evaluate-graph`` to a sub-parser collection (``run`` gives settings and Spark)."""
    evg = sub.add_parser(
        "evaluate-graph",
        help="cross-validate the model with and without graph features on a labelled graph",
    )
    evg.add_argument("--nodes", required=True, help="Parquet: id, label (0/1), numeric features")
    evg.add_argument("--edges", required=True, help="Parquet: src, dst, optional type")
    evg.add_argument("--folds", type=int, default=5, help="stratified folds (default 5)")
    evg.add_argument("--seed", type=int, help="fold and LightGBM seed (default: model.seed)")
    evg.add_argument(
        "--max-degree",
        type=int,
        help="nodes of higher degree are not expanded through for 2-hop features "
        "(default: graph.neighbour_max_degree)",
    )
    evg.add_argument("--json", help="also write the result to this JSON file")
    evg.set_defaults(func=lambda args: command(args, *run(args)))
