"""The farm model: an account-only LightGBM model and a combined one that reads its score.

In: the ``features`` table of a run (see :mod:`jobs.features`), the ``labels`` table and the
run's ``communities`` table (to recompute the label-derived features as of the holdout cut-off).
Out: a :class:`FarmModel` and its metrics. The MLflow side (logging, registry, promotion gate,
loading the champion) is :mod:`models.registry`.
Called by ``farmwatch train`` (through :mod:`flows.training`), the benchmarks and the tests.

Two models, because a farm must be caught by what it does, and banned account by account:

- the **account model** sees only the account's own features (:data:`ACCOUNT_MODEL_FEATURES`):
  its behaviour, payments, networks and how many accounts share each of its identifiers. Its score
  is the account's *own evidence* (:func:`jobs.banlists.actions.assign_actions` bans only accounts
  whose own score reaches ``bans.own_evidence_min_score``);
- the **combined model** reads that score (out-of-fold while training) together with how
  anomalous the account's farm candidate is (:mod:`jobs.features.anomaly`, no labels: in how many
  evidence families and how strongly, never which ones) and the confirmed farm accounts among
  its group (:data:`COMBINED_MODEL_FEATURES`).

Training rewards generalisation to operators the model has not seen: early stopping and the
choice among candidate settings (``model.candidates``) are made on folds grouped by farm
candidate, so no farm is on both sides of a split and memorising one operator scores badly;
features where more sharing can never mean less suspicious carry monotone constraints
(``model.monotone``); features are subsampled (``feature_fraction``). Tens of positives are the
normal case. Shape: :func:`build_training_set`, :func:`train`, :func:`evaluate`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from sklearn.metrics import precision_recall_curve as _pr_curve
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from jobs.core.columns import ACCOUNT_SCORE
from jobs.core.config import ModelSettings
from jobs.features.account import ACCOUNT_FEATURES, KNOWN_BAD_FEATURES, known_bad_members
from jobs.features.anomaly import GROUP_ANOMALY_FEATURES
from jobs.features.table import FEATURE_COLUMNS

ACCOUNT_MODEL_FEATURES: tuple[str, ...] = ACCOUNT_FEATURES
COMBINED_MODEL_FEATURES: tuple[str, ...] = (
    ACCOUNT_SCORE,
    *GROUP_ANOMALY_FEATURES,
    *KNOWN_BAD_FEATURES,
)


class ModelUnavailableError(RuntimeError):
    """No usable champion model (none registered, tracking server down, features missing)."""


@dataclass(frozen=True)
class FarmModel:
    """The account model and the combined model that reads its score."""

    account: lgb.Booster
    combined: lgb.Booster
    report: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def input_features(self) -> list[str]:
        """Feature columns a table must have to be scored (the account score is computed)."""
        names = list(self.account.feature_name())
        names += [c for c in self.combined.feature_name() if c != ACCOUNT_SCORE and c not in names]
        return names

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(account_score, score)`` for the rows of ``frame``."""
        own = self.account.predict(frame[list(self.account.feature_name())])
        combined = frame.assign(**{ACCOUNT_SCORE: own})[list(self.combined.feature_name())]
        return own, self.combined.predict(combined)


@dataclass(frozen=True)
class TrainingSet:
    """Labelled accounts split by label time: training rows before the cut-off, test after."""

    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp
    fingerprint: dict[str, Any]


def build_training_set(
    features: DataFrame,
    labels: DataFrame,
    test_fraction: float,
    communities: DataFrame | None = None,
) -> TrainingSet:
    """Join labels to features and split by label time (train before the cut-off, test after).

    The features table's :data:`jobs.features.KNOWN_BAD_FEATURES` count labels known before the
    run's window end, so they would let train and test rows see labels given to other members of
    their community after the cut-off (an optimistic holdout). With ``communities``, those two
    columns are recomputed for every row with only the labels given before the cut-off (what
    the model would have seen then); accounts without a community get 0, as in
    :func:`jobs.features.feature_table`.

    Args:
        features: ``account_id, farm_id`` and :data:`FEATURE_COLUMNS`.
        labels: ``account_id, label, labelled_at``.
        test_fraction: share of labelled accounts, latest first, held out for testing.
        communities: the run's communities table (``account_id, community_id``); without it
            the known-bad features stay as the features table has them.

    Returns:
        The split, with a fingerprint (row counts, positives, farms, date range, content hash,
        and ``known_bad_as_of``: the cut-off the known-bad features were recomputed at, or
        ``None`` when they were not) for MLflow.

    Raises:
        ValueError: missing columns, or a split without both classes.
    """
    for column in ("account_id", "label", "labelled_at"):
        if column not in labels.columns:
            raise ValueError(f"labels is missing column {column!r}")
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(f"features is missing column(s) {missing}")
    latest = labels.groupBy("account_id").agg(
        F.max_by("label", "labelled_at").alias("label"), F.max("labelled_at").alias("labelled_at")
    )
    joined = features.join(latest, "account_id").select(
        "account_id", "farm_id", "label", "labelled_at", *FEATURE_COLUMNS
    )
    frame = joined.toPandas().sort_values(["labelled_at", "account_id"], ignore_index=True)
    if frame.empty:
        raise ValueError("no labelled account has features: nothing to train on")
    cutoff = frame["labelled_at"].quantile(1 - test_fraction)
    if communities is not None:
        frame = _known_bad_as_of(frame, features, communities, labels, latest, cutoff)
    train_part = frame[frame["labelled_at"] <= cutoff].reset_index(drop=True)
    test = frame[frame["labelled_at"] > cutoff].reset_index(drop=True)
    for name, part in (("train", train_part), ("test", test)):
        if part["label"].nunique() < 2:
            raise ValueError(f"the {name} split has only one class; more labels are needed")
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(frame[["account_id", "label"]], index=False).values.tobytes()
    ).hexdigest()[:16]
    positives = train_part[train_part["label"] == 1]
    fingerprint = {
        "rows_train": len(train_part),
        "rows_test": len(test),
        "positives_train": len(positives),
        "positives_test": int(test["label"].sum()),
        "farms_with_positives_train": int(positives["farm_id"].nunique()),
        "labelled_from": str(frame["labelled_at"].min()),
        "labelled_to": str(frame["labelled_at"].max()),
        "cutoff": str(cutoff),
        "known_bad_as_of": str(cutoff) if communities is not None else None,
        "sha256": digest,
    }
    return TrainingSet(train_part, test, cutoff, fingerprint)


def _known_bad_as_of(
    frame: pd.DataFrame,
    features: DataFrame,
    communities: DataFrame,
    labels: DataFrame,
    labelled: DataFrame,
    cutoff: pd.Timestamp,
) -> pd.DataFrame:
    """``frame`` with :data:`KNOWN_BAD_FEATURES` from the labels given before ``cutoff``."""
    # toPandas gives naive timestamps in the session time zone: read the cut-off in that zone.
    # Labels have microsecond precision, so "before the ceiling" is "before the cut-off".
    zone = features.sparkSession.conf.get("spark.sql.session.timeZone")
    as_of = cutoff.ceil("us").tz_localize(zone).to_pydatetime()
    known_bad = (
        known_bad_members(communities, labels, as_of)
        .join(labelled.select("account_id"), "account_id")
        .select("account_id", *KNOWN_BAD_FEATURES)
        .toPandas()
    )
    recomputed = frame.drop(columns=list(KNOWN_BAD_FEATURES)).merge(
        known_bad, on="account_id", how="left"
    )
    recomputed[list(KNOWN_BAD_FEATURES)] = (
        recomputed[list(KNOWN_BAD_FEATURES)].astype("float64").fillna(0.0)
    )
    return recomputed[list(frame.columns)]


def farm_groups(frame: pd.DataFrame) -> np.ndarray:
    """The fold group of each row: its farm candidate, or the account itself outside farms."""
    return frame["farm_id"].where(frame["farm_id"].notna(), frame["account_id"]).to_numpy()


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Stratified folds with no group on both sides; plain stratified folds as a last resort.

    Grouping needs positives in at least two groups. With fewer (one labelled farm), the folds
    are stratified by label only and the returned grouping says so (``"account"``).

    Returns:
        The ``(train_index, valid_index)`` pairs and the grouping used (``"farm"`` or
        ``"account"``).
    """
    positive_groups = len(set(groups[y == 1]))
    positives = int(y.sum())
    if positive_groups >= 2:
        k = max(2, min(n_splits, positive_groups))
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups)), "farm"
    if positives < 2:
        raise ValueError("training needs at least two labelled farm accounts")
    k = max(2, min(n_splits, positives))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y)), "account"


def _params(settings: ModelSettings, candidate: dict[str, Any], features: list[str]) -> dict:
    return {
        **settings.params,
        **candidate,
        "seed": settings.seed,
        "deterministic": True,
        "num_threads": 2,
        "metric": ["binary_logloss"],
        "monotone_constraints": [int(settings.monotone.get(c, 0)) for c in features],
        "monotone_constraints_method": "intermediate",
    }


def _weights(y: np.ndarray) -> np.ndarray:
    # Imbalance: positives are up-weighted by sqrt(neg/pos) in training *and* validation, so
    # early stopping watches the same weighted loss it optimises; the square root keeps scores
    # close enough to probabilities for the configured score bands (ban / review / watch).
    positives = max(int(y.sum()), 1)
    return np.where(y == 1, ((len(y) - positives) / positives) ** 0.5, 1.0)


def fit_grouped(
    x: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    settings: ModelSettings,
) -> tuple[lgb.Booster, np.ndarray, dict[str, Any]]:
    """Choose settings and rounds on farm-grouped folds, then fit on every row.

    Each candidate of ``settings.candidates`` (overrides of ``settings.params``) is trained on
    every fold with early stopping on that fold's held-out farms; the candidate with the best
    out-of-fold average precision (ties: lower log-loss) wins, and the final booster is trained
    on all rows for the median of its folds' best round counts.

    Returns:
        The booster, its winning candidate's out-of-fold scores (what a model that never saw a
        row's farm says about it) and a report (folds, grouping, candidate figures, choice).
    """
    features = list(x.columns)
    w = _weights(y)
    folds, grouping = grouped_folds(y, groups, settings.cv_folds, settings.seed)
    results = []
    for index, candidate in enumerate(settings.candidates or [{}]):
        params = _params(settings, candidate, features)
        oof = np.zeros(len(y))
        rounds = []
        for train_idx, valid_idx in folds:
            fold_train = lgb.Dataset(x.iloc[train_idx], y[train_idx], weight=w[train_idx])
            fold_valid = lgb.Dataset(
                x.iloc[valid_idx], y[valid_idx], weight=w[valid_idx], reference=fold_train
            )
            booster = lgb.train(
                params,
                fold_train,
                num_boost_round=settings.num_boost_round,
                valid_sets=[fold_valid],
                callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
            )
            best = booster.best_iteration or settings.num_boost_round
            oof[valid_idx] = booster.predict(x.iloc[valid_idx], num_iteration=best)
            rounds.append(best)
        results.append(
            {
                "candidate": index,
                "params": candidate,
                "rounds": int(np.median(rounds)),
                "cv_auprc": float(average_precision_score(y, oof)),
                "cv_logloss": float(log_loss(y, np.clip(oof, 1e-12, 1 - 1e-12))),
                "oof": oof,
            }
        )
    best = min(results, key=lambda r: (-r["cv_auprc"], r["cv_logloss"], r["candidate"]))
    params = _params(settings, best["params"], features)
    booster = lgb.train(params, lgb.Dataset(x, y, weight=w), num_boost_round=best["rounds"])
    report = {
        "folds": len(folds),
        "grouping": grouping,
        "chosen_candidate": best["candidate"],
        "rounds": best["rounds"],
        "cv_auprc": best["cv_auprc"],
        "cv_logloss": best["cv_logloss"],
        "candidates": [{k: v for k, v in r.items() if k != "oof"} for r in results],
        "max_gain_share": max_gain_share(booster),
    }
    return booster, best["oof"], report


def max_gain_share(booster: lgb.Booster) -> dict[str, Any]:
    """The feature with the largest share of the booster's total gain, and that share."""
    gains = booster.feature_importance("gain")
    total = float(gains.sum())
    if total <= 0:
        return {"feature": None, "share": 0.0}
    top = int(np.argmax(gains))
    return {"feature": booster.feature_name()[top], "share": float(gains[top] / total)}


def train(training: TrainingSet, settings: ModelSettings) -> FarmModel:
    """Fit the account model, then the combined model on its out-of-fold scores.

    The combined model is trained on the account model's out-of-fold score, never on its
    in-sample one (which would be near-perfect on the training rows and teach the combined
    model to trust it blindly).
    """
    frame = training.train
    y = frame["label"].to_numpy()
    groups = farm_groups(frame)
    account, own_oof, account_report = fit_grouped(
        frame[list(ACCOUNT_MODEL_FEATURES)], y, groups, settings
    )
    stacked = frame.assign(**{ACCOUNT_SCORE: own_oof})[list(COMBINED_MODEL_FEATURES)]
    combined, _, combined_report = fit_grouped(stacked, y, groups, settings)
    return FarmModel(account, combined, {"account": account_report, "combined": combined_report})


def recall_at_precision(y_true: np.ndarray, scores: np.ndarray, precision: float) -> float:
    """Best recall over thresholds whose precision is at least ``precision``."""
    p, r, _ = _pr_curve(y_true, scores)
    ok = r[p >= precision]
    return float(ok.max()) if ok.size else 0.0


def evaluate(model: FarmModel, test: pd.DataFrame, ban_threshold: float) -> dict[str, float]:
    """Holdout metrics: AUROC, AUPRC, recall at 99% / 99.5% precision, precision@k, farm recall.

    Also the account model's own AUROC and AUPRC (how much an account's own behaviour says).
    """
    y = test["label"].to_numpy()
    own, scores = model.predict(test)
    k = max(int(y.sum()), 1)
    top_k = np.argsort(-scores, kind="stable")[:k]
    positives = test[test["label"] == 1]
    farm_hit = positives.assign(hit=scores[y == 1] >= ban_threshold)
    farm_hit = farm_hit[farm_hit["farm_id"].notna()].groupby("farm_id")["hit"].any()
    return {
        "auroc": float(roc_auc_score(y, scores)),
        "auprc": float(average_precision_score(y, scores)),
        "recall_at_p99": recall_at_precision(y, scores, 0.99),
        "recall_at_p995": recall_at_precision(y, scores, 0.995),
        "precision_at_k": float(y[top_k].mean()),
        "farm_recall": float(farm_hit.mean()) if len(farm_hit) else 0.0,
        "account_model_auroc": float(roc_auc_score(y, own)),
        "account_model_auprc": float(average_precision_score(y, own)),
        "test_rows": float(len(y)),
    }


def training_summary(model: FarmModel) -> dict[str, float]:
    """Flat figures of the grouped cross-validation for MLflow metrics and the run summary."""
    out: dict[str, float] = {}
    for part in ("account", "combined"):
        report = model.report.get(part, {})
        for key in ("cv_auprc", "cv_logloss", "rounds", "folds"):
            if key in report:
                out[f"{part}_{key}"] = float(report[key])
        share = report.get("max_gain_share", {}).get("share")
        if share is not None and not math.isnan(share):
            out[f"{part}_max_gain_share"] = float(share)
    return out
