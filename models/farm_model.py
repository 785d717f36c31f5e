"""The farm model: LightGBM on account + community features, tracked in MLflow.

In: the ``features`` table of a run (see :mod:`jobs.features`), the ``labels`` table and the
run's ``communities`` table (to recompute the label-derived features as of the holdout cut-off).
Out: a LightGBM booster registered in the MLflow model registry with alias ``challenger``,
promoted to ``champion`` when it beats the current champion on the same holdout by the
configured margin.
Called by ``farmwatch train`` (through :mod:`flows.training`) and by the tests.

Shape: :func:`build_training_set` (Spark -> pandas, labelled accounts only), :func:`train`,
:func:`evaluate`, and :func:`train_and_register`, the thin entry that opens the MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from jobs.config import ModelSettings
from jobs.features import FEATURE_COLUMNS, KNOWN_BAD_FEATURES, known_bad_members


class ModelUnavailableError(RuntimeError):
    """No usable champion model (none registered, tracking server down, features missing)."""


@dataclass(frozen=True)
class TrainingSet:
    """Labelled accounts split by label time."""

    train: pd.DataFrame
    valid: pd.DataFrame
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

    The last 20% (by time) of the training part is the early-stopping validation set.

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
        The split, with a fingerprint (row counts, date range, content hash, and
        ``known_bad_as_of``: the cut-off the known-bad features were recomputed at, or ``None``
        when they were not) for MLflow.

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
    before = frame[frame["labelled_at"] <= cutoff]
    test = frame[frame["labelled_at"] > cutoff]
    split_at = int(len(before) * 0.8)
    train, valid = before.iloc[:split_at], before.iloc[split_at:]
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        if part["label"].nunique() < 2:
            raise ValueError(f"the {name} split has only one class; more labels are needed")
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(frame[["account_id", "label"]], index=False).values.tobytes()
    ).hexdigest()[:16]
    fingerprint = {
        "rows_train": len(train),
        "rows_valid": len(valid),
        "rows_test": len(test),
        "positives_train": int(train["label"].sum()),
        "positives_test": int(test["label"].sum()),
        "labelled_from": str(frame["labelled_at"].min()),
        "labelled_to": str(frame["labelled_at"].max()),
        "cutoff": str(cutoff),
        "known_bad_as_of": str(cutoff) if communities is not None else None,
        "sha256": digest,
    }
    return TrainingSet(train, valid, test, cutoff, fingerprint)


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


def train(training: TrainingSet, settings: ModelSettings) -> lgb.Booster:
    """Fit LightGBM with class weighting, fixed seeds and early stopping on the validation set."""
    train_part, valid_part = training.train, training.valid
    positives = max(int(train_part["label"].sum()), 1)
    # Imbalance: positives are up-weighted by sqrt(neg/pos) in training *and* validation, so
    # early stopping watches the same weighted loss it optimises; the square root keeps scores
    # close enough to probabilities for the configured score bands (ban / review / watch).
    positive_weight = ((len(train_part) - positives) / positives) ** 0.5
    params = {
        **settings.params,
        "seed": settings.seed,
        "deterministic": True,
        "num_threads": 2,
        "metric": ["binary_logloss", "average_precision"],
        "first_metric_only": True,
    }

    def weights(part: pd.DataFrame) -> np.ndarray:
        return np.where(part["label"].to_numpy() == 1, positive_weight, 1.0)

    dtrain = lgb.Dataset(
        train_part[list(FEATURE_COLUMNS)],
        label=train_part["label"],
        weight=weights(train_part),
        feature_name=list(FEATURE_COLUMNS),
        free_raw_data=False,
    )
    dvalid = lgb.Dataset(
        valid_part[list(FEATURE_COLUMNS)],
        label=valid_part["label"],
        weight=weights(valid_part),
        reference=dtrain,
    )
    return lgb.train(
        params,
        dtrain,
        num_boost_round=settings.num_boost_round,
        valid_sets=[dvalid],
        callbacks=[
            lgb.early_stopping(
                settings.early_stopping_rounds, first_metric_only=True, verbose=False
            )
        ],
    )


def recall_at_precision(y_true: np.ndarray, scores: np.ndarray, precision: float) -> float:
    """Best recall over thresholds whose precision is at least ``precision``."""
    p, r, _ = precision_recall_curve(y_true, scores)
    ok = r[p >= precision]
    return float(ok.max()) if ok.size else 0.0


def evaluate(booster: lgb.Booster, test: pd.DataFrame, ban_threshold: float) -> dict[str, float]:
    """Holdout metrics: AUROC, AUPRC, recall at 99% / 99.5% precision, precision@k, farm recall."""
    y = test["label"].to_numpy()
    scores = booster.predict(test[list(booster.feature_name())])
    k = max(int(y.sum()), 1)
    top_k = np.argsort(-scores, kind="stable")[:k]
    positives = test[test["label"] == 1]
    farm_hit = positives.assign(hit=scores[test["label"].to_numpy() == 1] >= ban_threshold)
    farm_hit = farm_hit[farm_hit["farm_id"].notna()].groupby("farm_id")["hit"].any()
    return {
        "auroc": float(roc_auc_score(y, scores)),
        "auprc": float(average_precision_score(y, scores)),
        "recall_at_p99": recall_at_precision(y, scores, 0.99),
        "recall_at_p995": recall_at_precision(y, scores, 0.995),
        "precision_at_k": float(y[top_k].mean()),
        "farm_recall": float(farm_hit.mean()) if len(farm_hit) else 0.0,
        "test_rows": float(len(y)),
    }


def _plots(booster: lgb.Booster, test: pd.DataFrame, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = test["label"].to_numpy()
    scores = booster.predict(test[list(booster.feature_name())])
    p, r, _ = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(r, p)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("holdout precision-recall")
    pr_path = folder / "pr_curve.png"
    fig.savefig(pr_path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    gains = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    gains = gains.sort_values().tail(20)
    fig, ax = plt.subplots(figsize=(6, 6))
    gains.plot.barh(ax=ax)
    ax.set_title("feature importance (gain)")
    imp_path = folder / "feature_importance.png"
    fig.savefig(imp_path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return [pr_path, imp_path]


def train_and_register(
    training: TrainingSet,
    settings: ModelSettings,
    tracking_uri: str,
    ban_threshold: float,
    run_tags: dict[str, str] | None = None,
    artifact_location: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, log everything to MLflow, register, and apply the promotion gate.

    ``artifact_location`` is used when the experiment is created (with a SQLite backend MLflow
    would otherwise put artifacts in ``./mlruns`` of the current directory).

    Returns:
        ``version``, ``metrics``, ``promoted`` and the champion's holdout AUPRC (if any).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    if artifact_location and client.get_experiment_by_name(settings.experiment) is None:
        client.create_experiment(settings.experiment, artifact_location=artifact_location)
    mlflow.set_experiment(settings.experiment)
    booster = train(training, settings)
    metrics = evaluate(booster, training.test, ban_threshold)
    champion = _current_champion(client, settings.registered_model)
    champion_auprc = None
    if champion is not None:
        champ_booster = _load_booster(settings.registered_model, "champion")
        if set(champ_booster.feature_name()) <= set(training.test.columns):
            champion_auprc = evaluate(champ_booster, training.test, ban_threshold)["auprc"]
    promoted = champion_auprc is None or (
        metrics["auprc"] > champion_auprc + settings.promotion_margin
    )
    with mlflow.start_run(tags=run_tags or {}) as run:
        mlflow.log_params({k: v for k, v in settings.params.items()})
        mlflow.log_params(
            {
                "num_boost_round": settings.num_boost_round,
                "best_iteration": booster.best_iteration,
                "seed": settings.seed,
                "n_features": len(FEATURE_COLUMNS),
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_dict(training.fingerprint, "dataset_fingerprint.json")
        mlflow.log_dict({"features": list(FEATURE_COLUMNS)}, "feature_list.json")
        importance = dict(
            zip(booster.feature_name(), booster.feature_importance("gain").tolist(), strict=True)
        )
        mlflow.log_dict(importance, "feature_importance.json")
        with tempfile.TemporaryDirectory() as tmp:
            for path in _plots(booster, training.test, Path(tmp)):
                mlflow.log_artifact(str(path))
        example = training.test[list(FEATURE_COLUMNS)].head(5)
        signature = infer_signature(example, booster.predict(example))
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=settings.registered_model,
        )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(settings.registered_model, "challenger", version)
        decision = {
            "promoted": promoted,
            "challenger_auprc": metrics["auprc"],
            "champion_auprc": champion_auprc,
            "margin": settings.promotion_margin,
            "challenger_version": version,
            "champion_version": champion.version if champion else None,
        }
        mlflow.log_dict(decision, "promotion_decision.json")
        mlflow.set_tag("promoted", str(promoted))
        if promoted:
            if champion is not None:
                client.set_model_version_tag(
                    settings.registered_model, version, "previous_champion", champion.version
                )
            client.set_registered_model_alias(settings.registered_model, "champion", version)
    return {"version": version, "run_id": run.info.run_id, "metrics": metrics, **decision}


def rollback_champion(
    settings: ModelSettings, tracking_uri: str, to_version: str | None = None
) -> tuple[str, str]:
    """Point ``@champion`` back at an earlier version (default: the one it replaced).

    Returns:
        (old champion version, new champion version).

    Raises:
        ModelUnavailableError: no champion, no recorded predecessor, or an unknown version.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    name = settings.registered_model
    current = _current_champion(client, name)
    if current is None:
        raise ModelUnavailableError(f"model {name!r} has no champion at {tracking_uri}")
    target = to_version or current.tags.get("previous_champion")
    if not target:
        raise ModelUnavailableError(
            f"champion version {current.version} of {name!r} replaced no earlier champion; "
            "give the version to roll back to"
        )
    try:
        client.get_model_version(name, target)
    except MlflowException as exc:
        raise ModelUnavailableError(f"model {name!r} has no version {target}") from exc
    client.set_registered_model_alias(name, "champion", target)
    client.set_model_version_tag(name, target, "rolled_back_from", current.version)
    return str(current.version), str(target)


def _current_champion(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None


def _load_booster(name: str, alias: str) -> lgb.Booster:
    import mlflow

    return mlflow.lightgbm.load_model(f"models:/{name}@{alias}")


def load_champion(settings: ModelSettings, tracking_uri: str) -> tuple[lgb.Booster, str]:
    """Load ``models:/<name>@champion``; returns the booster and its version.

    Raises:
        ModelUnavailableError: no champion, or the tracking server cannot be reached.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        version = MlflowClient().get_model_version_by_alias(settings.registered_model, "champion")
        booster = _load_booster(settings.registered_model, "champion")
    except MlflowException as exc:
        first_line = str(exc).splitlines()[0]
        if "API request" in first_line or "Max retries" in first_line:
            raise ModelUnavailableError(
                f"the MLflow tracking server at {tracking_uri} cannot be reached: {first_line}"
            ) from exc
        raise ModelUnavailableError(
            f"no champion for model {settings.registered_model!r} at {tracking_uri}: run "
            f"'farmwatch train' first ({first_line})"
        ) from exc
    except Exception as exc:  # connection errors from the REST client
        raise ModelUnavailableError(
            f"cannot load the champion of {settings.registered_model!r} from {tracking_uri}: {exc}"
        ) from exc
    return booster, str(version.version)


def describe_model(booster: lgb.Booster) -> str:
    """Compact JSON summary for logs."""
    return json.dumps({"trees": booster.num_trees(), "features": len(booster.feature_name())})
