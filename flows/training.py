"""The retraining Prefect flow: build the training set, train, evaluate, register, gate.

In: a run date whose features to train on (default: the world's end date or yesterday) and an
optional config file. Out: a new model version in the MLflow registry (alias ``challenger``;
``champion`` if it beats the current champion on the same holdout), and the training summary.
Reuses the nightly flow's ingest, graph, communities and features stages (and their ledger: a
nightly run of the same date and inputs resumes after them). Holds the run lock. Called by
``farmwatch train`` and the weekly ``retrain`` deployment (:mod:`flows.serve`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.nightly import prepare_features, prepare_run
from flows.runtime import resolve_run_date, run_dir_for, settings_for, spark_for
from flows.stages import run_lock
from jobs.config import Settings
from models.farm_model import build_training_set
from models.registry import train_and_register


@task(name="train-and-register", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def train_task(settings: Settings, run_dir: Any, run_date: str) -> dict[str, Any]:
    """Train on labelled accounts (time-aware split) and register the model.

    The known-bad community features are recomputed as of the split's cut-off from the run's
    communities table, so no row sees labels given after it.
    """
    spark = spark_for(settings)
    table = spark.read.parquet(str(run_dir / "features"))
    labels = spark.read.parquet(str(run_dir / "accepted" / "labels"))
    communities = spark.read.parquet(str(run_dir / "graph" / "communities"))
    training = build_training_set(table, labels, settings.model.test_fraction_by_time, communities)
    result = train_and_register(
        training,
        settings.model,
        settings.model.tracking_uri_for(settings.home),
        settings.bans.ban_threshold,
        run_tags={"run_date": run_date, "config_fingerprint": settings.fingerprint()},
        artifact_location=settings.model.artifact_location_for(settings.home),
    )
    get_run_logger().info(
        "model version %s: %s (promoted=%s)",
        result["version"],
        result["metrics"],
        result["promoted"],
    )
    return result


@flow(name="farmwatch-train", log_prints=True)
def training_flow(run_date: str | None = None, config_file: str | None = None) -> dict[str, Any]:
    """Retrain on the labels known at ``run_date`` and apply the promotion gate."""
    settings = settings_for(config_file)
    day = resolve_run_date(settings, run_date).isoformat()
    with run_lock(settings.home, f"training {day}"):
        run_dir = run_dir_for(settings, datetime.fromisoformat(day).date())
        prepare_features(prepare_run(settings, day, run_dir, None), settings, day, run_dir)
        return train_task(settings, run_dir, day)
