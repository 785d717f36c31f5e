"""The farm model in MLflow: log a training run, register it, gate promotion, load the champion.

In: a :class:`models.farm_model.TrainingSet` and the model settings. Out: an MLflow run with
parameters, metrics (holdout and farm-grouped cross-validation, the largest single feature's
share of gain), the feature lists, the dataset fingerprint, PR-curve and importance plots, the
combined model registered as ``<registered_model>`` with alias ``challenger`` and the account
model beside it in the same run (``account_model.txt``); the version becomes ``champion`` when
it beats the current champion's holdout AUPRC by the configured margin. Called by the training
flow, the nightly flow (:func:`load_champion`), ``farmwatch model rollback`` and the tests.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd
from sklearn.metrics import precision_recall_curve

from jobs.core.config import ModelSettings
from models.farm_model import (
    ACCOUNT_MODEL_FEATURES,
    COMBINED_MODEL_FEATURES,
    FarmModel,
    ModelUnavailableError,
    TrainingSet,
    evaluate,
    train,
    training_summary,
)

ACCOUNT_MODEL_ARTIFACT = "account_model.txt"


def _plots(model: FarmModel, test: pd.DataFrame, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = test["label"].to_numpy()
    own, scores = model.predict(test)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, values in (("combined", scores), ("account only", own)):
        p, r, _ = precision_recall_curve(y, values)
        ax.plot(r, p, label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("holdout precision-recall")
    ax.legend()
    pr_path = folder / "pr_curve.png"
    fig.savefig(pr_path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    paths = [pr_path]
    for name, booster in (("combined", model.combined), ("account", model.account)):
        gains = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
        gains = (gains / max(gains.sum(), 1e-12)).sort_values().tail(20)
        fig, ax = plt.subplots(figsize=(6, 6))
        gains.plot.barh(ax=ax)
        ax.set_title(f"{name} model: share of gain")
        path = folder / f"feature_importance_{name}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


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
        ``version``, ``metrics`` (holdout and cross-validation figures), ``training`` (the
        grouped cross-validation report), ``promoted`` and the champion's holdout AUPRC.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    if artifact_location and client.get_experiment_by_name(settings.experiment) is None:
        client.create_experiment(settings.experiment, artifact_location=artifact_location)
    mlflow.set_experiment(settings.experiment)
    model = train(training, settings)
    metrics = {**evaluate(model, training.test, ban_threshold), **training_summary(model)}
    champion = _current_champion(client, settings.registered_model)
    champion_auprc = _champion_auprc(settings, champion, training.test, ban_threshold)
    promoted = champion_auprc is None or (
        metrics["auprc"] > champion_auprc + settings.promotion_margin
    )
    with mlflow.start_run(tags=run_tags or {}) as run:
        _log_training(model, training, settings, metrics)
        version = _log_combined_model(model, training, settings)
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
            _promote(client, settings.registered_model, version, champion)
    return {
        "version": version,
        "run_id": run.info.run_id,
        "metrics": metrics,
        "training": {k: _brief(v) for k, v in model.report.items()},
        **decision,
    }


def _champion_auprc(
    settings: ModelSettings, champion: Any, test: pd.DataFrame, ban_threshold: float
) -> float | None:
    """The current champion's AUPRC on this holdout; None when there is none to compare."""
    if champion is None:
        return None
    try:
        champ = _load_model(settings.registered_model, champion)
    except ModelUnavailableError:  # an older kind of model: not comparable, replace it
        return None
    if not set(champ.input_features) <= set(test.columns):
        return None
    return evaluate(champ, test, ban_threshold)["auprc"]


def _log_training(
    model: FarmModel, training: TrainingSet, settings: ModelSettings, metrics: dict[str, float]
) -> None:
    """Parameters, metrics, reports, feature lists, importances, plots and the account model."""
    import mlflow

    mlflow.log_params(dict(settings.params))
    mlflow.log_params(
        {
            "num_boost_round": settings.num_boost_round,
            "seed": settings.seed,
            "cv_folds": settings.cv_folds,
            "account_rounds": model.report["account"]["rounds"],
            "combined_rounds": model.report["combined"]["rounds"],
            "cv_grouping": model.report["combined"]["grouping"],
        }
    )
    mlflow.log_metrics(metrics)
    mlflow.log_dict(training.fingerprint, "dataset_fingerprint.json")
    mlflow.log_dict(model.report, "training_report.json")
    mlflow.log_dict(
        {
            "account": list(ACCOUNT_MODEL_FEATURES),
            "combined": list(COMBINED_MODEL_FEATURES),
            "monotone": dict(settings.monotone),
        },
        "feature_list.json",
    )
    for name, booster in (("account", model.account), ("combined", model.combined)):
        gains = booster.feature_importance("gain").tolist()
        importance = dict(zip(booster.feature_name(), gains, strict=True))
        mlflow.log_dict(importance, f"feature_importance_{name}.json")
    with tempfile.TemporaryDirectory() as tmp:
        for path in _plots(model, training.test, Path(tmp)):
            mlflow.log_artifact(str(path))
    mlflow.log_text(model.account.model_to_string(), ACCOUNT_MODEL_ARTIFACT)


def _log_combined_model(model: FarmModel, training: TrainingSet, settings: ModelSettings) -> str:
    """Log and register the combined booster with a signature; returns the new version."""
    import mlflow
    from mlflow.models import infer_signature

    example = training.test.assign(account_score=model.predict(training.test)[0])
    example = example[list(model.combined.feature_name())].head(5)
    signature = infer_signature(example, model.combined.predict(example))
    info = mlflow.lightgbm.log_model(
        model.combined,
        name="model",
        signature=signature,
        input_example=example,
        registered_model_name=settings.registered_model,
    )
    return str(info.registered_model_version)


def _promote(client: Any, name: str, version: str, champion: Any) -> None:
    """Make ``version`` the champion, remembering the one it replaces for rollback."""
    if champion is not None:
        client.set_model_version_tag(name, version, "previous_champion", champion.version)
    client.set_registered_model_alias(name, "champion", version)


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    """The cross-validation report without the per-candidate table (for summaries)."""
    return {k: v for k, v in report.items() if k != "candidates"}


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


def _load_model(name: str, version: Any) -> FarmModel:
    """Both boosters of a registered version (the account model lives in the same run)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    combined = mlflow.lightgbm.load_model(f"models:/{name}/{version.version}")
    try:
        text = mlflow.artifacts.load_text(f"runs:/{version.run_id}/{ACCOUNT_MODEL_ARTIFACT}")
    except (MlflowException, OSError) as exc:
        raise ModelUnavailableError(
            f"version {version.version} of {name!r} has no account model "
            f"({ACCOUNT_MODEL_ARTIFACT}); retrain with 'farmwatch train'"
        ) from exc
    return FarmModel(lgb.Booster(model_str=text), combined)


def load_champion(settings: ModelSettings, tracking_uri: str) -> tuple[FarmModel, str]:
    """Load ``models:/<name>@champion`` and its account model; returns them and the version.

    Raises:
        ModelUnavailableError: no champion, or the tracking server cannot be reached.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        version = MlflowClient().get_model_version_by_alias(settings.registered_model, "champion")
        model = _load_model(settings.registered_model, version)
    except ModelUnavailableError:
        raise
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
    return model, str(version.version)


def describe_model(model: FarmModel) -> str:
    """Compact JSON summary for logs."""
    return json.dumps(
        {
            "account_trees": model.account.num_trees(),
            "combined_trees": model.combined.num_trees(),
            "features": len(model.input_features),
        }
    )
