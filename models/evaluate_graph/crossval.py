"""Cross-validation of LightGBM on a labelled graph: without, with, and "graph if it helps".

In: an :class:`models.evaluate_graph.data.EvaluationSet` and the model settings. Out: the
out-of-fold scores of each arm over the same stratified folds, the arm each outer fold chose
and why (inner AUPRC), and ranking metrics. Called by :mod:`models.evaluate_graph` and the
tests.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from jobs.core.config import ModelSettings
from models.evaluate_graph.data import LABEL_FEATURES, EvaluationSet, known_positive_features

ARMS = ("without_graph", "with_graph")


# the arm a deployment would run: per outer fold, the graph features are kept only when they
# score at least as well on the training part's own inner folds
CHOSEN = "graph_if_it_helps"


_SMALL_TRAINING_ROWS = 50_000


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
